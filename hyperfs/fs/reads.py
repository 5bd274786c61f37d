"""Reading open files: the whole-feed cursor, waiting for blocks, readers giving up.

* Waiting: a read of a block that is not local waits for ``fetch`` (at most the mount's
  ``timeout`` seconds), then fails with ETIMEDOUT. pyfuse3 ignores FUSE_INTERRUPT and a
  reader stays in the kernel until we answer, so while waiting we poll
  ``/proc/PID/status`` of the process that opened the file every ``POLL_INTERVAL``: a
  pending SIGINT/SIGTERM/SIGKILL/SIGHUP/SIGQUIT/SIGPIPE (not blocked), or the process
  being gone, ends the wait with EINTR, which withdraws the want (the cancelled fetch).
* Prefetch: sequential reads of ``.feed`` (and of block files one after another) call
  ``feed.prefetch(start, end)`` about ``PREFETCH_BYTES`` ahead of the reader, so remote
  copies run at replication speed.
* Local whole-feed reads: a read whose blocks are all held here is read in one go into
  one reusable buffer (``Feed.read_run``: a short range scan, one ``preadv`` per stretch
  of the data file, each block checked against its crc32c) and replied from it.
* Caching (:func:`file_info`): a file whose size is exact (:mod:`hyperfs.fs.sizes`) is
  read through the kernel's page cache, so mmap works and re-reads never reach us; a
  feed's files keep their cached pages from one open to the next (a feed never changes),
  a name's do not (it may be bound to another feed). Every other file, and ``.status``
  (made at open, size 0), uses direct I/O, which reads to the true end of the data.
"""

from __future__ import annotations

import errno
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pyfuse3
import trio

from hyperfs.feeds.feed import Feed
from hyperfs.fs import sizes
from hyperfs.fs.errnos import fail
from hyperfs.fs.inodes import BlockFile, FeedSlot, NameFile, StatusFile, WholeFeed
from hyperfs.store.blocks import ReadBuffer

log = logging.getLogger("hyperfs.fs")

Fetch = Callable[[Feed, int], Awaitable[bytes | None]]
"""Waits for a block that is not local; raises TimeoutError when it gives up."""

POLL_INTERVAL = 0.1
"""How often a waiting read checks whether its reader gave up (signal pending)."""
PREFETCH_BYTES = 16 << 20

# Signals that end a process by default (or that a shell sends to stop a reader).
_GIVE_UP = 0
for _sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGHUP, signal.SIGQUIT,
             signal.SIGPIPE):
    _GIVE_UP |= 1 << (_sig - 1)

_SIGKILL = 1 << (signal.SIGKILL - 1)  # cannot be blocked


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


class Blocks:
    """Blocks for readers: from storage when local, else awaited through ``fetch``."""

    def __init__(self, fetch: Fetch) -> None:
        self.fetch = fetch
        self.buffer = ReadBuffer()
        """What whole-feed reads of held blocks are read into and replied from, one for
        every reader (:meth:`WholeReader.read`)."""

    async def get(self, state: FeedSlot, index: int, pid: int) -> bytes | None:
        """Block ``index`` (None past the feed's end), waited for on behalf of ``pid``."""
        feed = state.open()
        if feed.blocks is not None and index >= feed.blocks:
            return None
        data = feed.read_local(index)
        return data if data is not None else await self._wait(feed, index, pid)

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
            raise fail(errno.EINTR)
        if failure and isinstance(failure[0], TimeoutError):
            log.info("feed %s: %s", feed.hex and feed.hex[:16], failure[0])
            raise fail(errno.ETIMEDOUT)
        raise failure[0]


def prefetch(state: FeedSlot, index: int) -> None:
    """Ask the network for the blocks after ``index`` a reader will want next."""
    feed = state.open()
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
    if start < end:
        feed.prefetch(start, end)


# -- open files --------------------------------------------------------------------------


@dataclass(slots=True)
class StatusReader:
    """An open ``.status``: the JSON as it was when opened."""

    data: bytes

    async def read(self, off: int, size: int) -> bytes | memoryview:
        return memoryview(self.data)[off : off + size]


@dataclass(slots=True)
class BlockReader:
    """An open block file."""

    blocks: Blocks
    slot: FeedSlot
    index: int
    pid: int

    async def read(self, off: int, size: int) -> bytes | memoryview:
        state = self.slot
        sequential = self.index == state.last_block_read + 1
        state.last_block_read = self.index
        if sequential:  # block files read one after another: fetch ahead like .feed
            prefetch(state, self.index)
        data = await self.blocks.get(state, self.index, self.pid)
        if data is None:
            return b""
        return memoryview(data)[off : off + size]


@dataclass(slots=True)
class WholeReader:
    """An open ``.feed`` (or name): its cursor says block ``next_block`` starts at byte
    ``next_start``; it keeps a block larger than a read (the one read last)."""

    blocks: Blocks
    slot: FeedSlot
    pid: int
    next_block: int = 0
    next_start: int = 0
    cached: tuple[int, bytes] | None = None
    checked: int = 0
    """Blocks 0 .. checked-1 were read in order (their sizes seen: sizes.read_in_order)."""

    async def read(self, off: int, size: int) -> bytes | memoryview:
        """Bytes ``off .. off+size`` of the feed's blocks laid end to end: at once from
        the blocks held here when they all are (:meth:`_read_held`), else block by block,
        waiting for those that are not."""
        index, start = self._find(off)
        held = self._read_held(index, start, off, size)
        if held is not None:
            return held
        parts: list[memoryview] = []
        want = size
        while want > 0:
            data = await self._block(index)
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
        self.next_block, self.next_start = index, start
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def _find(self, off: int) -> tuple[int, int]:
        """The block holding byte ``off`` and where it starts: arithmetically where the
        blocks before it are known to be of one size (the whole feed, or what this reader
        read in order), else walking on from the cursor (or from the start, for a backward
        seek): a feed's first block says nothing of the sizes of the others. (Never for a
        live feed: its last block, which may be shorter, moves on.)"""
        uniform = self.slot.uniform and not self.slot.peek().live
        block_size = sizes.block_size(self.slot) if uniform else None
        if block_size and (self.slot.exact or off // block_size <= self.checked):
            index = off // block_size
            return index, index * block_size
        if off >= self.next_start:
            return self.next_block, self.next_start
        return 0, 0

    def _read_held(self, index: int, start: int, off: int, size: int) -> memoryview | None:
        """The read from blocks held here, ``index`` (at byte ``start``) on, or None when
        one of them is not (or is damaged): then the caller waits block by block.

        The blocks go into the :class:`Blocks`' one buffer, read as a run (one range scan,
        one ``preadv`` per stretch of the data file: :meth:`.Feed.read_run`), and the reply
        is a view of it. That is safe with one buffer for every reader because nothing
        awaits between filling it and returning, and pyfuse3 copies the reply into the
        kernel before any other task runs."""
        cached = self.cached
        if cached is not None and cached[0] == index and off + size <= start + len(cached[1]):
            return memoryview(cached[1])[off - start : off - start + size]
        feed = self.slot.open()
        if index not in feed.bitfield:
            return None
        prefetch(self.slot, index)
        end = off + size
        run = feed.read_run(index, end - start, self.blocks.buffer)
        if start + len(run.data) < end and (feed.blocks is None
                                            or index + len(run.lengths) < feed.blocks):
            return None  # a block before the read's end is not held (or was damaged)
        at = start  # where block ``index`` begins
        if not self.slot.exact:  # once every size is known there is nothing to learn
            for number, length in enumerate(run.lengths, index):
                self._seen(number, length)
        for length in run.lengths:
            if at + length > end:  # the next read begins in this block
                if at + length - end >= size:  # and likely ends in it: keep it
                    self.cached = (index, bytes(run.data[at - start : at - start + length]))
                break
            index, at = index + 1, at + length
        self.next_block, self.next_start = index, at
        return run.data[off - start : end - start]

    def _seen(self, index: int, length: int) -> None:
        """Block ``index`` was read and has ``length`` bytes: learn the feed's sizes."""
        if index == self.checked:
            self.checked = sizes.read_in_order(self.slot, index, length)
        else:
            sizes.check_uniform(self.slot, index, length)

    async def _block(self, index: int) -> bytes | None:
        """Block ``index``: the one read last, else from storage or fetched, with
        prefetch ahead when it is not here."""
        if self.cached is not None and self.cached[0] == index:
            return self.cached[1]
        feed = self.slot.open()
        if index not in feed.bitfield:
            prefetch(self.slot, index)
        data = await self.blocks.get(self.slot, index, self.pid)
        if data is None:
            return None
        self.cached = (index, data)
        self._seen(index, len(data))
        return data


Reader = StatusReader | BlockReader | WholeReader


def file_info(node: StatusFile | NameFile | WholeFeed | BlockFile, fh: int) -> pyfuse3.FileInfo:
    """The reply to opening ``node`` for reading as handle ``fh``: through the page cache
    when its size is exact, else direct I/O (see the module's docstring)."""
    match node:
        case BlockFile(state, index):
            exact = sizes.exact_block_size(state, index) is not None
        case NameFile(slot=None):
            exact = True  # an empty file: its size, 0, is known
        case WholeFeed(slot=FeedSlot() as state) | NameFile(slot=FeedSlot() as state):
            exact = sizes.exact_whole_size(state) is not None
        case StatusFile():
            exact = False
    if exact:
        # The kernel may hold a guess of this size (from a listing, or from before the
        # size was known) and would trust it: make it ask again before it reads.
        try:
            pyfuse3.invalidate_inode(node.ino, attr_only=True)
        except OSError as exc:  # not cached in the kernel: nothing to forget
            log.debug("invalidating inode %d: %s", node.ino, exc)
    # keep_cache for names too: an overwritten name gets a new inode (Namespace.renumber),
    # so the pages cached for an inode are always of the one feed it showed.
    return pyfuse3.FileInfo(fh=fh, direct_io=not exact, keep_cache=exact)
