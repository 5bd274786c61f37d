"""Inode numbers and what they stand for: the layout under the mount point, as data.

The layout (docs/FILESYSTEM.md tells users the same)::

    .status                 hidden, read-only JSON: feeds, progress, uploads (and peers)
    NAME                    read-only file per name (core.names): the named feed's bytes
    <64-hex id>/            one directory per stored feed (looking up any other well-formed
                            id opens that feed and starts fetching it; it then appears)
    <64-hex id>/.feed       hidden, the whole feed: every block concatenated in order
    <64-hex id>/0 .. N-1    one read-only file per block

Numbers are computed, not stored per file, so a feed of 100,000 blocks costs nothing to
number: the root and ``.status`` have fixed inodes; names (and uploads, which become
names) get ``NAME_BASE, NAME_BASE + 1, ...`` below ``STRIDE`` in the order they are first
seen; feed slot ``s >= 1`` owns ``s*STRIDE`` (its directory), ``+1`` (``.feed``) and
``+2+i`` (block ``i``). No number is reused while mounted.
"""

from __future__ import annotations

import errno
import logging
import re
from dataclasses import dataclass, field

import pyfuse3

from hyperfs.feeds.core import Core, Held, WriteStream
from hyperfs.feeds.feed import Feed
from hyperfs.fs.errnos import fail

log = logging.getLogger("hyperfs.fs")

ROOT = pyfuse3.ROOT_INODE
STATUS_INO = 2
NAME_BASE = 16
"""Name files (and uploads) get inodes NAME_BASE, NAME_BASE + 1, ... below STRIDE."""
STRIDE = 1 << 44
"""Feed slot s >= 1 owns inodes s*STRIDE (its directory), +1 (.feed), +2+i (block i)."""
MAX_BLOCKS = STRIDE - 2

STATUS_NAME = b".status"
WHOLE_NAME = b".feed"
NAME_MAX = 255

_ID_RE = re.compile(rb"[0-9a-f]{64}")
_HEX_RE = re.compile(rb"[0-9a-fA-F]{64}")
_INDEX_RE = re.compile(rb"0|[1-9][0-9]{0,19}")


def feed_id_of(name: bytes) -> bytes | None:
    """The feed id a root entry's name spells (64 lowercase hex), else None."""
    return bytes.fromhex(name.decode()) if _ID_RE.fullmatch(name) else None


def block_number(name: bytes) -> int | None:
    """The block index a feed directory's entry spells (no leading zeros), else None."""
    return int(name) if _INDEX_RE.fullmatch(name) else None


def reserved(name: bytes) -> bool:
    """Whether a new file in the root may not take ``name``: the status file's, or one
    that would clash with a feed directory (any case of 64 hex digits)."""
    return name in (b".", b"..", STATUS_NAME) or _HEX_RE.fullmatch(name) is not None


def check_block(feed: Feed, index: int) -> None:
    """ENOENT for a block past the feed's known end (or past what inodes can number)."""
    if index >= MAX_BLOCKS or (feed.blocks is not None and index >= feed.blocks):
        raise fail(errno.ENOENT)


@dataclass(slots=True)
class FeedSlot:
    """One feed as the filesystem knows it beyond the core.

    Its feed is opened on first use and kept open while mounted: without wanting it
    (:meth:`peek`, for what is known here) or wanting it (:meth:`open`). The size
    fields are learned once by :mod:`hyperfs.fs.sizes` (``exact``: every block's size
    is known, not guessed); ``last_block_read`` and
    ``prefetched_to`` are the prefetch policy's of :mod:`hyperfs.fs.reads`.
    """

    slot: int
    id: bytes
    core: Core = field(repr=False)
    feed: Feed | None = None
    held: Held | None = field(default=None, repr=False)
    wanted: bool = False
    block_size: int | None = None
    last_size: int | None = None
    uniform: bool = True
    exact: bool = False
    last_block_read: int = -1
    prefetched_to: int = 0

    @property
    def dir_ino(self) -> int:
        return self.slot * STRIDE

    @property
    def whole_ino(self) -> int:
        return self.slot * STRIDE + 1

    def block_ino(self, index: int) -> int:
        return self.slot * STRIDE + 2 + index

    def peek(self) -> Feed:
        """The feed, for what is known of it here (sizes, listings, xattrs): opened
        without wanting it (``core.hold``), so peers are neither told nor asked, and
        `ls -R` of a thousand feeds sends nothing."""
        if self.feed is None:
            self.held = self.core.hold(self.id)
            self.feed = self.held.feed
        return self.feed

    def open(self) -> Feed:
        """The feed, wanted (``core.get``): it is then recorded and looked for on the
        network."""
        if not self.wanted or self.feed is None:
            self.feed = self.core.get(self.id)
            self.wanted = True
        return self.feed

    def close(self) -> None:
        """Undo :meth:`peek` and :meth:`open` (at unmount, or the feed was deleted)."""
        feed, held, wanted = self.feed, self.held, self.wanted
        self.feed, self.held, self.wanted = None, None, False
        try:
            if wanted and feed is not None:
                feed.close()
        finally:
            if held is not None:
                held.close()


@dataclass(slots=True)
class Upload:
    """A file being written into the root: a write stream that becomes a named feed."""

    name: bytes
    ino: int
    stream: WriteStream
    pid: int
    size: int = 0
    error: int = 0
    done: bool = False
    handles: int = 0


# -- the kinds of inode ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Root:
    ino: int = ROOT


@dataclass(frozen=True, slots=True)
class StatusFile:
    ino: int = STATUS_INO


@dataclass(frozen=True, slots=True)
class NameFile:
    """A name in the root: the named feed's bytes, like its ``.feed``."""

    ino: int
    name: bytes
    slot: FeedSlot


@dataclass(frozen=True, slots=True)
class UploadFile:
    """A name being written: readable (as a :class:`NameFile`) once its writer closes it."""

    upload: Upload

    @property
    def ino(self) -> int:
        return self.upload.ino


@dataclass(frozen=True, slots=True)
class FeedDir:
    slot: FeedSlot

    @property
    def ino(self) -> int:
        return self.slot.dir_ino


@dataclass(frozen=True, slots=True)
class WholeFeed:
    """A feed directory's ``.feed``: every block concatenated in order."""

    slot: FeedSlot

    @property
    def ino(self) -> int:
        return self.slot.whole_ino


@dataclass(frozen=True, slots=True)
class BlockFile:
    """Block ``index`` of a feed; whether the feed has it yet is :func:`check_block`'s."""

    slot: FeedSlot
    index: int

    @property
    def ino(self) -> int:
        return self.slot.block_ino(self.index)


Inode = Root | StatusFile | NameFile | UploadFile | FeedDir | WholeFeed | BlockFile


class Namespace:
    """Inode numbers <-> what they are, for every feed, name and upload seen so far."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.uploads: dict[bytes, Upload] = {}
        """Files being written into the root, by name (until finalized or discarded)."""
        self._slots: dict[bytes, FeedSlot] = {}
        self._by_slot: list[FeedSlot | None] = [None]
        self._name_ino: dict[bytes, int] = {}
        self._ino_name: dict[int, bytes] = {}

    def slot(self, feed_id: bytes) -> FeedSlot:
        """The feed's slot, numbered on first sight (its feed is not opened here)."""
        state = self._slots.get(feed_id)
        if state is None:
            state = FeedSlot(len(self._by_slot), feed_id, self.core)
            self._slots[feed_id] = state
            self._by_slot.append(state)
        return state

    def known(self, feed_id: bytes) -> FeedSlot | None:
        """The feed's slot if it has one already."""
        return self._slots.get(feed_id)

    def close(self) -> None:
        """Close every feed opened through the filesystem (at unmount)."""
        for state in self._slots.values():
            try:
                state.close()
            except Exception:  # unmounting goes on whatever one feed says
                log.exception("closing feed %s", state.id.hex()[:16])

    def name_inode(self, name: bytes) -> int:
        """The inode of a root name, numbered on first sight."""
        ino = self._name_ino.get(name)
        if ino is None:
            ino = NAME_BASE + len(self._name_ino)
            self._name_ino[name] = ino
            self._ino_name[ino] = name
        return ino

    def numbered(self, name: bytes) -> bool:
        """Whether ``name`` was ever given an inode (as a name or an upload)."""
        return name in self._name_ino

    def count(self) -> int:
        """How many inodes are numbered: feeds' directories, names, the root, .status."""
        return len(self._slots) + len(self._name_ino) + 2

    def decode(self, ino: int) -> Inode:
        """What inode ``ino`` is; ENOENT for a number never handed out (or a name since
        removed). Block files are not checked against the feed's length here."""
        if ino == ROOT:
            return Root()
        if ino == STATUS_INO:
            return StatusFile()
        if ino < STRIDE:
            name = self._ino_name.get(ino)
            if name is None:
                raise fail(errno.ENOENT)
            upload = self.uploads.get(name)
            if upload is not None and upload.ino == ino:
                return UploadFile(upload)
            target = self.core.names.feed_of(name)
            if target is None:
                raise fail(errno.ENOENT)
            return NameFile(ino, name, self.slot(target))
        slot, rest = divmod(ino, STRIDE)
        state = self._by_slot[slot] if slot < len(self._by_slot) else None
        if state is None:
            raise fail(errno.ENOENT)
        if rest == 0:
            return FeedDir(state)
        if rest == 1:
            return WholeFeed(state)
        return BlockFile(state, rest - 2)

    def child(self, parent: Inode, name: bytes) -> Inode:
        """The entry ``name`` of directory ``parent`` (lookup). Looking up a well-formed
        feed id opens that feed: it is recorded and asked for on the network."""
        if name == b".":
            return parent
        if isinstance(parent, Root):
            return self._root_entry(name)
        if not isinstance(parent, FeedDir):
            raise fail(errno.ENOTDIR)
        if name == b"..":
            return Root()
        if name == WHOLE_NAME:
            return WholeFeed(parent.slot)
        index = block_number(name)
        if index is None:
            raise fail(errno.ENOENT)
        return BlockFile(parent.slot, index)

    def _root_entry(self, name: bytes) -> Inode:
        if name == b"..":
            return Root()
        if name == STATUS_NAME:
            return StatusFile()
        upload = self.uploads.get(name)
        if upload is not None:
            return UploadFile(upload)
        target = self.core.names.feed_of(name) if len(name) <= NAME_MAX else None
        if target is not None:
            return NameFile(self.name_inode(name), name, self.slot(target))
        feed_id = feed_id_of(name)
        if feed_id is None:
            raise fail(errno.ENOENT)
        state = self.slot(feed_id)
        state.open()
        return FeedDir(state)
