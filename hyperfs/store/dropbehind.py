"""Dropping a download's pages from the page cache behind it, once they are on the disk.

A download writes each block once, into fresh page-cache pages. On the VM this project is
measured on, filling a fresh page costs ~4x the CPU of filling one the guest freed
lately (0.3 s per 512 MiB written to tmpfs while the pages are recent, 1.1-1.4 s past
them: the host backs guest memory lazily and takes idle memory back: DAMON pageout, free
page reporting); a 4 GiB download spent ~40 % of the fetcher's time in the kernel's copy
into the page cache (perf: ``copy_folio_from_iter_atomic``). Written back and dropped a
few windows behind the download, the pages go back to the free lists and the next
blocks reuse them while they are still recent: the CPU per byte stays flat at any size
(measured: 0.37 s per 512 MiB written throughout, against 0.2 rising to 1.1-1.3 s).
Anywhere else it is what a streaming writer owes the rest of the machine (`dd
oflag=nocache`, `rsync --drop-cache`): a large download does not push everything else out
of the page cache, and its writeback runs at a steady pace instead of starting in a
burst once dirty pages pass ``vm.dirty_background_ratio``.

Only bytes put (fetched blocks) are dropped, and only past a feed's first
:data:`KEEP_CACHED` bytes: a small feed stays wholly in the page cache for its readers.
The work runs in one worker thread (the syscalls drop the GIL), so a slow disk delays the
dropping, never the download; while a feed's previous window is still being written, its
next windows wait and join it. Nothing is lost: sync_file_range's waits and
``POSIX_FADV_DONTNEED`` leave dirty pages alone, so a page written again meanwhile stays.
Nor is anything promised: this is no fdatasync (durability stays the commit's), and the
crash rule is untouched (the bytes are written, by pwrite, before the index says so).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections import deque
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

WINDOW = 8 << 20
"""Bytes written to a feed between two submissions: each window's writeback is started
when it is complete, and the window :data:`LAG` windows before it is waited for and
dropped."""
LAG = 4
"""Windows kept cached behind the newest: a reader close behind the download (`hyperfs
cat`, a mount's read-ahead) still finds its blocks in the page cache."""
KEEP_CACHED = 256 << 20
"""A feed's first bytes put are never dropped."""

_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4  # sync_file_range's flags (linux/fs.h)


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """libc's sync_file_range (os has none), or None where there is none. (From the
    symbols the process has loaded: find_library would run ldconfig at every start.)"""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_SYNC_FILE_RANGE = _sync_file_range()
_WORKER = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hyperfs-drop")

Span = tuple[int, int]  # (start, end) of file offsets


def _write_and_drop(fd: int, start: Span, drop: list[Span]) -> None:
    """Start writing back ``start``; wait for each span of ``drop`` to be on the disk and
    drop its pages. Runs in the worker thread; closes ``fd`` (a duplicate)."""
    assert _SYNC_FILE_RANGE is not None
    try:
        if _SYNC_FILE_RANGE(fd, start[0], start[1] - start[0], _WRITE):
            raise OSError(ctypes.get_errno(), "sync_file_range")
        for begin, end in drop:
            if _SYNC_FILE_RANGE(fd, begin, end - begin, _WAIT_BEFORE | _WRITE | _WAIT_AFTER):
                raise OSError(ctypes.get_errno(), "sync_file_range")
            os.posix_fadvise(fd, begin, end - begin, os.POSIX_FADV_DONTNEED)
    except OSError as exc:  # the pages stay cached (and dirty, if they were): nothing lost
        log.debug("dropping written pages behind a download: %s", exc)
    finally:
        os.close(fd)


@dataclass
class _Feed:
    put: int = 0
    """Bytes put so far (this run)."""
    span: Span | None = None
    """What the window being filled covers."""
    filled: int = 0
    """Bytes written in it."""
    behind: deque[Span] = field(default_factory=deque)
    """Windows submitted, newest last, not yet dropped."""
    running: futures.Future[None] | None = None


class DropBehind:
    """Tells the worker thread what to write back and drop, for every feed being put
    (the sizes are the module's constants unless given)."""

    def __init__(self, *, window: int = WINDOW, lag: int = LAG,
                 keep: int = KEEP_CACHED) -> None:
        self._feeds: dict[int, _Feed] = {}
        self._window, self._lag, self._keep = window, lag, keep

    def wrote(self, num: int, offset: int, length: int,
              duplicate: Callable[[int], int | None]) -> None:
        """``length`` bytes were put at ``offset`` of feed ``num``'s data file;
        ``duplicate(num)`` is a duplicate of its descriptor (None: it has none)."""
        if _SYNC_FILE_RANGE is None:
            return
        feed = self._feeds.get(num)
        if feed is None:
            feed = self._feeds[num] = _Feed()
        feed.put += length
        if feed.put <= self._keep:
            return
        end = offset + length
        span = feed.span
        feed.span = (offset, end) if span is None else (min(span[0], offset), max(span[1], end))
        feed.filled += length
        if feed.filled < self._window or (feed.running is not None and not feed.running.done()):
            return
        fd = duplicate(num)
        if fd is None:
            return
        window, feed.span, feed.filled = feed.span, None, 0
        feed.behind.append(window)
        drop = [feed.behind.popleft() for _ in range(len(feed.behind) - self._lag)]
        feed.running = _WORKER.submit(_write_and_drop, fd, window, drop)

    def wait(self) -> None:
        """Wait for every job submitted so far (for tests: what was dropped is known)."""
        for feed in self._feeds.values():
            if feed.running is not None:
                feed.running.result()

    def forget(self, num: int) -> None:
        """Feed ``num``'s data file is gone (a job still running has its own descriptor)."""
        self._feeds.pop(num, None)

    def close(self) -> None:
        """Forget every feed; a job still running finishes on its own descriptor (at most
        one per feed: an exiting process waits for it, i.e. for a few windows to reach
        the disk)."""
        self._feeds.clear()
