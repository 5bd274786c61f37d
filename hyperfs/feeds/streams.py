"""Writing a feed as a stream of bytes or blocks (the seed's createWriteStream)."""

from __future__ import annotations

from hyperfs.base.errors import FeedFinalized
from hyperfs.feeds.feed import BytesLike, Feed
from hyperfs.feeds.hashing import Hashed
from hyperfs.store.entry import Entry


class WriteStream:
    """Appends to a new feed in batches; closing it finalizes the feed.

    With ``block_size`` set, what is written is a byte stream cut into blocks of that
    size (the last one may be shorter); without it, every write is one block, as in the
    seed. Blocks are buffered up to a few MiB so each LevelDB batch is large. Blocks cut
    from a ``bytes`` write are views of it, not copies (bytes never change); other
    buffers may be reused by the writer, so what is kept of them is copied.

    One batch is in flight: a full batch starts being hashed (:class:`.hashing.Hashed`)
    and the batch before it is appended meanwhile, so the worker threads hash while the
    caller writes (measured: 2,000 64 KiB appends ...). :meth:`flush` and :meth:`close`
    append everything. An append that fails (a full disk) fails the stream: each later
    call raises the same error, so no block after a lost one is ever appended.
    """

    FLUSH_BYTES = 2 << 20
    FLUSH_BLOCKS = 2048
    """A batch: two are held (one hashed and written, one filling), 4 MiB in all."""

    def __init__(self, feed: Feed, block_size: int | None = None) -> None:
        if block_size is not None and block_size <= 0:
            raise ValueError("block size must be positive")
        self.feed = feed
        self.block_size = block_size
        self._pending: list[bytes | memoryview] = []
        self._pending_bytes = 0
        self._partial = bytearray()
        self._hashing: Hashed | None = None  # the batch in flight
        self._failed: BaseException | None = None

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
            await self._send()

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

    async def _send(self) -> None:
        """Start hashing the buffered blocks, then append the batch sent before them."""
        batch, self._pending, self._pending_bytes = Hashed(self._pending), [], 0
        await self._append(batch)

    async def _append(self, batch: Hashed | None) -> None:
        previous, self._hashing = self._hashing, batch
        if previous is not None:
            try:
                await self.feed.append(previous)
            except Exception as exc:  # (a cancel comes after the append's write: not lost)
                self._failed, self._hashing = exc, None
                raise

    async def flush(self) -> None:
        """Append every whole block written so far."""
        self._check()
        if self._pending:
            await self._send()
        await self._append(None)

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

    async def __aenter__(self) -> WriteStream:
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            await self.close()
