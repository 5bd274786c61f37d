"""Adding a big file (`hyperfs add FILE`): its bytes copied into the feed's data file in the
kernel while hash worker processes hash them, the index written from their results.

An append through Python costs ~2 s of CPU a GiB here (SHA-256 0.77, the kernel's read
and write copies ~1, Python per block ~0.3), all in one process; hashing in threads beside
the writes lost more to the GIL than it overlapped. So the work is split across the two
cores: a worker thread copies the file into the data file with copy_file_range (one
in-kernel copy instead of a read and a write), in chunks; after each chunk two hash
workers (:mod:`.hashworker`, taking chunks in turn) hash *the data file's* bytes of it,
so the leaf hashes and crc32c describe what is stored, whatever the source does
meanwhile; and the event loop appends the chunks' blocks from their results, in order
(:meth:`.feed.Feed.append_stored`), then the caller finalizes as after any append. The
source's pages leave the page cache behind the copy (:data:`DROP_SOURCE`): the feed's
file is written into them.

The crash rule holds as for appends: a chunk's ``l`` keys and bits are written only after
its bytes, and the feed is pending until finalize, so a kill at any moment leaves at most
an unfinished feed, discarded at the next open.

Small files keep the streaming path (:class:`.streams.WriteStream`): starting two
processes costs more than they save below :data:`MIN_BYTES`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from hyperfs.base.errors import HyperfsError
from hyperfs.feeds.feed import Feed
from hyperfs.feeds.hashers import Hashers, block_lengths, open_hashers
from hyperfs.store.store import Store

MIN_BYTES = 16 << 20
"""Files at least this large are added by :func:`copy_into`; smaller ones by a stream."""
CHUNK_BYTES = 16 << 20
"""Bytes a stream into a big file (:mod:`.filestream`) hands to the hash workers at once."""
COPY_BYTES = 64 << 20
"""Bytes :func:`copy_into` copies, then hashes, in one step: the copying thread's, the
workers' and the index's unit of work. Each step goes through the event loop (the copy
waits for it to start the next one, and 4 threads share 2 cores here), so fewer, larger
steps keep the two cores busier: 4 GiB added in 4.4-7.5 s at 64 MiB against 5.1-9.1 s
at 16 MiB, in runs alternated (the hash workers still map 16 MiB at a time)."""
AHEAD = 2
"""Chunks the copy may run ahead of the index: enough to keep both hash workers fed."""
DROP_SOURCE = True
"""Whether the source's pages leave the page cache once copied (POSIX_FADV_DONTNEED,
as `dd iflag=nocache`, `rsync --drop-cache` and borg do with what they read once): the
cache then holds the file's bytes once, as the feed's, not twice, and the copy writes
the feed's file into the pages the source just gave back. On this project's VM that is
most of the copy's cost: a page the guest has not used lately is backed by the host
again on first touch (see :mod:`hyperfs.store.dropbehind`), and copy_file_range of
4 GiB took 6.3-7.0 s of CPU into fresh pages against 1.9-2.8 s dropping behind.
Dirty pages of the source are left alone (only started on their way to the disk)."""


class SourceChanged(HyperfsError):
    """The file being added shrank while it was copied: no feed was made of it."""


def worth_copying(fd: int) -> bool:
    """Whether the open file ``fd`` is added by :func:`copy_into` (a regular file of at
    least :data:`MIN_BYTES`) rather than read as a stream (pipes, small files)."""
    info = os.fstat(fd)
    return stat.S_ISREG(info.st_mode) and info.st_size >= MIN_BYTES


async def copy_into(feed: Feed, store: Store, source: int, block_size: int, *,
                    name: str = "the file", chunk_bytes: int = COPY_BYTES) -> None:
    """Append the whole file ``source`` (an open descriptor, read from offset 0) to the
    writable ``feed`` in blocks of ``block_size``, to its end (a file that grows meanwhile
    is taken to where it ends; one that shrinks raises :class:`SourceChanged`), copied
    and hashed ``chunk_bytes`` at a time (rounded down to whole blocks).

    The hash workers and the copying thread end with it, also when it fails or is
    cancelled; the feed is then left unfinished, for the caller to discard."""
    size = os.fstat(source).st_size
    chunk = max(1, chunk_bytes // block_size) * block_size
    files = store.data.files
    base = files.end(feed.num)  # (creates the file, for the workers to open)
    copied_send, copied = trio.open_memory_channel[tuple[int, int]](AHEAD)
    with first_error():
        async with open_hashers(files.path(feed.num), block_size,
                                1 if size < 2 * chunk else 2) as hashers, \
                trio.open_nursery() as nursery:

            async def copy() -> None:
                async with copied_send:
                    done = await _copy(store, feed.num, source, base, chunk, hashers,
                                       copied_send)
                if done < size:
                    raise SourceChanged(f"{name} shrank from {size} to {done} bytes while it "
                                        "was being added; nothing was added")

            nursery.start_soon(copy)
            async for offset, length in copied:
                await feed.append_stored(offset, block_lengths(length, block_size),
                                         await hashers.results())


async def _copy(store: Store, num: int, source: int, base: int, chunk: int, hashers: Hashers,
                copied: trio.MemorySendChannel[tuple[int, int]]) -> int:
    """Copy ``source`` to feed ``num``'s file (which ends at ``base``) a chunk at a time
    in a worker thread, each chunk then given to the hashers and announced on ``copied``
    as (offset in the data file, length); returns how many bytes, at the source's end."""
    done = 0
    while True:
        got = await trio.to_thread.run_sync(_copy_chunk, store, num, source, done, chunk)
        if got:
            await hashers.submit(base + done, got)
            await copied.send((base + done, got))
            done += got
        if got < chunk:
            return done


def _copy_chunk(store: Store, num: int, source: int, offset: int, length: int) -> int:
    """Copy the source's bytes ``[offset, offset + length)`` to the end of feed ``num``'s
    file, then drop them from the page cache (a worker thread's call): see
    :data:`DROP_SOURCE`."""
    got = store.data.copy_in(num, source, offset, length)
    if got and DROP_SOURCE:
        os.posix_fadvise(source, offset, got, os.POSIX_FADV_DONTNEED)
    return got


@contextmanager
def first_error() -> Iterator[None]:
    """The error of a nursery as itself, not in a group: the first one that is not a
    cancellation (a worker that died fails both the submit and the read of its results;
    one message says it). A caller maps it to a message or an errno."""
    try:
        yield
    except BaseExceptionGroup as group:
        found = _first_leaf(group)
        if found is None:
            raise
        raise found from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    for error in group.exceptions:
        found = _first_leaf(error) if isinstance(error, BaseExceptionGroup) else (
            None if isinstance(error, trio.Cancelled) else error)
        if found is not None:
            return found
    return None
