"""The FUSE face of hyperfs: feeds as directories of block files, names as files.

A thin :class:`pyfuse3.Operations` translating kernel requests into core calls; the
mount lifecycle lives in :mod:`hyperfs.mount`. The layout seen under the mount point::

    .status                 hidden, read-only JSON: feeds, progress, uploads (and peers)
    NAME                    read-only file per name (core.names): the named feed's bytes
    <64-hex id>/            one directory per stored feed (looking up any other well-formed
                            id opens that feed and starts fetching it; it then appears)
    <64-hex id>/.feed       hidden, the whole feed: every block concatenated in order
    <64-hex id>/0 .. N-1    one read-only file per block

Decisions (docs/FILESYSTEM.md tells users the same):

* Writes: only ``create`` in the root. The bytes stream into a new feed (never buffered
  whole) and the feed is finalized with the name, atomically, on the writer's *last*
  close (flush), so ``cp`` and ``close`` see every error: empty file -> ENODATA, name taken
  -> EEXIST (at create), disk full -> ENOSPC. Writes must be sequential (else ESPIPE).
  A failed or empty upload leaves nothing visible.
* Everything else is immutable: opening a feed's files for writing, truncating ->
  EROFS; mkdir, rename, link, symlink, mknod, create inside a feed directory -> EPERM;
  setting xattrs -> ENOTSUP.
* ``rm <id>/N`` drops the local copy of block N (the file stays listed: the block is still
  part of the feed and can be fetched again); ``rm <id>/.feed`` drops every local block;
  ``rmdir``/``rm -r <id>`` deletes the feed and its names from the database;
  ``rm NAME`` removes only the name (like removing a hard link; the feed stays).
* Waiting: a read of a block that is not local waits at most ``timeout`` seconds, then
  fails with ETIMEDOUT. pyfuse3 ignores FUSE_INTERRUPT and a reader stays in the kernel
  until we answer, so while waiting we poll ``/proc/PID/status`` of the process that
  opened the file every 100 ms: a pending SIGINT/SIGTERM/SIGKILL/SIGHUP/SIGQUIT (or the
  process being gone) ends the wait with EINTR, which withdraws the want (the cancelled
  ``feed.get``).
* Sizes never wait and never read a whole feed: blocks are assumed to be of one size
  except the last (as ``hyperfs add`` and ``cp`` write them). The size of a local block
  is read from storage only when that one file is stat'ed; listings derive it from the
  feed's block size (the length of its first local block). The whole-feed file's size
  is known once the block size and the last block are (else 0). Every file is opened
  with direct I/O, so reads always run to the true end of file whatever st_size says.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import signal
import stat
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pyfuse3
import trio

from hyperfs.base.errors import EmptyFeed, HyperfsError, InvalidId, InvalidIndex, NameTaken
from hyperfs.feeds.core import Core, WriteStream
from hyperfs.feeds.feed import Feed

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
XATTR_ID = b"user.hyperfs.id"
XATTR_BLOCKS = b"user.hyperfs.blocks"
XATTR_LOCAL = b"user.hyperfs.local"
XATTRS = (XATTR_ID, XATTR_BLOCKS, XATTR_LOCAL)

NAME_MAX = 255
BLKSIZE = 1 << 20
"""st_blksize: cat/cp read 1 MiB at a time, and with direct I/O each is one request."""
POLL_INTERVAL = 0.1
"""How often a waiting read checks whether its reader gave up (signal pending)."""
LIST_WAIT = 2.0
"""How long listing a feed of unknown length waits for the length to become known."""
PREFETCH_BYTES = 16 << 20
ATTR_TIMEOUT = 1.0
BLOCK_ATTR_TIMEOUT = 10.0
"""Block files' attributes change only when a block arrives or is dropped (rm, which
the kernel invalidates itself); kept long enough for `ls -l` of 100,000 blocks to stat
every entry from the attributes the listing brought (readdirplus)."""

_ID_RE = re.compile(rb"[0-9a-f]{64}")
_HEX_RE = re.compile(rb"[0-9a-fA-F]{64}")
_INDEX_RE = re.compile(rb"0|[1-9][0-9]{0,19}")

# Signals that end a process by default (or that a shell sends to stop a reader).
_GIVE_UP = 0
for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGPIPE):
    _GIVE_UP |= 1 << (_sig - 1)

_SIGKILL = 1 << (signal.SIGKILL - 1)  # cannot be blocked

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _errno_of(exc: BaseException) -> int:
    """The errno a failed core call should reach the caller as."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc.errno
    if isinstance(exc, NameTaken):
        return errno.EEXIST
    if isinstance(exc, EmptyFeed):
        return errno.ENODATA
    if isinstance(exc, InvalidId | InvalidIndex):
        return errno.ENOENT
    if isinstance(exc, TimeoutError):
        return errno.ETIMEDOUT
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    text = str(exc).lower()
    if "no space" in text or "enospc" in text:  # plyvel.IOError carries only a message
        return errno.ENOSPC
    if "quota" in text:
        return errno.EDQUOT
    return errno.EIO


def _fuse_errors(fn: F) -> F:
    """Turn every exception of a handler into a FUSEError: anything else raised out of a
    pyfuse3 handler ends the whole main loop, i.e. the mount."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except (HyperfsError, OSError, TimeoutError) as exc:
            log.debug("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(_errno_of(exc)) from None
        except Exception as exc:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(_errno_of(exc)) from None

    return wrapper  # type: ignore[return-value]


def _fail(code: int) -> pyfuse3.FUSEError:
    return pyfuse3.FUSEError(code)


def reader_gave_up(pid: int) -> bool:
    """Whether process/thread ``pid`` has a deadly signal pending (or is gone).

    A reader waiting in a FUSE request cannot act on its signals until we answer; the
    kernel shows them in /proc/PID/status (SigPnd: this thread, ShdPnd: its process).
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            text = status.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    except OSError:
        return False
    pending = blocked = 0
    for line in text.splitlines():
        key, _, value = line.partition(b":")
        if key in (b"SigPnd", b"ShdPnd"):
            pending |= int(value, 16)
        elif key == b"SigBlk":
            blocked = int(value, 16)
        elif key == b"State" and value.strip()[:1] in (b"Z", b"X"):
            return True
    return bool(pending & ~blocked & _GIVE_UP) or bool(pending & _SIGKILL)


def _holds_other_fd(pid: int, inode: int, mountpoint: str) -> bool:
    """Whether process ``pid`` still has a descriptor open on our ``inode``.

    A flush is sent on every close, also of dup'ed descriptors (a shell's ``> file``
    opens, dups to fd 1 and closes the original before any byte is written), so an
    upload is finalized only on its opener's last close. Reads fdinfo/readlink only,
    which never call back into this filesystem.
    """
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    prefix = mountpoint.rstrip("/") + "/"
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
            if not target.startswith(prefix):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as info:
                for line in info:
                    if line.startswith(b"ino:") and int(line[4:]) == inode:
                        return True
        except (OSError, ValueError):
            continue
    return False


# -- per-feed state ---------------------------------------------------------------------


@dataclass(slots=True)
class FeedSlot:
    """What the filesystem knows of one feed beyond the core: sizes derived once."""

    slot: int
    id: bytes
    feed: Feed | None = None
    block_size: int | None = None
    last_size: int | None = None
    uniform: bool = True
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


@dataclass(slots=True)
class Handle:
    """One open file: what it reads (or writes) and who opened it."""

    kind: str  # "block", "whole", "status", "upload"
    pid: int
    slot: FeedSlot | None = None
    index: int = 0
    data: bytes = b""
    upload: Upload | None = None
    # whole-feed reading cursor: block ``next_block`` starts at byte ``next_start``
    next_block: int = 0
    next_start: int = 0
    cached: tuple[int, bytes] | None = None
    scan: Iterator[bytes] | None = None
    scan_next: int = 0


class HyperFS(pyfuse3.Operations):
    """Feeds of a :class:`Core` as a filesystem; see the module docstring for the layout."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, core: Core, *, mountpoint: str, block_size: int = 64 * 1024,
                 timeout: float | None = 60.0,
                 status: Callable[[], object] | None = None,
                 fetch: Callable[[Feed, int], Awaitable[bytes | None]] | None = None) -> None:
        """``fetch(feed, index)`` waits for a block that is not local and raises
        TimeoutError when it gives up (default: ``feed.get`` with ``timeout``; the mount
        passes the network node's, which first waits out a discovery round)."""
        super().__init__()
        self.core = core
        self.mountpoint = mountpoint
        self.block_size = block_size
        self.timeout = timeout or None
        self.fetch = fetch or (lambda feed, index: feed.get(index, timeout=self.timeout))
        self.status_extra = status
        self.nursery: trio.Nursery | None = None
        self.uid, self.gid = os.getuid(), os.getgid()
        self.started_ns = time.time_ns()
        self._slots: dict[bytes, FeedSlot] = {}
        self._by_slot: list[FeedSlot | None] = [None]
        self._name_ino: dict[bytes, int] = {}
        self._ino_name: dict[int, bytes] = {}
        self._uploads: dict[bytes, Upload] = {}
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._dirs: dict[int, list[tuple[bytes, int]]] = {}

    def close(self) -> None:
        """Release every feed opened through the filesystem (at unmount)."""
        for state in self._slots.values():
            if state.feed is not None:
                feed, state.feed = state.feed, None
                try:
                    feed.close()
                except Exception:  # unmounting goes on whatever one feed says
                    log.exception("closing feed %s", state.id.hex()[:16])
        for upload in list(self._uploads.values()):
            self._discard(upload)

    # -- inode bookkeeping ---------------------------------------------------------------

    def _slot(self, feed_id: bytes) -> FeedSlot:
        state = self._slots.get(feed_id)
        if state is None:
            state = FeedSlot(len(self._by_slot), feed_id)
            self._slots[feed_id] = state
            self._by_slot.append(state)
        return state

    def _feed(self, state: FeedSlot) -> Feed:
        """The slot's feed, opened (core.get) on first use and kept open while mounted."""
        if state.feed is None:
            state.feed = self.core.get(state.id)
        return state.feed

    def _name_inode(self, name: bytes) -> int:
        ino = self._name_ino.get(name)
        if ino is None:
            ino = NAME_BASE + len(self._name_ino)
            self._name_ino[name] = ino
            self._ino_name[ino] = name
        return ino

    def _decode(self, ino: int) -> tuple[str, Any, int]:
        """(kind, object, index) of an inode: root, status, name, upload, dir, whole, block."""
        if ino == ROOT:
            return "root", None, 0
        if ino == STATUS_INO:
            return "status", None, 0
        if ino < STRIDE:
            name = self._ino_name.get(ino)
            if name is None:
                raise _fail(errno.ENOENT)
            upload = self._uploads.get(name)
            if upload is not None and upload.ino == ino:
                return "upload", upload, 0
            target = self.core.names.feed_of(name)
            if target is None:
                raise _fail(errno.ENOENT)
            return "name", self._slot(target), 0
        slot, rest = divmod(ino, STRIDE)
        state = self._by_slot[slot] if slot < len(self._by_slot) else None
        if state is None:
            raise _fail(errno.ENOENT)
        if rest == 0:
            return "dir", state, 0
        if rest == 1:
            return "whole", state, 0
        return "block", state, rest - 2

    # -- sizes (never waiting, never reading more than a block or two) -------------------

    def _block_size(self, state: FeedSlot) -> int | None:
        """The size of every block but the last, from the first local non-last block."""
        if state.block_size is not None:
            return state.block_size
        feed = self._feed(state)
        if feed.blocks is None or feed.blocks < 2:
            return None
        for index in feed.bitfield.iter_set(0, feed.blocks - 1):
            data = feed.read_local(index)
            if data is not None:
                state.block_size = len(data)
                return state.block_size
        return None

    def _last_size(self, state: FeedSlot) -> int | None:
        if state.last_size is None:
            feed = self._feed(state)
            if feed.blocks and feed.has(feed.blocks - 1):
                data = feed.read_local(feed.blocks - 1)
                if data is not None:
                    state.last_size = len(data)
        return state.last_size

    def _guess_block_len(self, state: FeedSlot, index: int) -> int:
        feed = self._feed(state)
        if feed.blocks is not None and index == feed.blocks - 1:
            return self._last_size(state) or 0
        return self._block_size(state) or 0

    def _whole_size(self, state: FeedSlot) -> int:
        feed = self._feed(state)
        if not feed.blocks or not state.uniform:
            return 0
        last = self._last_size(state)
        if last is None:
            return 0
        if feed.blocks == 1:
            return last
        size = self._block_size(state)
        return 0 if size is None else (feed.blocks - 1) * size + last

    def _whole_local_bytes(self, state: FeedSlot) -> int:
        feed = self._feed(state)
        if not feed.local:
            return 0
        size = self._block_size(state) or self._last_size(state) or 0
        return feed.local * size

    # -- attributes ------------------------------------------------------------------------

    def _attr(self, ino: int, mode: int, size: int = 0, local: int = 0,
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

    def _dir_attr(self, ino: int) -> pyfuse3.EntryAttributes:
        return self._attr(ino, stat.S_IFDIR | 0o755)

    def _whole_attr(self, ino: int, state: FeedSlot) -> pyfuse3.EntryAttributes:
        return self._attr(ino, stat.S_IFREG | 0o444, self._whole_size(state),
                          self._whole_local_bytes(state))

    def _block_attr(self, state: FeedSlot, index: int, exact: bool) -> pyfuse3.EntryAttributes:
        feed = self._feed(state)
        local = index in feed.bitfield
        size = 0
        if local and exact:
            data = feed.read_local(index)
            size = 0 if data is None else len(data)
            local = data is not None
            if data is not None:
                self._check_uniform(state, index, size)
        else:
            size = self._guess_block_len(state, index)
        return self._attr(state.block_ino(index), stat.S_IFREG | 0o444, size,
                          size if local else 0, BLOCK_ATTR_TIMEOUT)

    def _check_uniform(self, state: FeedSlot, index: int, size: int) -> None:
        feed = state.feed
        if feed is None or feed.blocks is None or index >= feed.blocks - 1:
            return
        expected = self._block_size(state)
        if expected is not None and size != expected and state.uniform:
            log.info("feed %s has blocks of varying size; whole-file size unknown",
                     state.id.hex()[:16])
            state.uniform = False

    def _upload_attr(self, upload: Upload) -> pyfuse3.EntryAttributes:
        return self._attr(upload.ino, stat.S_IFREG | 0o644, upload.size, upload.size, 0)

    def _getattr(self, ino: int, exact: bool = True) -> pyfuse3.EntryAttributes:
        kind, obj, index = self._decode(ino)
        if kind in ("root", "dir"):
            return self._dir_attr(ino)
        if kind == "status":
            return self._attr(ino, stat.S_IFREG | 0o444, 0, 0, 0)
        if kind == "upload":
            return self._upload_attr(obj)
        if kind in ("name", "whole"):
            return self._whole_attr(ino, obj)
        feed = self._feed(obj)
        if index >= MAX_BLOCKS or (feed.blocks is not None and index >= feed.blocks):
            raise _fail(errno.ENOENT)
        return self._block_attr(obj, index, exact)

    @_fuse_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._getattr(inode)

    @_fuse_errors
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        kind, state, _ = self._decode(parent_inode)
        if name == b".":
            return self._getattr(parent_inode)
        if kind == "root":
            if name == b"..":
                return self._dir_attr(ROOT)
            if name == STATUS_NAME:
                return self._getattr(STATUS_INO)
            upload = self._uploads.get(name)
            if upload is not None:
                return self._upload_attr(upload)
            target = self.core.names.feed_of(name) if len(name) <= NAME_MAX else None
            if target is not None:
                return self._whole_attr(self._name_inode(name), self._slot(target))
            if _ID_RE.fullmatch(name):
                state = self._slot(bytes.fromhex(name.decode()))
                self._feed(state)  # opens it: it is recorded and looked for on the network
                return self._dir_attr(state.dir_ino)
            raise _fail(errno.ENOENT)
        if kind != "dir":
            raise _fail(errno.ENOTDIR)
        if name == b"..":
            return self._dir_attr(ROOT)
        if name == WHOLE_NAME:
            return self._whole_attr(state.whole_ino, state)
        if not _INDEX_RE.fullmatch(name):
            raise _fail(errno.ENOENT)
        index = int(name)
        feed = self._feed(state)
        if index >= MAX_BLOCKS or (feed.blocks is not None and index >= feed.blocks):
            raise _fail(errno.ENOENT)
        return self._block_attr(state, index, exact=True)

    # -- directories -----------------------------------------------------------------------

    @_fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        kind, state, _ = self._decode(inode)
        entries: list[tuple[bytes, int]] = []
        if kind == "root":
            entries.append((STATUS_NAME, STATUS_INO))
            for name in self.core.names.files():
                entries.append((name, self._name_inode(name)))
            for name, upload in self._uploads.items():
                if not upload.done:
                    entries.append((name, upload.ino))
            async for feed_id in self.core.list():
                entries.append((feed_id.hex().encode(), self._slot(feed_id).dir_ino))
        elif kind == "dir":
            feed = self._feed(state)
            if feed.blocks is None:
                with trio.move_on_after(LIST_WAIT):
                    await feed.ready()
            entries.append((WHOLE_NAME, state.whole_ino))
        else:
            raise _fail(errno.ENOTDIR)
        fh = self._new_fh()
        self._dirs[fh] = entries
        self._handles[fh] = Handle("dir", ctx.pid, state if kind == "dir" else None)
        return fh

    @_fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self._dirs[fh]
        handle = self._handles[fh]
        position = start_id
        while position < len(entries):
            name, ino = entries[position]
            attr = self._getattr(ino, exact=False)
            if not pyfuse3.readdir_reply(token, name, attr, position + 1):
                return
            position += 1
        state = handle.slot
        if state is None:
            return
        feed = self._feed(state)
        blocks = min(feed.blocks or 0, MAX_BLOCKS)
        index = position - len(entries)
        if index >= blocks:
            return
        # Block entries are computed, not stored, into one reused attribute object
        # (readdir_reply copies it): no storage reads, no per-block objects kept.
        size = self._block_size(state) or 0
        last = blocks - 1
        bitfield = feed.bitfield
        base = state.block_ino(0)
        offset = len(entries) + 1
        attr = self._attr(base, stat.S_IFREG | 0o444, size, 0, BLOCK_ATTR_TIMEOUT)
        reply = pyfuse3.readdir_reply
        while index < blocks:
            length = self._guess_block_len(state, index) if index == last else size
            attr.st_ino = base + index
            attr.st_size = length
            attr.st_blocks = (length + 511) // 512 if index in bitfield else 0
            if not reply(token, str(index).encode(), attr, index + offset):
                return
            index += 1

    @_fuse_errors
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)
        self._handles.pop(fh, None)

    # -- opening and reading ---------------------------------------------------------------

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    @_fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        kind, obj, index = self._decode(inode)
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND)
        if kind in ("root", "dir"):
            raise _fail(errno.EISDIR)
        if kind == "upload":
            raise _fail(errno.ETXTBSY)  # being written: readable once its writer closes it
        if writing:
            raise _fail(errno.EROFS)
        if kind == "status":
            handle = Handle("status", ctx.pid, data=self._status())
        elif kind in ("name", "whole"):
            self._feed(obj)
            handle = Handle("whole", ctx.pid, obj)
        else:
            feed = self._feed(obj)
            if index >= MAX_BLOCKS or (feed.blocks is not None and index >= feed.blocks):
                raise _fail(errno.ENOENT)
            handle = Handle("block", ctx.pid, obj, index)
        fh = self._new_fh()
        self._handles[fh] = handle
        return pyfuse3.FileInfo(fh=fh, direct_io=True)

    @_fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        handle = self._handles.get(fh)
        if handle is None:
            raise _fail(errno.EBADF)
        if handle.kind == "status":
            return memoryview(handle.data)[off : off + size]
        state = handle.slot
        assert state is not None
        if handle.kind == "block":
            self._prefetch_blocks(state, handle.index)
            data = await self._block(state, handle.index, handle.pid)
            if data is None:
                return b""
            return memoryview(data)[off : off + size]
        if handle.kind == "whole":
            return await self._read_whole(handle, state, off, size)
        raise _fail(errno.EBADF)

    async def _block(self, state: FeedSlot, index: int, pid: int) -> bytes | None:
        """Block ``index``: from storage if local, else waited for (timeout, interrupts)."""
        feed = self._feed(state)
        if feed.blocks is not None and index >= feed.blocks:
            return None
        if index in feed.bitfield:
            data = feed.read_local(index)
            if data is not None:
                return data
        return await self._wait(feed, index, pid)

    async def _wait(self, feed: Feed, index: int, pid: int) -> bytes | None:
        """Await the block until it comes, ``fetch`` gives up or the reader does;
        cancelling the wait withdraws the want from the network."""
        result: list[bytes | None] = []
        failure: list[BaseException] = []
        gave_up = False

        async def fetch(scope: trio.CancelScope) -> None:
            try:
                result.append(await self.fetch(feed, index))
            except Exception as exc:  # reported below, not as an ExceptionGroup
                failure.append(exc)
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch, nursery.cancel_scope)
            if pid > 0:
                while True:
                    await trio.sleep(POLL_INTERVAL)
                    if reader_gave_up(pid):
                        gave_up = True
                        nursery.cancel_scope.cancel()
                        break
        if result:
            return result[0]
        if gave_up:
            log.debug("reader %d gave up waiting for block %d", pid, index)
            raise _fail(errno.EINTR)
        if failure and isinstance(failure[0], TimeoutError):
            log.info("feed %s: %s", feed.hex and feed.hex[:16], failure[0])
            raise _fail(errno.ETIMEDOUT)
        raise failure[0]

    def _prefetch_blocks(self, state: FeedSlot, index: int) -> None:
        """Block files read one after another: fetch ahead like the whole-feed file."""
        sequential = index == state.last_block_read + 1
        state.last_block_read = index
        if sequential:
            self._prefetch(state, index)

    def _prefetch(self, state: FeedSlot, index: int) -> None:
        """Ask the network for the blocks after ``index`` a reader will want next."""
        feed = self._feed(state)
        if feed.blocks is not None and feed.local >= feed.blocks:
            return
        window = max(16, PREFETCH_BYTES // (state.block_size or 65536))
        if index + window // 2 < state.prefetched_to:
            return
        start = max(index, state.prefetched_to)
        end = index + window
        if feed.blocks is not None:
            end = min(end, feed.blocks)
        state.prefetched_to = end
        if start >= end:
            return
        # NETWORK: Feed.prefetch(start, end) is added by the network layer; until it
        # exists, reads still fetch block by block through feed.get.
        prefetch = getattr(feed, "prefetch", None)
        if prefetch is None:
            return
        outcome = prefetch(start, end)
        if hasattr(outcome, "__await__") and self.nursery is not None:
            self.nursery.start_soon(_await, outcome)

    async def _read_whole(self, handle: Handle, state: FeedSlot, off: int,
                          size: int) -> bytes | memoryview:
        """Bytes ``off .. off+size`` of the feed's blocks laid end to end."""
        # Find the block holding ``off``: jump arithmetically in a feed of equal blocks,
        # else walk on from the cursor (or from the start, for a backward seek).
        block_size = self._block_size(state) if state.uniform else None
        if block_size:
            index = off // block_size
            start = index * block_size
        elif off >= handle.next_start:
            index, start = handle.next_block, handle.next_start
        else:
            index, start = 0, 0
        parts: list[memoryview] = []
        want = size
        while want > 0:
            data = await self._whole_block(handle, state, index)
            if data is None:
                break
            end = start + len(data)
            if off < end:
                low = off - start
                take = min(len(data) - low, want)
                parts.append(memoryview(data)[low : low + take])
                want -= take
                off += take
            if off >= end:
                index, start = index + 1, end
        handle.next_block, handle.next_start = index, start
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    async def _whole_block(self, handle: Handle, state: FeedSlot, index: int) -> bytes | None:
        """Block ``index`` for a whole-feed reader: its last block, the next from its range
        scan of local blocks (Feed.iter_local), else fetched with prefetch ahead."""
        if handle.cached is not None and handle.cached[0] == index:
            return handle.cached[1]
        data = None
        if handle.scan is not None and handle.scan_next == index:
            data = next(handle.scan, None)
            handle.scan_next += 1
        if data is None:
            handle.scan = None
            feed = self._feed(state)
            if index in feed.bitfield:
                handle.scan = feed.iter_local(index)
                handle.scan_next = index + 1
                data = next(handle.scan, None)
            if data is None:
                handle.scan = None
                self._prefetch(state, index)
                data = await self._block(state, index, handle.pid)
                if data is None:
                    return None
        handle.cached = (index, data)
        self._check_uniform(state, index, len(data))
        return data

    @_fuse_errors
    async def flush(self, fh: int) -> None:
        handle = self._handles.get(fh)
        if handle is None or handle.upload is None:
            return  # readers: nothing to do, at once
        upload = handle.upload
        if upload.error:
            raise _fail(upload.error)
        if upload.done:
            return
        if _holds_other_fd(upload.pid, upload.ino, self.mountpoint):
            return  # not the writer's last close (e.g. a shell redirect's dup)
        await self._finalize(upload)

    @_fuse_errors
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if handle is None or handle.upload is None:
            return
        upload = handle.upload
        upload.handles -= 1
        if upload.handles > 0 or upload.done:
            return
        if upload.error or upload.size == 0:
            self._discard(upload)
            return
        try:
            await self._finalize(upload)
        except pyfuse3.FUSEError as exc:
            log.warning("could not store %r: %s", upload.name, os.strerror(exc.errno))

    # -- writing (uploads into the root) ---------------------------------------------------

    def _check_new_name(self, name: bytes) -> None:
        if len(name) > NAME_MAX:
            raise _fail(errno.ENAMETOOLONG)
        if name in (b".", b"..", STATUS_NAME) or _HEX_RE.fullmatch(name):
            raise _fail(errno.EEXIST)  # reserved: the status file and feed directories
        if name in self._uploads or self.core.names.feed_of(name) is not None:
            raise _fail(errno.EEXIST)

    @_fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo,
                                                           pyfuse3.EntryAttributes]:
        if parent_inode != ROOT:
            raise _fail(errno.EPERM)
        self._check_new_name(name)
        stream = self.core.create_write_stream(block_size=self.block_size)
        upload = Upload(name, self._name_inode(name), stream, ctx.pid, handles=1)
        self._uploads[name] = upload
        fh = self._new_fh()
        self._handles[fh] = Handle("upload", ctx.pid, upload=upload)
        return pyfuse3.FileInfo(fh=fh, direct_io=True), self._upload_attr(upload)

    @_fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handles.get(fh)
        if handle is None or handle.upload is None:
            raise _fail(errno.EBADF)
        upload = handle.upload
        if upload.error:
            raise _fail(upload.error)
        if upload.done:
            raise _fail(errno.EROFS)  # finalized on the writer's last close: immutable
        if off != upload.size:
            raise _fail(errno.ESPIPE)  # feeds are written once, front to back
        try:
            await upload.stream.write(buf)
        except Exception as exc:
            upload.error = _errno_of(exc)
            log.warning("writing %r failed: %s", upload.name, exc)
            raise _fail(upload.error) from None
        upload.size += len(buf)
        return len(buf)

    async def _finalize(self, upload: Upload) -> None:
        try:
            feed_id = await upload.stream.close(name=upload.name)
        except Exception as exc:
            upload.error = _errno_of(exc)
            log.warning("storing %r failed: %s", upload.name, exc)
            self._discard(upload)
            raise _fail(upload.error) from None
        upload.done = True
        if self._uploads.get(upload.name) is upload:
            del self._uploads[upload.name]
        state = self._slot(feed_id)
        if upload.stream.block_size and state.block_size is None and upload.size > 0:
            blocks = upload.stream.feed.blocks or 1
            if blocks > 1:
                state.block_size = upload.stream.block_size
            state.last_size = upload.size - (blocks - 1) * upload.stream.block_size
        log.info("stored %r as feed %s (%d bytes)", upload.name, feed_id.hex(), upload.size)

    def _discard(self, upload: Upload) -> None:
        """Forget a failed or empty upload: nothing of it stays visible or stored."""
        upload.done = True
        if self._uploads.get(upload.name) is upload:
            del self._uploads[upload.name]
        feed = upload.stream.feed
        if feed.id is None:
            try:
                self.core.discard(feed)
            except Exception:
                log.exception("could not delete the unfinished upload %r", upload.name)
        with contextlib.suppress(Exception):  # not mounted, or the entry is gone already
            pyfuse3.invalidate_entry_async(ROOT, upload.name, ignore_enoent=True)

    @_fuse_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        kind, obj, _ = self._decode(inode)
        if kind == "upload":
            if fields.update_size and attr.st_size != obj.size:
                raise _fail(errno.EROFS if attr.st_size else errno.ESPIPE)
            return self._upload_attr(obj)  # times, mode, owner: accepted, not kept
        if kind in ("root", "dir"):
            raise _fail(errno.EPERM)
        raise _fail(errno.EROFS)

    # -- removing --------------------------------------------------------------------------

    @_fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        kind, state, _ = self._decode(parent_inode)
        if kind == "root":
            if name in self._uploads:
                raise _fail(errno.EBUSY)
            if name == STATUS_NAME:
                raise _fail(errno.EPERM)
            if len(name) > NAME_MAX or self.core.names.feed_of(name) is None:
                raise _fail(errno.ENOENT)
            self.core.names.unlink(name)  # the feed stays, under its id
            return
        if kind != "dir":
            raise _fail(errno.ENOTDIR)
        feed = self._feed(state)
        if name == WHOLE_NAME:
            for index in list(feed.bitfield.iter_set(0, feed.blocks)):
                feed.drop(index)
                if index % 1024 == 1023:
                    await trio.lowlevel.checkpoint()
            return
        if not _INDEX_RE.fullmatch(name):
            raise _fail(errno.ENOENT)
        index = int(name)
        if index >= MAX_BLOCKS or (feed.blocks is not None and index >= feed.blocks):
            raise _fail(errno.ENOENT)
        feed.drop(index)  # not local already: nothing to do, still a success

    @_fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if parent_inode != ROOT:
            raise _fail(errno.ENOTDIR if self._decode(parent_inode)[0] != "dir"
                        else errno.ENOENT)
        if not _ID_RE.fullmatch(name):
            raise _fail(errno.ENOTDIR if name in self._name_ino else errno.ENOENT)
        feed_id = bytes.fromhex(name.decode())
        if not self.core.stored(feed_id):
            raise _fail(errno.ENOENT)
        state = self._slots.get(feed_id)
        if state is not None and state.feed is not None:
            state.feed.close()
            state.feed = None
            state.block_size = state.last_size = None
            state.uniform = True
        await self.core.remove(feed_id)

    async def _refuse(self, *args: object) -> Any:
        raise _fail(errno.EPERM)

    mkdir = _refuse
    mknod = _refuse
    symlink = _refuse
    link = _refuse

    async def rename(self, *args: object) -> None:
        raise _fail(errno.EPERM)

    # -- xattrs ----------------------------------------------------------------------------

    def _xattr_feed(self, inode: int) -> tuple[FeedSlot | None, int | None]:
        kind, obj, index = self._decode(inode)
        if kind in ("dir", "whole", "name"):
            return obj, None
        if kind == "block":
            return obj, index
        return None, None

    @_fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not name.startswith(b"user."):
            # "Not supported" (not "no such attribute") for security.*/system.*: ls -l then
            # stops asking for SELinux labels and ACLs on this device, instead of paying
            # two round trips per file (200,000 for a 100,000-block feed).
            raise _fail(errno.ENOTSUP)
        state, index = self._xattr_feed(inode)
        if state is None or name not in XATTRS:
            raise _fail(pyfuse3.ENOATTR)
        if name == XATTR_ID:
            return state.id.hex().encode()
        feed = self._feed(state)
        if name == XATTR_BLOCKS:
            return b"?" if feed.blocks is None else str(feed.blocks).encode()
        if index is not None:
            return b"1" if index in feed.bitfield else b"0"
        return str(feed.local).encode()

    @_fuse_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        state, _ = self._xattr_feed(inode)
        return [] if state is None else list(XATTRS)

    @_fuse_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        raise _fail(errno.ENOTSUP)

    @_fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        raise _fail(errno.ENOTSUP)

    # -- the rest --------------------------------------------------------------------------

    @_fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        """The database disk's space, so df and cp see what a copy can use."""
        disk = os.statvfs(self.core.store.path)
        data = pyfuse3.StatvfsData()
        data.f_bsize = disk.f_bsize
        data.f_frsize = disk.f_frsize
        data.f_blocks = disk.f_blocks
        data.f_bfree = disk.f_bfree
        data.f_bavail = disk.f_bavail
        data.f_files = len(self._slots) + len(self._name_ino) + 2
        data.f_ffree = data.f_favail = 0
        data.f_namemax = NAME_MAX
        return data

    def _status(self) -> bytes:
        """The .status file: every stored feed with its progress, uploads, network."""
        names: dict[bytes, list[str]] = {}
        for name, target in self.core.names.files().items():
            names.setdefault(target, []).append(name.decode(errors="surrogateescape"))
        feeds = []
        for info in self.core.info():
            state = self._slots.get(info.id)
            feed = state.feed if state is not None else None
            feeds.append({
                "id": info.id.hex(),
                "blocks": info.blocks,
                "local": info.local,
                "names": names.get(info.id, []),
                "open": feed is not None,
                "waiting": len(feed.wanted) if feed is not None else 0,
            })
        status: dict[str, object] = {
            "mountpoint": self.mountpoint,
            "feeds": feeds,
            "uploads": [{"name": u.name.decode(errors="surrogateescape"), "bytes": u.size}
                        for u in self._uploads.values()],
        }
        if self.status_extra is not None:
            try:
                status["network"] = self.status_extra()
            except Exception as exc:
                status["network"] = {"error": str(exc)}
        return (json.dumps(status, indent=2, default=str) + "\n").encode()


async def _await(outcome: Awaitable[object]) -> None:
    try:
        await outcome
    except Exception:
        log.exception("prefetch failed")
