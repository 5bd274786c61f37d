"""A name's record: what the filesystem shows for a local label (a file, a directory or a
symbolic link).

Names are local labels for feeds, kept in the database beside the feeds (``e`` keys, see
:mod:`.layout`), so they can behave like files: a directory of names, a file bound to a
feed (or to no feed: an empty file, which no feed can be), or a symbolic link (its target:
a path, never followed here), with the mode, owner, times and ``user.`` extended
attributes that tools such as ``cp -a``, ``rsync -a`` and ``tar`` set. The encoding is
versioned, fixed header first, so it can grow: a link's target follows the header
(a 2-byte length, then the bytes), where a file's feed id would be.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from hyperfs.base.errors import CorruptDatabase


class Kind(IntEnum):
    FILE = 1
    DIR = 2
    LINK = 3


_VERSION = 1
_HEADER = struct.Struct(">BBHIIQQQB")
"""version, kind, mode (permission bits), uid, gid, atime_ns, mtime_ns, ctime_ns, has id"""
_ATTR_HEAD = struct.Struct(">BI")
_TARGET_HEAD = struct.Struct(">H")
PATH_MAX = 4096
"""Bytes a symbolic link's target may have (Linux's PATH_MAX, with its NUL)."""
MAX_XATTRS_SIZE = 64 * 1024
"""Bytes of extended attributes (names and values) one entry may hold."""


@dataclass(frozen=True, slots=True)
class Entry:
    kind: Kind
    mode: int
    """Permission bits (``0o7777``); the file type comes from ``kind``."""
    uid: int
    gid: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    feed_id: bytes | None = None
    """The feed a file is bound to; None for a directory and for an empty file."""
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    target: bytes = b""
    """What a symbolic link holds (b"" for a file or a directory)."""

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR

    @property
    def is_link(self) -> bool:
        return self.kind is Kind.LINK

    def xattr(self, name: bytes) -> bytes | None:
        return dict(self.xattrs).get(name)

    @property
    def xattrs_size(self) -> int:
        return sum(len(name) + len(value) for name, value in self.xattrs)


def encode(entry: Entry) -> bytes:
    parts = [_HEADER.pack(_VERSION, entry.kind, entry.mode & 0o7777, entry.uid, entry.gid,
                          entry.atime_ns, entry.mtime_ns, entry.ctime_ns,
                          entry.feed_id is not None)]
    if entry.feed_id is not None:
        parts.append(entry.feed_id)
    if entry.is_link:
        parts += (_TARGET_HEAD.pack(len(entry.target)), entry.target)
    for name, value in entry.xattrs:
        parts.append(_ATTR_HEAD.pack(len(name), len(value)))
        parts += (name, value)
    return b"".join(parts)


def decode(value: bytes) -> Entry:
    try:
        version, kind, mode, uid, gid, atime, mtime, ctime, has_id = _HEADER.unpack_from(value)
        if version != _VERSION:
            raise ValueError(f"entry version {version}")
        pos = _HEADER.size
        feed_id = None
        if has_id:
            feed_id, pos = value[pos : pos + 32], pos + 32
            if len(feed_id) != 32:
                raise ValueError("truncated feed id")
        target = b""
        if kind == Kind.LINK:
            (length,), pos = _TARGET_HEAD.unpack_from(value, pos), pos + _TARGET_HEAD.size
            target, pos = value[pos : pos + length], pos + length
            if len(target) != length:
                raise ValueError("truncated link target")
        xattrs = []
        while pos < len(value):
            name_len, value_len = _ATTR_HEAD.unpack_from(value, pos)
            pos += _ATTR_HEAD.size
            name, pos = value[pos : pos + name_len], pos + name_len
            data, pos = value[pos : pos + value_len], pos + value_len
            if len(name) != name_len or len(data) != value_len:
                raise ValueError("truncated extended attribute")
            xattrs.append((name, data))
        return Entry(Kind(kind), mode, uid, gid, atime, mtime, ctime, feed_id, tuple(xattrs),
                     target)
    except (struct.error, ValueError) as exc:
        raise CorruptDatabase(f"a name's record is damaged: {exc}") from None
