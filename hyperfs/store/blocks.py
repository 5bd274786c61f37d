"""Block data in files: one sparse file per feed under ``<db>/data/``; LevelDB is the index.

Why files: LevelDB writes every value to its log, then rewrites it at each level a
compaction moves it through, so a database whose bytes are mostly block data (written
once, never changed) got slower the more it stored. In a file, a block is written once,
read with one ``pread``, and a feed is deleted with one unlink. LevelDB keeps what is
small and changes: tree nodes, bitfields, names, and per block an ``l`` key saying where
its bytes are (offset, length) and their crc32c (:data:`.layout.LOCATION_VALUE`).

Where a block goes. Readers never need this rule (they follow the ``l`` key); writers
follow it so that no write ever lands on bytes an ``l`` key points at:

- appended blocks (a feed made here) go at the end of the file, one after another, so
  a file that was added is stored byte for byte as it was;
- a block that arrives by put (verified, from the network, in any order) goes to its
  *slot*, ``base + index * size``, when it fits: ``size`` is learned from the first block
  put that is not the feed's last (finalize records it too, when every appended block
  but the last had one size), ``base`` is where the file ended then (0, unless the last
  block came first). The last block fits if it is no larger than a slot. Positional
  writes leave holes where blocks are missing: the file is sparse, and fills in to the
  feed's bytes in order;
- a block that does not fit (a feed of mixed sizes) goes past both the slots and the end
  of the file.

The three regions never overlap, and a slot is rewritten only after its block was
dropped (its ``l`` key deleted). The slots are recorded (``s`` key) in the batch of the
block that taught them; were that batch lost, they are learned again past the file's end,
which is past every byte an ``l`` key can point at.

The crash rule: bytes first, index second. A block's bytes are written before the LevelDB
batch that writes its ``l`` key and sets its bit, so a process killed at any moment leaves
at most bytes nothing points at, never an ``l`` key without its bytes. finalize fdatasyncs
the file before its synced batch, so a finalized feed survives a power cut too, unless
the store is not durable (:attr:`.store.Store.durable`: a mount, `hyperfs add` without
``--fsync``), where the files written are synced later, all at once, by a commit. A block
whose index outlived its bytes anyway (a power cut during a download, or before a commit)
fails its crc32c when read, and is dropped and fetched again like any damage.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections import OrderedDict
from collections.abc import Collection, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import NamedTuple

from hyperfs.store.holes import allocated, punch_hole
from hyperfs.store.layout import data_name

BytesLike = bytes | bytearray | memoryview

IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024

SYNC_EVERY = 32 << 20
"""A file written for a feed that will be synced (appends, before finalize) is synced in
the background each time this much more was written, so the disk writes while the next
blocks are hashed, and finalize's fdatasync has at most this much left to wait for
(measured: the append and finalize of 131 MB in 64 KiB blocks 1.1-1.4x faster)."""

_SYNCER = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hyperfs-sync")
_MAKER = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="hyperfs-create")
_OPEN = os.O_RDWR | os.O_CLOEXEC


def _sync_and_close(fd: int) -> None:
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


_NOT_BETWEEN = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
"""copy_file_range refusals that mean only 'not between these two files' (another file
system on an older kernel, a special file): copy through a buffer instead."""


def _copy_range(source: int, fd: int, length: int, source_offset: int, offset: int) -> int:
    """One step of :meth:`DataFiles.copy_in`: how many bytes it copied (0 at the end)."""
    try:
        return os.copy_file_range(source, fd, length, source_offset, offset)
    except OSError as exc:
        if exc.errno not in _NOT_BETWEEN:
            raise
    return os.pwrite(fd, os.pread(source, min(length, 1 << 20), source_offset), offset)


def sync_and_close(fds: Sequence[int]) -> None:
    """fdatasync then close each of ``fds`` (from :meth:`DataFiles.take_written`); all
    are closed even when one fails, and the first failure is raised."""
    failure: OSError | None = None
    for fd in fds:
        try:
            _sync_and_close(fd)
        except OSError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


class Location(NamedTuple):
    """Where a block's bytes are in its feed's data file, and their crc32c."""

    offset: int
    length: int
    crc: int


ALIGN = 4096
"""Slots begin on a page boundary: a block of a page-multiple size then fills whole
pages, so a file filled out of order stays sparse where blocks are missing, and the page
cache and the disk see whole pages."""


def aligned(offset: int) -> int:
    """``offset`` rounded up to the next multiple of :data:`ALIGN`."""
    return -(-offset // ALIGN) * ALIGN


class ReadBuffer:
    """A reusable buffer for reads of runs of blocks, page aligned (an anonymous mmap),
    grown as needed.

    Why aligned: a ``pread`` from the page cache into a ``bytearray`` (malloc'd, 16 bytes
    past a page boundary) measured 4-5x slower here than into page-aligned memory (1 MiB:
    ~600 against ~130 us): the kernel's copy to a misaligned destination.
    """

    def __init__(self, size: int = 1 << 20) -> None:
        self._map = mmap.mmap(-1, aligned(size))

    def view(self, size: int) -> memoryview:
        """The buffer's first ``size`` bytes (what was in them is lost). A larger size
        takes a new buffer; views of the old one stay valid while they live."""
        if size > len(self._map):
            self._map = mmap.mmap(-1, aligned(size))
        return memoryview(self._map)[:size]


class Slots(NamedTuple):
    """Block ``i`` of a put goes at ``base + i * size`` when it fits (module docstring)."""

    base: int
    size: int

    def place(self, index: int, length: int, blocks: int, end: int) -> int:
        """The offset for block ``index`` of ``length`` bytes in a feed of ``blocks``
        blocks whose file ends at ``end``: its slot, or past the slots and the end."""
        if length == self.size or (index == blocks - 1 and length <= self.size):
            return self.base + index * self.size
        return max(end, self.base + blocks * self.size)


class DataFiles:
    """The data files of one database: open lazily, kept open (up to :attr:`MAX_OPEN`),
    with where each one ends (the next append) remembered between writes."""

    MAX_OPEN = 128

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(exist_ok=True)
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._ends: dict[int, int] = {}
        self._unsynced: dict[int, int] = {}  # bytes written since the last background sync
        self._syncing: dict[int, futures.Future[None]] = {}
        self._written: set[int] = set()  # files written since their last sync
        self._making: dict[int, futures.Future[int]] = {}  # files created in the background
        self._prefix = f"{directory}/"

    def path(self, num: int) -> Path:
        return self.directory / data_name(num)

    def _fd(self, num: int, *, create: bool = False) -> int | None:
        fd = self._fds.get(num)
        if fd is not None:
            self._fds.move_to_end(num)
            return fd
        fd = self._made(num)
        if fd is None:
            try:
                fd = os.open(self._prefix + data_name(num), _OPEN | (os.O_CREAT if create else 0),
                             0o600)  # (no Path: hot)
            except FileNotFoundError:
                return None
        self._fds[num] = fd
        if len(self._fds) > self.MAX_OPEN:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def prepare(self, num: int) -> None:
        """Create feed ``num``'s data file in the background, for a feed about to be
        written (a mount keeps one ready for the next file copied in): creating a file
        costs ext4 from a tenth of a millisecond to more than one of CPU (the more files
        were deleted lately), which the first write then need not wait for."""
        if num not in self._fds and num not in self._making:
            self._making[num] = _MAKER.submit(os.open, self._prefix + data_name(num),
                                              _OPEN | os.O_CREAT, 0o600)

    def _made(self, num: int) -> int | None:
        """The descriptor :meth:`prepare` opened for ``num``, if it did (else None: the
        caller opens the file itself, and so sees any error)."""
        making = self._making.pop(num, None)
        if making is None:
            return None
        try:
            return making.result()
        except OSError:
            return None

    def end(self, num: int) -> int:
        """Past every byte the file holds (or was given this run): where appends go."""
        end = self._ends.get(num)
        if end is None:  # every caller writes next: open (create) the file as write will
            fd = self._fd(num, create=True)
            assert fd is not None
            end = self._ends[num] = os.fstat(fd).st_size
        return end

    def size(self, num: int) -> int:
        """The file's size on disk (0 when it does not exist)."""
        fd = self._fd(num)
        return 0 if fd is None else os.fstat(fd).st_size

    def write(self, num: int, offset: int, chunks: Sequence[BytesLike], *,
              durable: bool = False) -> int:
        """Write ``chunks`` one after another from ``offset``, without joining them;
        returns how many bytes. ``durable``: the file will be synced (:meth:`sync`), so
        sync it in the background as it grows (:data:`SYNC_EVERY`). Raises OSError (a
        full disk: ENOSPC) having marked nothing: the caller's batch then never runs.

        (Starting the writeback with sync_file_range instead was measured: it slowed the
        writes that followed more than it shortened finalize's fdatasync.)"""
        fd = self._fd(num, create=True)
        assert fd is not None
        start = offset
        for first in range(0, len(chunks), IOV_MAX):
            group = chunks[first : first + IOV_MAX]
            want = sum(len(chunk) for chunk in group)
            done = os.pwritev(fd, group, offset)
            if done < want:  # rare (a signal mid-write): finish by hand
                rest = memoryview(b"".join(group))[done:]
                while rest:
                    written = os.pwrite(fd, rest, offset + done)
                    done, rest = done + written, rest[written:]
            offset += want
        self._wrote(num, fd, start, offset - start, durable)
        return offset - start

    def copy_in(self, num: int, source: int, source_offset: int, length: int, *,
                durable: bool = False) -> int:
        """Copy ``length`` bytes of the file ``source`` from ``source_offset`` to the end of
        feed ``num``'s file, in the kernel (copy_file_range: no copy through this
        process; through a buffer where the kernel refuses); returns how many, fewer
        only where ``source`` ends. Blocking (a worker thread's call); ``durable`` and
        errors as :meth:`write`."""
        fd = self._fd(num, create=True)
        assert fd is not None
        start = done = self.end(num)
        try:
            while done - start < length:
                got = _copy_range(source, fd, length - (done - start),
                                  source_offset + done - start, done)
                if not got:
                    break
                done += got
        finally:
            self._wrote(num, fd, start, done - start, durable)
        return done - start

    def copy_out(self, num: int, dest: int, length: int) -> None:
        """Copy the first ``length`` bytes of feed ``num``'s file to the start of the file
        ``dest``, in the kernel where it can (an upload going on in a scratch file:
        :mod:`hyperfs.fs.scratch`). Blocking (a worker thread's call): it opens the file
        itself, as the descriptor cache belongs to the event loop. EIO if the file holds
        fewer bytes."""
        source = os.open(self.path(num), os.O_RDONLY | os.O_CLOEXEC)
        try:
            done = 0
            while done < length:
                got = _copy_range(source, dest, length - done, done, done)
                if not got:
                    raise OSError(errno.EIO, f"feed {num}'s data file ends at {done} bytes, "
                                  f"not {length}")
                done += got
        finally:
            os.close(source)

    def _wrote(self, num: int, fd: int, offset: int, length: int, durable: bool) -> None:
        """``length`` bytes were written at ``offset``: the file's end, its sync."""
        self._ends[num] = max(self.end(num), offset + length)
        self._written.add(num)
        if durable:
            self._sync_behind(num, fd, length)

    def _sync_behind(self, num: int, fd: int, written: int) -> None:
        unsynced = self._unsynced[num] = self._unsynced.get(num, 0) + written
        pending = self._syncing.get(num)
        if unsynced >= SYNC_EVERY and (pending is None or pending.done()):
            self._unsynced[num] = 0
            # Its own descriptor: the cache may close ours while the sync runs.
            self._syncing[num] = _SYNCER.submit(_sync_and_close, os.dup(fd))

    def read(self, num: int, location: Location) -> bytes:
        """The bytes at ``location`` (fewer if the file was truncated behind our back)."""
        fd = self._fd(num)
        if fd is None:
            return b""
        return os.pread(fd, location.length, location.offset)

    def read_at(self, num: int, offset: int, buffer: memoryview) -> int:
        """Fill ``buffer`` from ``offset`` of the file; how many bytes were read (fewer at
        its end, 0 when there is no file)."""
        fd = self._fd(num)
        if fd is None:
            return 0
        return os.preadv(fd, [buffer], offset)

    def sync(self, num: int) -> None:
        """fdatasync: the file's bytes are on the disk, for a batch that must outlive a
        power cut (finalize, a migration step)."""
        pending = self._syncing.pop(num, None)
        if pending is not None:
            pending.result()
        self._unsynced.pop(num, None)
        self._written.discard(num)
        fd = self._fd(num)
        if fd is not None:
            os.fdatasync(fd)

    def duplicate(self, num: int) -> int | None:
        """A duplicate of feed ``num``'s descriptor (None: it has no file), for work done
        on the file in another thread (:mod:`.dropbehind`): it stays valid when this
        cache closes its own; the caller closes it."""
        fd = self._fd(num)
        return None if fd is None else os.dup(fd)

    def take_written(self, keep: Collection[int] = ()) -> list[int]:
        """Duplicates of the descriptors of every file written since it was last synced,
        which from now on count as synced: the caller fdatasyncs and closes them
        (:func:`sync_and_close`), in a worker thread if it likes (the duplicates stay
        valid when this cache closes its own). The files of ``keep`` are left for a later
        call."""
        fds = []
        for num in self._written.difference(keep):
            fd = self._fd(num)
            if fd is not None:
                fds.append(os.dup(fd))
        self._written.intersection_update(keep)
        return fds

    def punch(self, num: int, locations: Sequence[Location]) -> None:
        """Give back the disk space of the bytes at ``locations`` (eviction: only after
        the batch that forgot them was written, so no ``l`` key points at a hole)."""
        fd = self._fd(num)
        if fd is not None:
            for location in locations:
                punch_hole(fd, location.offset, location.length)

    def allocated(self, num: int) -> int:
        """Bytes of disk feed ``num``'s data file takes (holes take none; 0 without one).

        By path unless the file is open already: cache use is summed over every feed
        (the status file, every 2 s), and opening each one would push the descriptors of
        the files being read and written out of :attr:`MAX_OPEN`."""
        fd = self._fds.get(num)
        try:
            return allocated(self._prefix + data_name(num) if fd is None else fd)
        except FileNotFoundError:
            return 0

    def remove(self, num: int) -> None:
        fd = self._fds.pop(num, None)
        if fd is None:
            fd = self._made(num)
        if fd is not None:
            os.close(fd)
        self._ends.pop(num, None)
        self._unsynced.pop(num, None)
        self._written.discard(num)
        self._syncing.pop(num, None)  # a sync still running has its own descriptor
        self.path(num).unlink(missing_ok=True)

    def numbers(self) -> Iterator[int]:
        """The feed number of every data file present, in no particular order."""
        for name in os.listdir(self.directory):
            if len(name) == len(data_name(0)):
                try:
                    yield int(name, 16)
                except ValueError:
                    continue

    def close(self) -> None:
        for num in list(self._making):
            made = self._made(num)
            if made is not None:
                os.close(made)
        while self._fds:
            os.close(self._fds.popitem()[1])
        self._ends.clear()
