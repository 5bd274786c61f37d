"""Writing a feed as a stream of bytes or blocks (the seed's createWriteStream)."""

from __future__ import annotations

from collections.abc import Callable

import trio

from hyperfs.base.errors import FeedFinalized
from hyperfs.feeds.feed import BytesLike, Feed
from hyperfs.store.entry import Entry


class WriteStream:
    """Appends to a new feed in batches; closing it finalizes the feed.

    With ``block_size`` set, what is written is a byte stream cut into blocks of that
    size (the last one may be shorter); without it, every write is one block, as in the
    seed. Blocks are buffered up to a few MiB so each LevelDB batch is large. Blocks cut
    from a ``bytes`` write are views of it, not copies (bytes never change); other
    buffers may be reused by the writer, so what is kept of them is copied.

    An append that fails (a full disk) fails the stream: every later call raises that
    error again, so no block is ever appended after blocks that were lost.
    """

    FLUSH_BYTES = 4 << 20
    FLUSH_BLOCKS = 4096
    READ_SIZE = 4 << 20
    """What :meth:`write_from` asks of each read."""

    def __init__(self, feed: Feed, block_size: int | None = None) -> None:
        if block_size is not None and block_size <= 0:
            raise ValueError("block size must be positive")
        self.feed = feed
        self.block_size = block_size
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._partial = bytearray()
        self._failed: Exception | None = None

    @property
    def id(self) -> bytes | None:
        return self.feed.id

    @property
    def blocks(self) -> int | None:
        return self.feed.blocks

    async def write(self, data: BytesLike) -> None:
        self._check()
        if self.block_size is None:
            self._pending.append(bytes(data))
            self._pending_bytes += len(data)
        else:
            self._cut(data)
        if self._pending_bytes >= self.FLUSH_BYTES or len(self._pending) >= self.FLUSH_BLOCKS:
            await self.flush()

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self.feed.id is not None:
            raise FeedFinalized("the stream is closed")

    def _cut(self, data: BytesLike) -> None:
        size = self.block_size
        assert size is not None
        view = memoryview(data)
        if self._partial:
            take = size - len(self._partial)
            self._partial += view[:take]
            view = view[take:]
            if len(self._partial) < size:
                return
            self._pending.append(bytes(self._partial))
            self._partial.clear()
            self._pending_bytes += size
        whole = len(view) - len(view) % size
        keep = (lambda part: part) if isinstance(data, bytes) else bytes
        for offset in range(0, whole, size):
            self._pending.append(keep(view[offset : offset + size]))
        self._pending_bytes += whole
        self._partial += view[whole:]

    async def flush(self) -> None:
        """Append every whole block written so far."""
        self._check()
        if self._pending:
            pending, self._pending, self._pending_bytes = self._pending, [], 0
            try:
                await self.feed.append(pending)
            except Exception as exc:  # (a cancel comes after the append's write: no loss)
                self._failed = exc
                raise

    async def close(self, name: bytes | None = None, *, entry: Entry | None = None,
                    replace: bool = False) -> bytes:
        """Append what is buffered and finalize (``name``, ``entry``, ``replace``: as
        :meth:`Feed.finalize`); returns the feed id."""
        self._check()
        if self._partial:
            self._pending.append(bytes(self._partial))
            self._partial.clear()
        await self.flush()
        return await self.feed.finalize(name, entry=entry, replace=replace)

    async def write_from(self, read: Callable[[int], bytes]) -> None:
        """Write all that the blocking ``read(size)`` gives, up to its end (``b""``), each
        read in a worker thread (a file or a pipe, read 4 MiB at a time)."""
        while chunk := await trio.to_thread.run_sync(read, self.READ_SIZE):
            await self.write(chunk)

    def abort(self) -> None:
        """Stop what the stream still does in the background (it is being discarded);
        a plain stream does nothing in the background."""

    async def __aenter__(self) -> WriteStream:
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            await self.close()
