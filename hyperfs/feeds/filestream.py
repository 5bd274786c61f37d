"""A byte stream into a new feed whose bytes go straight to its data file, hashed by a
worker process (:mod:`.hashers`): how a copy into the mount is written.

A :class:`.streams.WriteStream` hashes and writes each batch of blocks before the next
write is taken, on the event loop: a mount taking a `cp` of a big file could not take
in the next MiB meanwhile. Here a write only puts its bytes at the end of the data file
(``pwrite``: the page cache), and each :data:`.ingest.CHUNK_BYTES` written is handed to a
hash worker, whose leaf hashes and crc32c of the stored bytes become the index
(:meth:`.feed.Feed.append_stored`) while the writer goes on. A write waits only when the
worker is more than :data:`LAG` chunks behind. Closing hashes the rest (the last block
may be partial) and finalizes.

Small files stay a plain stream: the first :data:`.ingest.MIN_BYTES` are buffered and
appended as usual, so `tar -x` of small files starts no process; past that the stream
switches to the data file, where the blocks appended so far end.

The crash rule holds: bytes first, index second, and the feed is pending until finalize.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Awaitable

import trio

from hyperfs.feeds.feed import BytesLike, Feed
from hyperfs.feeds.hashers import Hashers, block_lengths, open_hashers
from hyperfs.feeds.ingest import CHUNK_BYTES, MIN_BYTES, first_error
from hyperfs.feeds.streams import WriteStream
from hyperfs.store.entry import Entry
from hyperfs.store.store import Store

LAG = 2
"""Chunks a hash worker may fall behind the writes before a write waits for it."""


class FileWriteStream(WriteStream):
    """A :class:`WriteStream` of ``block_size`` blocks for big files (module docstring)."""

    def __init__(self, feed: Feed, block_size: int, store: Store) -> None:
        super().__init__(feed, block_size)
        self._store = store
        self._hashers: Hashers | None = None
        self._workers = contextlib.AsyncExitStack()
        self._chunk = max(1, CHUNK_BYTES // block_size) * block_size
        self._hashed_to = 0  # the data file's bytes before this are submitted
        self._taken: deque[tuple[int, int]] = deque()  # (offset, length) not appended yet
        self._total = 0

    async def write(self, data: BytesLike) -> None:
        self._check()
        self._total += len(data)
        if self._hashers is None:
            await super().write(data)
            if self._total >= MIN_BYTES:
                await self._guarded(self._switch())
            return
        files = self._store.data.files
        try:
            files.write(self.feed.num, files.end(self.feed.num), (data,),
                        durable=self._store.durable)
        except OSError as exc:
            self._failed = exc
            raise
        await self._guarded(self._submit("chunks", LAG))

    async def _switch(self) -> None:
        """From buffered appends to the data file: what is appended so far ends where the
        file ends; the partial block buffered starts the bytes written from now on."""
        await super().flush()
        files, num = self._store.data.files, self.feed.num
        self._hashed_to = files.end(num)
        self._hashers = await self._workers.enter_async_context(
            open_hashers(files.path(num), self.block_size or 1, 1))
        if self._partial:
            files.write(num, self._hashed_to, (bytes(self._partial),),
                        durable=self._store.durable)
            self._partial.clear()

    async def _submit(self, upto: str, lag: int) -> None:
        """Hand the worker what is written: every full chunk (``upto="chunks"``), every
        whole block (``"blocks"``: a fsync) or all of it (``"all"``: a close, the last
        block perhaps partial); then append the results of all but the last ``lag``
        runs handed over, waiting for them as need be."""
        hashers, size = self._hashers, self.block_size
        assert hashers is not None and size is not None
        end = self._store.data.files.end(self.feed.num)
        while (left := end - self._hashed_to) >= (self._chunk if upto == "chunks" else 1):
            step = min(left, self._chunk)
            if upto == "blocks":
                step -= step % size
                if not step:
                    break
            await hashers.submit(self._hashed_to, step)
            self._taken.append((self._hashed_to, step))
            self._hashed_to += step
        while len(self._taken) > lag:
            offset, length = self._taken.popleft()
            await self.feed.append_stored(offset, block_lengths(length, size),
                                          await hashers.results())

    async def flush(self) -> None:
        """Append every whole block written so far (a fsync)."""
        self._check()
        if self._hashers is None:
            await super().flush()
            return
        await self._guarded(self._submit("blocks", 0))

    async def spill(self, fd: int) -> int:
        """Copy every byte written so far to the start of the file ``fd``; returns how
        many. A writer that goes back over what it wrote goes on in a scratch file
        (:mod:`hyperfs.fs.scratch`), and this stream is then aborted and discarded."""
        self._check()
        if self._hashers is None:
            await super().flush()  # the whole blocks buffered, into the data file
        files, num = self._store.data.files, self.feed.num
        end = files.end(num)
        await trio.to_thread.run_sync(files.copy_out, num, fd, end)
        tail = bytes(self._partial)  # a partial block not yet in the data file
        if tail:
            os.pwrite(fd, tail, end)
        return end + len(tail)

    async def close(self, name: bytes | None = None, *, entry: Entry | None = None,
                    replace: bool = False) -> bytes:
        """Append what is written, end the worker and finalize (as :meth:`WriteStream.close`)."""
        if self._hashers is None:
            return await super().close(name, entry=entry, replace=replace)
        self._check()
        await self._guarded(self._submit("all", 0))
        await self._guarded(self._workers.aclose())
        return await self.feed.finalize(name, entry=entry, replace=replace)

    async def _guarded(self, step: Awaitable[None]) -> None:
        """Run ``step``; a failure fails the stream (every later call raises it again)."""
        try:
            with first_error():
                await step
        except Exception as exc:
            self._failed = exc
            raise

    def abort(self) -> None:
        """Kill the hash worker now (the upload is discarded)."""
        if self._hashers is not None:
            self._hashers.kill()
