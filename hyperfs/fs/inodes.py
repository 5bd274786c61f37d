"""Inode numbers and what they stand for: the layout under the mount point, as data.

The layout (docs/FILESYSTEM.md tells users the same)::

    .status                 hidden, read-only JSON: feeds, progress, uploads (and peers)
    NAME                    a name (core.names): a file, the bytes of the feed it is bound
                            to (or none: an empty file), or a directory of names
    <64-hex id>/            one directory per stored feed (looking up any other well-formed
                            id opens that feed and starts fetching it; it then appears)
    <64-hex id>/.feed       hidden, the whole feed: every block concatenated in order
    <64-hex id>/0 .. N-1    one read-only file per block

Numbers are computed, not stored per file, so a feed of 100,000 blocks costs nothing to
number: the root and ``.status`` have fixed inodes; names (and uploads, which become
names) get ``NAME_BASE, NAME_BASE + 1, ...`` below ``STRIDE`` in the order they are first
seen, by path; feed slot ``s >= 1`` owns ``s*STRIDE`` (its directory), ``+1`` (``.feed``)
and ``+2+i`` (block ``i``). No number is reused while mounted. A rename moves the numbers
with the names (a file open across ``mv`` keeps its inode); a removed name's number is
forgotten, so a new file of that name is a new inode.

(Over ~400 lines: the inode kinds, the per-feed slot and the Namespace that hands out and
decodes numbers are one model; split, each half would need the other's private tables.)
"""

from __future__ import annotations

import errno
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field

import pyfuse3

from hyperfs.feeds.core import Core, Held
from hyperfs.feeds.feed import Feed
from hyperfs.feeds.filestream import FileWriteStream
from hyperfs.feeds.names import join, split
from hyperfs.fs.errnos import fail
from hyperfs.fs.scratch import Scratch
from hyperfs.store.entry import Entry

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


RETIRED_MAX = 4096
"""Numbers of overwritten names kept for their open readers (the oldest are forgotten)."""


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
    live_blocks: int = 0
    live_bytes: int = 0
    """A live feed's blocks 0 .. live_blocks-1 are local and hold live_bytes bytes
    (:func:`hyperfs.fs.sizes.live_size`)."""

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
    """A file being written: a write stream that becomes the feed its name is bound to.

    ``entry`` is what the name will be (mode, owner, times, xattrs: ``cp -a`` and
    ``install`` set them on the open file before closing it); ``replacing`` when the
    name exists already (O_TRUNC): it keeps showing its old feed until this one is done.
    """

    name: bytes
    """The name's path (``dir/file``; a top-level name is just its name)."""
    ino: int
    stream: FileWriteStream
    pid: int
    entry: Entry
    replacing: bool = False
    times_set: bool = False
    """Whether the writer set the mtime itself (else it is the time of the finalize)."""
    truncated: bool = True
    """False for a name opened for writing without O_TRUNC while its bytes are still the
    name's: a truncation to 0 makes it True (new bytes from nothing), and so does a
    write or another truncation, once the name's bytes are copied into the scratch file
    (copy on write, :mod:`.scratch`). Still False at close: the name keeps its feed."""
    size: int = 0
    error: int = 0
    done: bool = False
    handles: int = 0
    scratch: Scratch | None = None
    """Where the bytes are once the writer went back over them (:mod:`.scratch`); the
    stream is discarded then."""
    old: FeedSlot | None = None
    """The feed a name opened without O_TRUNC holds: what its scratch file starts as."""


# -- the kinds of inode ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Root:
    ino: int = ROOT


@dataclass(frozen=True, slots=True)
class StatusFile:
    ino: int = STATUS_INO


@dataclass(frozen=True, slots=True)
class NameFile:
    """A file name: the bytes of the feed it is bound to, like its ``.feed``; with no
    slot, an empty file (bound to no feed)."""

    ino: int
    path: bytes
    entry: Entry
    slot: FeedSlot | None


@dataclass(frozen=True, slots=True)
class NameDir:
    """A directory of names."""

    ino: int
    path: bytes
    entry: Entry


@dataclass(frozen=True, slots=True)
class NameLink:
    """A symbolic link among names: the kernel reads its target and follows it."""

    ino: int
    path: bytes
    entry: Entry


@dataclass(frozen=True, slots=True)
class UploadFile:
    """A new name being written: readable (as a :class:`NameFile`) once its writer closes
    it."""

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


Inode = (Root | StatusFile | NameFile | NameDir | NameLink | UploadFile | FeedDir | WholeFeed
         | BlockFile)


class Namespace:
    """Inode numbers <-> what they are, for every feed, name and upload seen so far."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.uploads: dict[bytes, Upload] = {}
        """Files being written, by path (until finalized or discarded)."""
        self._slots: dict[bytes, FeedSlot] = {}
        self._by_slot: list[FeedSlot | None] = [None]
        self._path_ino: dict[bytes, int] = {}
        self._ino_path: dict[int, bytes] = {}
        self._retired: OrderedDict[int, NameFile] = OrderedDict()
        self._next_ino = NAME_BASE

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

    # -- names' numbers ------------------------------------------------------------------

    def name_inode(self, path: bytes) -> int:
        """The inode of a name's path, numbered on first sight."""
        ino = self._path_ino.get(path)
        if ino is None:
            ino, self._next_ino = self._next_ino, self._next_ino + 1
            self._path_ino[path] = ino
            self._ino_path[ino] = path
        return ino

    def forget(self, path: bytes) -> None:
        """A name was removed: its number goes (a new name there gets a new inode)."""
        ino = self._path_ino.pop(path, None)
        if ino is not None:
            del self._ino_path[ino]

    def renumber(self, old: NameFile) -> None:
        """``old``'s path now holds another feed: the path gets a new inode at its next
        lookup, and ``old.ino`` goes on showing the name as it was to whoever opened it
        before. Their reads, and the pages the kernel caches for that inode, are of a feed
        that never changes, so page-cached names stay right across overwrites."""
        self.forget(old.path)
        self._retired[old.ino] = old
        while len(self._retired) > RETIRED_MAX:
            self._retired.popitem(last=False)

    def moved(self, old: bytes, new: bytes, *, exchange: bool = False,
              directories: bool = True) -> None:
        """A rename of ``old`` to ``new`` (swapped with ``exchange``) succeeded: numbers
        and uploads follow their names. A replaced ``new`` loses its number. Names under
        a moved directory move too (``directories``: either side may be one)."""
        if not exchange:
            self.forget(new)
        pairs = [(old, new), (new, old)] if exchange else [(old, new)]

        def renamed(path: bytes) -> bytes | None:
            for source, target in pairs:
                if path == source or (directories and path.startswith(source + b"/")):
                    return target + path[len(source):]
            return None

        paths = (list(self._path_ino) if directories
                 else [path for path, _ in pairs if path in self._path_ino])
        numbers = {}
        for path in paths:
            target = renamed(path)
            if target is not None:
                numbers[target] = self._path_ino.pop(path)
        self._path_ino.update(numbers)
        self._ino_path.update((ino, path) for path, ino in numbers.items())
        uploads = {}
        for path in list(self.uploads):
            target = renamed(path)
            if target is not None:
                uploads[target] = upload = self.uploads.pop(path)
                upload.name = target
        self.uploads.update(uploads)

    def count(self) -> int:
        """How many inodes are numbered: feeds' directories, names, the root, .status."""
        return len(self._slots) + len(self._path_ino) + 2

    def upload_of(self, ino: int) -> Upload | None:
        """The upload writing inode ``ino`` (a new name, or a name being replaced)."""
        upload = self.uploads.get(self._ino_path.get(ino, b""))
        return upload if upload is not None and upload.ino == ino else None

    # -- decoding ------------------------------------------------------------------------

    def decode(self, ino: int) -> Inode:
        """What inode ``ino`` is; ENOENT for a number never handed out (or a name since
        removed). Block files are not checked against the feed's length here."""
        if ino == ROOT:
            return Root()
        if ino == STATUS_INO:
            return StatusFile()
        if ino < STRIDE:
            path = self._ino_path.get(ino)
            if path is None:
                retired = self._retired.get(ino)
                if retired is None:
                    raise fail(errno.ENOENT)
                return retired
            return self.named(path)
        slot, rest = divmod(ino, STRIDE)
        state = self._by_slot[slot] if slot < len(self._by_slot) else None
        if state is None:
            raise fail(errno.ENOENT)
        if rest == 0:
            return FeedDir(state)
        if rest == 1:
            return WholeFeed(state)
        return BlockFile(state, rest - 2)

    def named(self, path: bytes) -> Inode:
        """The name at ``path`` (a file, a directory, a link, or a new file being written);
        ENOENT if there is none. A name being replaced is still its old self."""
        entry = self.core.names.get(path)
        if entry is None:
            upload = self.uploads.get(path)
            if upload is None:
                raise fail(errno.ENOENT)
            return UploadFile(upload)
        ino = self.name_inode(path)
        if entry.is_dir:
            return NameDir(ino, path, entry)
        if entry.is_link:
            return NameLink(ino, path, entry)
        return NameFile(ino, path, entry,
                        None if entry.feed_id is None else self.slot(entry.feed_id))

    def directory(self, path: bytes) -> Root | NameDir:
        """The directory of names at ``path`` (b"": the root)."""
        node = self.named(path) if path else Root()
        if not isinstance(node, Root | NameDir):
            raise fail(errno.ENOTDIR)
        return node

    def child(self, parent: Inode, name: bytes) -> Inode:
        """The entry ``name`` of directory ``parent`` (lookup). Looking up a well-formed
        feed id opens that feed: it is recorded and asked for on the network."""
        if name == b".":
            return parent
        if isinstance(parent, Root):
            return self._root_entry(name)
        if isinstance(parent, NameDir):
            if name == b"..":
                return self.directory(split(parent.path)[0])
            if len(name) > NAME_MAX:
                raise fail(errno.ENOENT)
            return self.named(join(parent.path, name))
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
        feed_id = feed_id_of(name)
        if feed_id is None:
            if len(name) > NAME_MAX:
                raise fail(errno.ENOENT)
            return self.named(name)
        state = self.slot(feed_id)
        state.open()
        return FeedDir(state)
