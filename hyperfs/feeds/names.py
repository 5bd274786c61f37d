"""Names: the local labels of feeds, as a tree of files and directories with POSIX rules.

A name is local to this database (it is never sent to a peer): a file bound to a feed, an
empty file (bound to no feed, since no feed can be empty), a directory of names, or a
symbolic link (a target path kept as given: the kernel follows it, never this module). Paths
are bytes, their parts joined by ``/``; the top level shares the mount's root with the
feed directories, so a 64-hex name is refused there. Every change is one atomic batch:
renaming a directory moves every name under it at once, so a crash shows the tree either
before or after, never half moved.

The rules follow rename(2), mkdir(2), rmdir(2) and unlink(2), so that rsync, ``cp -r``,
``tar -x`` and editors see the errors they expect (each error's ``code`` is the errno).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import time
from collections.abc import Iterator

from hyperfs.base.errors import (
    DirectoryNotEmpty,
    HyperfsError,
    InvalidName,
    IsADirectory,
    NameTaken,
    NoSuchName,
    NotADirectory,
)
from hyperfs.store.entry import MAX_XATTRS_SIZE, PATH_MAX, Entry, Kind
from hyperfs.store.store import Batch, Store

NAME_MAX = 255
_FEED_ID = re.compile(rb"[0-9a-fA-F]{64}")


class XattrTooLarge(HyperfsError):
    """A name's extended attributes may hold at most MAX_XATTRS_SIZE bytes."""

    code = errno.ENOSPC  # as ext4 answers when an inode's xattr space is full


def join(directory: bytes, name: bytes) -> bytes:
    """The path of ``name`` in ``directory`` (b"" is the top)."""
    return directory + b"/" + name if directory else name


def split(path: bytes) -> tuple[bytes, bytes]:
    """(directory, name) of a path; the directory of a top-level name is b""."""
    directory, _, name = path.rpartition(b"/")
    return directory, name


def check_name(directory: bytes, name: bytes) -> None:
    """Refuse a name no file can have here (InvalidName, or NameTaken for a feed id at
    the top: that directory exists, it is the feed's)."""
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise InvalidName(f"{name!r} is not a file name")
    if len(name) > NAME_MAX:
        raise InvalidName(f"a name is at most {NAME_MAX} bytes")
    if not directory and _FEED_ID.fullmatch(name):
        raise NameTaken("64 hex digits at the top name a feed's own directory")


def new_entry(kind: Kind, mode: int, feed_id: bytes | None = None, *, uid: int | None = None,
              gid: int | None = None) -> Entry:
    """An entry made now, owned by ``uid``/``gid`` (default: this process's)."""
    now = time.time_ns()
    return Entry(kind, mode & 0o7777, os.getuid() if uid is None else uid,
                 os.getgid() if gid is None else gid, now, now, now, feed_id)


class Names:
    """The tree of names in one database. Reads see the store; each change is one batch."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, path: bytes) -> Entry | None:
        return self._store.entry(path) if path else None

    def feed_of(self, path: bytes) -> bytes | None:
        """The id of the feed a file name is bound to (None: no such file, or empty)."""
        entry = self.get(path)
        return None if entry is None else entry.feed_id

    def require(self, path: bytes) -> Entry:
        entry = self.get(path)
        if entry is None:
            raise NoSuchName(f"no name {path!r}")
        return entry

    def directory(self, path: bytes) -> None:
        """Raise unless ``path`` is the top (b"") or a directory of names."""
        if path and not self.require(path).is_dir:
            raise NotADirectory(f"{path!r} is a file, not a directory")

    def children(self, directory: bytes = b"") -> Iterator[tuple[bytes, Entry]]:
        """The names directly in ``directory``, as (name, entry), in byte order."""
        self.directory(directory)
        return self._store.children(directory)

    def files(self) -> dict[bytes, bytes]:
        """Every path bound to a feed, with the feed's id."""
        return dict(self._store.names())

    def bound(self) -> set[bytes]:
        """The id of every feed some file name is bound to (a scan of every name)."""
        return {target for _path, target in self._store.names()}

    def is_empty(self, directory: bytes) -> bool:
        return next(self._store.children(directory), None) is None

    # -- making and removing ---------------------------------------------------------

    def check_new(self, path: bytes) -> None:
        """Raise unless a file or directory could be made at ``path`` now."""
        directory, name = split(path)
        check_name(directory, name)
        self.directory(directory)
        if self.get(path) is not None:
            raise NameTaken(f"the name {path!r} is taken")

    def add(self, path: bytes, entry: Entry) -> None:
        """Make a new name (a directory, an empty file or a link) at ``path``."""
        self.check_new(path)
        with self._store.batch() as batch:
            self._store.put_entry(batch, path, entry)

    def symlink(self, path: bytes, target: bytes, *, uid: int | None = None,
                gid: int | None = None) -> Entry:
        """Make a symbolic link at ``path`` holding ``target`` (symlink(2): mode 0777,
        a target of 1 to PATH_MAX - 1 bytes without NUL, any path, dangling or not)."""
        if not target or b"\0" in target or len(target) >= PATH_MAX:
            raise InvalidName(f"{target[:64]!r} cannot be a link's target")
        entry = dataclasses.replace(new_entry(Kind.LINK, 0o777, uid=uid, gid=gid),
                                    target=target)
        self.add(path, entry)
        return entry

    def bind(self, batch: Batch, path: bytes, entry: Entry, *, replace: bool) -> None:
        """Put file ``entry`` at ``path`` inside ``batch`` (a feed's finalize batch, so the
        name appears with the feed, atomically). ``replace`` binds over an existing file
        (an overwrite: the old feed stays stored, under its id)."""
        existing = self.get(path)
        if existing is None:
            self.check_new(path)
        elif existing.is_dir:
            raise IsADirectory(f"{path!r} is a directory")
        elif not replace:
            raise NameTaken(f"the name {path!r} is taken")
        self._store.put_entry(batch, path, entry)

    def unlink(self, path: bytes) -> Entry:
        """Remove a file name (the feed stays, under its id); returns what it was."""
        entry = self.require(path)
        if entry.is_dir:
            raise IsADirectory(f"{path!r} is a directory: use rmdir")
        with self._store.batch() as batch:
            self._store.put_entry(batch, path, None)
        return entry

    def rmdir(self, path: bytes) -> None:
        entry = self.require(path)
        if not entry.is_dir:
            raise NotADirectory(f"{path!r} is a file")
        if not self.is_empty(path):
            raise DirectoryNotEmpty(f"{path!r} is not empty")
        with self._store.batch() as batch:
            self._store.put_entry(batch, path, None)

    def forget_feed(self, feed_id: bytes) -> list[bytes]:
        """Remove every file name bound to ``feed_id`` (the feed is being deleted)."""
        paths = [path for path, target in self._store.names() if target == feed_id]
        with self._store.batch() as batch:
            for path in paths:
                self._store.put_entry(batch, path, None)
        return paths

    # -- renaming -----------------------------------------------------------------------

    def rename(self, old: bytes, new: bytes, *, noreplace: bool = False,
               exchange: bool = False) -> None:
        """rename(2) of a name or a whole directory of names, in one batch.

        ``noreplace`` (RENAME_NOREPLACE) fails with NameTaken when ``new`` exists;
        ``exchange`` (RENAME_EXCHANGE) swaps two existing names.
        """
        source = self.require(old)
        directory, name = split(new)
        check_name(directory, name)
        self.directory(directory)
        if new == old:
            return
        if source.is_dir and new.startswith(old + b"/"):
            raise InvalidName(f"cannot move {old!r} into itself")
        target = self.get(new)
        if exchange:
            if target is None:
                raise NoSuchName(f"no name {new!r} to exchange with")
            if target.is_dir and old.startswith(new + b"/"):
                raise InvalidName(f"cannot move {new!r} into itself")
        elif target is not None:
            self._check_replace(new, source, target, noreplace)
        moves = self._subtree(old, new, source)
        if exchange and target is not None:
            moves += self._subtree(new, old, target)
        elif target is not None:
            moves.append((new, None, None))  # the replaced name (a file or empty dir)
        with self._store.batch() as batch:
            for path, _, _ in moves:
                self._store.put_entry(batch, path, None)
            for _, dest, entry in moves:
                if dest is not None:
                    self._store.put_entry(batch, dest, entry)

    def _check_replace(self, new: bytes, source: Entry, target: Entry, noreplace: bool) -> None:
        if noreplace:
            raise NameTaken(f"the name {new!r} is taken")
        if source.is_dir and not target.is_dir:
            raise NotADirectory(f"{new!r} is a file")
        if target.is_dir and not source.is_dir:
            raise IsADirectory(f"{new!r} is a directory")
        if target.is_dir and not self.is_empty(new):
            raise DirectoryNotEmpty(f"{new!r} is not empty")

    def _subtree(self, old: bytes, new: bytes,
                 entry: Entry) -> list[tuple[bytes, bytes | None, Entry | None]]:
        """(old path, new path, entry) for ``old`` and, for a directory, all under it."""
        now = time.time_ns()
        moves: list[tuple[bytes, bytes | None, Entry | None]] = [
            (old, new, dataclasses.replace(entry, ctime_ns=now))]
        if entry.is_dir:
            for path, inner in self._store.entries(old + b"/"):
                moves.append((path, new + path[len(old):], inner))
        return moves

    # -- attributes -------------------------------------------------------------------

    def set_attrs(self, path: bytes, *, mode: int | None = None, uid: int | None = None,
                  gid: int | None = None, atime_ns: int | None = None,
                  mtime_ns: int | None = None) -> Entry:
        """chmod, chown, utimensat of a name; returns the new entry (ctime is now)."""
        return self._put(path, with_attrs(self.require(path), mode=mode, uid=uid, gid=gid,
                                          atime_ns=atime_ns, mtime_ns=mtime_ns))

    def set_xattr(self, path: bytes, name: bytes, value: bytes) -> Entry:
        return self._put(path, with_xattr(self.require(path), name, value))

    def remove_xattr(self, path: bytes, name: bytes) -> bool:
        """Remove an extended attribute; False if the name had none of that name."""
        entry = without_xattr(self.require(path), name)
        if entry is None:
            return False
        self._put(path, entry)
        return True

    def set_file(self, path: bytes, entry: Entry, *, replace: bool) -> None:
        """Bind file ``entry`` at ``path`` in a batch of its own: an empty file made or
        emptied (``entry.feed_id`` None), with :meth:`bind`'s rules."""
        with self._store.batch() as batch:
            self.bind(batch, path, entry, replace=replace)

    def _put(self, path: bytes, entry: Entry) -> Entry:
        with self._store.batch() as batch:
            self._store.put_entry(batch, path, entry)
        return entry


# -- changed copies of an entry (for a name, or for a file still being written) -----------


def with_attrs(entry: Entry, *, mode: int | None = None, uid: int | None = None,
               gid: int | None = None, atime_ns: int | None = None,
               mtime_ns: int | None = None) -> Entry:
    """``entry`` after chmod, chown, utimensat (None: unchanged); its ctime is now."""
    return dataclasses.replace(
        entry, ctime_ns=time.time_ns(),
        mode=entry.mode if mode is None else mode & 0o7777,
        uid=entry.uid if uid is None else uid, gid=entry.gid if gid is None else gid,
        atime_ns=entry.atime_ns if atime_ns is None else atime_ns,
        mtime_ns=entry.mtime_ns if mtime_ns is None else mtime_ns)


def with_xattr(entry: Entry, name: bytes, value: bytes) -> Entry:
    """``entry`` with extended attribute ``name`` set (XattrTooLarge past the limit)."""
    attrs = dict(entry.xattrs)
    attrs[name] = value
    if sum(len(key) + len(data) for key, data in attrs.items()) > MAX_XATTRS_SIZE:
        raise XattrTooLarge(f"more than {MAX_XATTRS_SIZE} bytes of attributes")
    return dataclasses.replace(entry, xattrs=tuple(sorted(attrs.items())),
                               ctime_ns=time.time_ns())


def without_xattr(entry: Entry, name: bytes) -> Entry | None:
    """``entry`` without extended attribute ``name``; None if it had none of that name."""
    attrs = dict(entry.xattrs)
    if attrs.pop(name, None) is None:
        return None
    return dataclasses.replace(entry, xattrs=tuple(sorted(attrs.items())),
                               ctime_ns=time.time_ns())
