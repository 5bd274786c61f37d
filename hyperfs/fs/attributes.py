"""What ``stat``, ``ls`` and ``getfattr`` see: attributes, listings and xattrs.

None of it waits on the network (listing a feed whose length is unknown waits at most
``LIST_WAIT`` for it) or even tells peers of a feed (it peeks: :meth:`FeedSlot.peek`),
and none of it reads more than a block or two: sizes come from
:mod:`hyperfs.fs.sizes`. ``st_blocks`` counts only what is local.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass
from typing import assert_never

import pyfuse3
import trio

from hyperfs.feeds.names import join, split
from hyperfs.fs import sizes
from hyperfs.fs.errnos import fail
from hyperfs.fs.inodes import (
    MAX_BLOCKS,
    STATUS_INO,
    STATUS_NAME,
    WHOLE_NAME,
    BlockFile,
    FeedDir,
    FeedSlot,
    Inode,
    NameDir,
    NameFile,
    NameLink,
    Namespace,
    Root,
    StatusFile,
    Upload,
    UploadFile,
    WholeFeed,
    check_block,
)
from hyperfs.store.entry import Entry

XATTR_ID = b"user.hyperfs.id"
XATTR_BLOCKS = b"user.hyperfs.blocks"
XATTR_LOCAL = b"user.hyperfs.local"
XATTRS = (XATTR_ID, XATTR_BLOCKS, XATTR_LOCAL)
XATTR_EMPTY = b"user.hyperfs.empty"
"""``1`` on an empty file: a name bound to no feed (no feed can be empty), so it has no
id and exists only in this database."""
COMPUTED = frozenset((*XATTRS, XATTR_EMPTY))
"""The xattrs hyperfs computes; they cannot be set or removed (ENOTSUP)."""

BLKSIZE = 1 << 20
"""st_blksize: cat/cp read 1 MiB at a time, and with direct I/O each is one request."""
LIST_WAIT = 2.0
"""How long listing a feed of unknown length waits for the length to become known."""
ATTR_TIMEOUT = 1.0
"""The root, names (renamed, rebound to another feed) and sizes that may still change."""
BLOCK_ATTR_TIMEOUT = 10.0
"""Block files' guessed sizes change only when the block size is learned, so they are
kept long enough for `ls -l` of 100,000 blocks to stat every entry from the attributes
the listing brought (readdirplus). Opening a file through the page cache makes the
kernel ask for the exact size again (:func:`hyperfs.fs.reads.file_info`)."""
IMMUTABLE_TIMEOUT = 300.0
"""Feed directories and files whose size is exact never change, so `ls -R`, `find` and
`du` over them again ask nothing for this long; only ``st_blocks`` (what is local)
can lag behind by as much, when blocks arrive or are dropped."""

LIVE_TIMEOUT = 0.0
"""A live feed's directory and whole file grow as new lengths are verified: the kernel
asks again at every stat, so `tail -f` (which polls with fstat) and `ls` see it at once."""

DIR_MODE = stat.S_IFDIR | 0o755
FILE_MODE = stat.S_IFREG | 0o444


class Attributes:
    """Builds every inode's attributes: a name's come from its entry (mode, owner,
    times); everything else is owned by the mounting user and dated at the mount."""

    def __init__(self) -> None:
        self.uid, self.gid = os.getuid(), os.getgid()
        self.started_ns = time.time_ns()

    def make(self, ino: int, mode: int, size: int = 0, local: int = 0,
             timeout: float = ATTR_TIMEOUT) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.st_mode = mode
        attr.st_nlink = 2 if stat.S_ISDIR(mode) else 1
        attr.st_uid = self.uid
        attr.st_gid = self.gid
        attr.st_size = size
        attr.st_blksize = BLKSIZE
        attr.st_blocks = (local + 511) // 512
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self.started_ns
        attr.attr_timeout = timeout
        attr.entry_timeout = timeout
        return attr

    def named(self, ino: int, kind: int, entry: Entry, size: int = 0, local: int = 0,
              timeout: float = ATTR_TIMEOUT) -> pyfuse3.EntryAttributes:
        """The attributes of a name (or of a file being written) from its ``entry``."""
        attr = self.make(ino, kind | entry.mode, size, local, timeout)
        attr.st_uid, attr.st_gid = entry.uid, entry.gid
        attr.st_atime_ns, attr.st_mtime_ns = entry.atime_ns, entry.mtime_ns
        attr.st_ctime_ns = entry.ctime_ns
        return attr

    def of(self, node: Inode, exact: bool = True) -> pyfuse3.EntryAttributes:
        """``node``'s attributes; a block file's size is read from storage when ``exact``
        (stat of that one file), else guessed (listings). ENOENT past a feed's end."""
        match node:
            case Root():
                return self.make(node.ino, DIR_MODE)
            case FeedDir(slot=state):
                timeout = LIVE_TIMEOUT if state.peek().live else IMMUTABLE_TIMEOUT
                return self.make(node.ino, DIR_MODE, timeout=timeout)
            case StatusFile():
                return self.make(node.ino, FILE_MODE, 0, 0, 0)
            case UploadFile(upload):
                return self.upload(upload)
            case NameDir(ino, _, entry):
                return self.named(ino, stat.S_IFDIR, entry)
            case NameLink(ino, _, entry):
                return self.named(ino, stat.S_IFLNK, entry, len(entry.target))
            case NameFile(ino, _, entry, state):
                if state is None:  # an empty file
                    return self.named(ino, stat.S_IFREG, entry)
                if state.peek().live:
                    size = sizes.live_size(state)
                    return self.named(ino, stat.S_IFREG, entry, size, size, LIVE_TIMEOUT)
                return self.named(ino, stat.S_IFREG, entry, sizes.whole_size(state),
                                  sizes.whole_local_bytes(state))
            case WholeFeed(slot=state) if state.peek().live:
                size = sizes.live_size(state)
                return self.make(node.ino, FILE_MODE, size, size, LIVE_TIMEOUT)
            case WholeFeed(slot=state):
                return self.make(node.ino, FILE_MODE, sizes.whole_size(state),
                                 sizes.whole_local_bytes(state),
                                 IMMUTABLE_TIMEOUT if state.exact else ATTR_TIMEOUT)
            case BlockFile(state, index):
                check_block(state.peek(), index)
                return self._block(state, index, exact)
        assert_never(node)

    def upload(self, upload: Upload) -> pyfuse3.EntryAttributes:
        """A file being written: what it will be once its writer closes it.

        The kernel may keep these: every change to them comes through it (writes grow
        its cached size, chmod/chown/utimens get these back), and the upload's end makes
        it ask again (``uploads.Uploads``); not keeping them cost ``tar -x`` three
        GETATTRs per file. Its name is asked for again each time: a failed upload's goes.
        """
        attr = self.named(upload.ino, stat.S_IFREG, upload.entry, upload.size, upload.size)
        attr.entry_timeout = 0
        return attr

    def _block(self, state: FeedSlot, index: int, exact: bool) -> pyfuse3.EntryAttributes:
        local = index in state.peek().bitfield
        known = sizes.exact_block_size(state, index) if local and exact else None
        if known is not None:
            return self.make(state.block_ino(index), FILE_MODE, known, known,
                             IMMUTABLE_TIMEOUT)
        size = sizes.block_len(state, index)
        return self.make(state.block_ino(index), FILE_MODE, size,
                         size if local and not exact else 0, BLOCK_ATTR_TIMEOUT)


# -- listings ----------------------------------------------------------------------------


@dataclass(slots=True)
class Listing:
    """An open directory: its named entries, then (for a feed) its computed block files."""

    entries: list[tuple[bytes, int]]
    slot: FeedSlot | None = None


async def list_dir(namespace: Namespace, node: Inode) -> Listing:
    """The entries of directory ``node`` as of now (opendir); ENOTDIR for a file."""
    if isinstance(node, Root | NameDir):
        directory = b"" if isinstance(node, Root) else node.path
        listing = Listing([(STATUS_NAME, STATUS_INO)] if isinstance(node, Root) else [])
        for name, _ in namespace.core.names.children(directory):
            listing.entries.append((name, namespace.name_inode(join(directory, name))))
        for path, upload in namespace.uploads.items():
            parent, name = split(path)
            if parent == directory and not upload.done and not upload.replacing:
                listing.entries.append((name, upload.ino))
        if isinstance(node, Root):
            async for feed_id in namespace.core.list():
                listing.entries.append((feed_id.hex().encode(),
                                        namespace.slot(feed_id).dir_ino))
        return listing
    if isinstance(node, FeedDir):
        feed = node.slot.peek()
        if feed.blocks is None:  # ask the network: peers say the length
            feed = node.slot.open()
            with trio.move_on_after(LIST_WAIT):
                await feed.ready()
        return Listing([(WHOLE_NAME, node.slot.whole_ino)], node.slot)
    raise fail(errno.ENOTDIR)


def reply_entries(listing: Listing, namespace: Namespace, attributes: Attributes,
                  start: int, token: pyfuse3.ReaddirToken) -> None:
    """Send entries ``start ..`` (readdir) until the kernel's buffer is full; each is
    decoded again, so what changed since opendir shows as it is now."""
    position = start
    entries = listing.entries
    while position < len(entries):
        name, ino = entries[position]
        try:
            attr = attributes.of(namespace.decode(ino), exact=False)
        except pyfuse3.FUSEError as exc:  # removed since opendir (`rm -r` as it lists)
            if exc.errno != errno.ENOENT:
                raise
            position += 1
            continue
        if not pyfuse3.readdir_reply(token, name, attr, position + 1):
            return
        position += 1
    if listing.slot is not None:
        _reply_blocks(listing.slot, attributes, position - len(entries), len(entries) + 1,
                      token)


def _reply_blocks(state: FeedSlot, attributes: Attributes, index: int, offset: int,
                  token: pyfuse3.ReaddirToken) -> None:
    """Block entries ``index ..``, computed, not stored, into one reused attribute object
    (readdir_reply copies it): no storage reads, no per-block objects kept."""
    feed = state.peek()
    blocks = min(feed.blocks or 0, MAX_BLOCKS)
    if index >= blocks:
        return
    size = sizes.block_size(state) or 0
    last = blocks - 1
    bitfield = feed.bitfield
    base = state.block_ino(0)
    attr = attributes.make(base, FILE_MODE, size, 0, BLOCK_ATTR_TIMEOUT)
    reply = pyfuse3.readdir_reply
    while index < blocks:
        length = sizes.block_len(state, index) if index == last else size
        attr.st_ino = base + index
        attr.st_size = length
        attr.st_blocks = (length + 511) // 512 if index in bitfield else 0
        if not reply(token, str(index).encode(), attr, index + offset):
            return
        index += 1


# -- xattrs ------------------------------------------------------------------------------


def feed_of(node: Inode) -> tuple[FeedSlot | None, int | None]:
    """The feed whose xattrs ``node`` shows, and the block (None: the whole feed)."""
    match node:
        case FeedDir(slot=state) | WholeFeed(slot=state) | NameFile(slot=state):
            return state, None
        case BlockFile(state, index):
            return state, index
    return None, None


def stored_xattrs(node: Inode) -> Entry | None:
    """The entry whose ``user.`` xattrs ``node`` keeps: a name's, or the one a file being
    written will have (None: a feed's files, which keep none)."""
    match node:
        case NameFile(entry=entry) | NameDir(entry=entry):
            return entry
        case UploadFile(upload):
            return upload.entry
    return None


def xattr_names(node: Inode) -> list[bytes]:
    state, _ = feed_of(node)
    computed = list(XATTRS) if state is not None else []
    if isinstance(node, NameFile) and state is None:
        computed = [XATTR_EMPTY]
    entry = stored_xattrs(node)
    return computed + ([] if entry is None else [name for name, _ in entry.xattrs])


def xattr(node: Inode, name: bytes) -> bytes:
    """The value of xattr ``name`` of ``node`` (ENOATTR for one it does not have)."""
    state, index = feed_of(node)
    if name == XATTR_EMPTY and isinstance(node, NameFile) and state is None:
        return b"1"
    if state is None or name not in XATTRS:
        entry = stored_xattrs(node)
        value = None if entry is None else entry.xattr(name)
        if value is None:
            raise fail(pyfuse3.ENOATTR)
        return value
    if name == XATTR_ID:
        return state.id.hex().encode()
    feed = state.peek()
    if name == XATTR_BLOCKS:
        return b"?" if feed.blocks is None else str(feed.blocks).encode()
    if index is not None:
        return b"1" if index in feed.bitfield else b"0"
    return str(feed.local).encode()
