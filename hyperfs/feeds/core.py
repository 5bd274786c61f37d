"""A core: the set of feeds kept in one database, and the seed's API over them.

The core owns the store and hands out one :class:`Feed` object per feed id, so every
reader, the filesystem and the replication layer see the same waiters and bitfield.
"""

from __future__ import annotations

import builtins
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from hyperfs.base.callbacks import Callbacks
from hyperfs.base.errors import FeedFinalized, NameTaken
from hyperfs.feeds.feed import BytesLike, Feed, check_index
from hyperfs.store import fsck
from hyperfs.store.store import Store
from hyperfs.tree import merkle
from hyperfs.tree.hashes import parse_id, tree_id

log = logging.getLogger("hyperfs.core")

EVENTS = ("interested", "uninterested", "peer")

DEFAULT_BLOCK_SIZE = 64 * 1024
"""Bytes per block of a file made into a feed (`hyperfs add`, a copy into the mount) when
nobody says otherwise; a :class:`WriteStream` without a block size keeps writes as blocks."""


@dataclass(frozen=True, slots=True)
class FeedInfo:
    """What `hyperfs ls` shows of a stored feed."""

    id: bytes
    blocks: int | None
    local: int


class Core:
    """Feeds in one LevelDB directory. Prefer :func:`open_core` to manage its life."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.store = Store(path)
        self._feeds: dict[bytes, Feed] = {}
        self._handlers: dict[str, Callbacks[...]] = {event: Callbacks() for event in EVENTS}
        self.extensions: list[str] = []
        for num in self.store.pending():
            log.info("discarding writable feed #%d left unfinished by an earlier run", num)
            self.store.delete_feed(num, None)

    def close(self) -> None:
        self.store.close()

    # -- events ------------------------------------------------------------------------

    def on(self, event: str, handler: Callable[..., None]) -> Callable[[], None]:
        """Call ``handler`` on ``event`` ('interested', 'uninterested' with the feed id,
        'peer' with a peer); returns the function that unsubscribes."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; choose from {', '.join(EVENTS)}")
        return self._handlers[event].add(handler)

    def emit(self, event: str, *args: object) -> None:
        self._handlers[event](*args)

    def use(self, extension: str) -> None:
        """Support a protocol extension on peer streams created from now on."""
        if not extension or not isinstance(extension, str):
            raise ValueError("an extension is named by a non-empty string")
        if extension not in self.extensions:
            self.extensions.append(extension)
            self.extensions.sort()

    # -- feeds ---------------------------------------------------------------------------

    def add(self) -> Feed:
        """A new writable feed: append to it, then finalize to give it its id."""
        with self.store.batch() as batch:
            num = self.store.allocate(batch)
            self.store.put_pending(batch, num, True)
        return Feed(self, num, None, None)

    def get(self, feed_id: bytes | str, *, interested: bool = True) -> Feed:
        """The feed with this id, opened (and recorded, to be fetched) if need be.

        ``interested`` opens count as the local side wanting the feed: the core says
        'interested' at the first, and the swarm then asks every peer for it. The swarm
        itself opens feeds a peer names with ``interested=False``, so that one peer's
        request is never revealed to another.
        """
        feed_id = parse_id(feed_id)
        feed = self._feeds.get(feed_id)
        if feed is None:
            num = self.store.lookup(feed_id)
            if num is None:
                with self.store.batch() as batch:
                    num = self.store.allocate(batch)
                    self.store.put_feed(batch, num, feed_id, None)
            feed = self._feeds[feed_id] = Feed(self, num, feed_id, self.store.blocks(num))
        feed.opens += 1
        if interested:
            feed.interest += 1
            if feed.interest == 1:
                self.emit("interested", feed_id)
        return feed

    def discard(self, feed: Feed) -> None:
        """Delete a writable feed that will never be finalized (an aborted upload), now
        rather than at the next open, so a failed copy leaves no data behind."""
        if feed.id is not None:
            raise FeedFinalized("only an unfinalized feed can be discarded")
        self.store.delete_feed(feed.num, None)

    def stored(self, feed_id: bytes | str) -> bool:
        """Whether the database has a record of this feed (without opening it)."""
        return self.store.lookup(parse_id(feed_id)) is not None

    def release(self, feed: Feed, *, interested: bool = True) -> None:
        """Undo one :meth:`get` (with the same ``interested``)."""
        if feed.id is None or self._feeds.get(feed.id) is not feed or feed.opens == 0:
            return
        feed.opens -= 1
        if interested and feed.interest:
            feed.interest -= 1
            if feed.interest == 0:
                self.emit("uninterested", feed.id)
        if feed.opens == 0:  # an 'uninterested' handler may have released it already
            self._feeds.pop(feed.id, None)

    def interesting(self) -> list[Feed]:
        """Open feeds the local side wants."""
        return [feed for feed in self._feeds.values() if feed.interest]

    async def _finalize(self, feed: Feed, roots: list[merkle.Node], blocks: int,
                        name: bytes | None) -> None:
        feed_id = tree_id(roots)
        store = self.store
        if name is not None and store.name(name) is not None:
            raise NameTaken(f"the name {name!r} is taken")
        previous = store.lookup(feed_id)
        with store.batch(sync=True) as batch:
            store.put_feed(batch, feed.num, feed_id, blocks)
            store.put_pending(batch, feed.num, False)
            if previous is not None and previous != feed.num:
                store.retire_feed(batch, previous)  # atomically with the new copy's id
            if name is not None:
                store.put_name(batch, name, feed_id)
        feed._sealed(feed_id, roots, blocks)
        if previous is not None and previous != feed.num:
            # The same content was stored before (perhaps in part): keep this complete copy.
            store.delete_feed(previous, None)
            open_feed = self._feeds.get(feed_id)
            if open_feed is not None:
                open_feed._adopt(feed)
        await trio.lowlevel.checkpoint()

    async def remove(self, feed_id: bytes | str) -> None:
        """Delete a feed and every name that points at it from the database."""
        feed_id = parse_id(feed_id)
        num = self.store.lookup(feed_id)
        if num is None:
            return
        with self.store.batch() as batch:
            for name, target in self.store.names():
                if target == feed_id:
                    self.store.put_name(batch, name, None)
        self.store.delete_feed(num, feed_id)
        self._feeds.pop(feed_id, None)
        await trio.lowlevel.checkpoint()

    async def list(self) -> AsyncIterator[bytes]:
        """The id of every feed stored (in whole or in part), in id order."""
        for count, (feed_id, _num, _blocks) in enumerate(self.store.feeds()):
            if count % 1024 == 1023:
                await trio.lowlevel.checkpoint()
            yield feed_id

    def info(self) -> builtins.list[FeedInfo]:  # `list` here is Core.list
        """Every stored feed with its length and how many blocks are local."""
        result = []
        for feed_id, num, blocks in self.store.feeds():
            feed = self._feeds.get(feed_id)
            local = feed.local if feed is not None else self.store.bitfield(num).count
            result.append(FeedInfo(feed_id, blocks, local))
        return result

    def check(self, *, repair: bool = False) -> fsck.Report:
        """Check the database's invariants (see :mod:`hyperfs.fsck`).

        With ``repair``, blocks that fail their hash check are marked missing, exactly as
        a read that finds them would, instead of being reported.
        """

        def drop(num: int, index: int) -> None:
            for feed in self._feeds.values():
                if feed.num == num:
                    feed.drop(index)
                    return
            self.store.drop_block(num, index)

        return fsck.check(self.store, repair=drop if repair else None)

    # -- names (the filesystem's file names for feeds) ------------------------------------

    def names(self) -> dict[bytes, bytes]:
        return dict(self.store.names())

    def name(self, name: bytes) -> bytes | None:
        return self.store.name(name)

    def unname(self, name: bytes) -> None:
        with self.store.batch() as batch:
            self.store.put_name(batch, name, None)

    # -- streams --------------------------------------------------------------------------

    def create_write_stream(self, block_size: int | None = None) -> WriteStream:
        """A new feed written as a stream; ``async with`` finalizes it on exit."""
        return WriteStream(self.add(), block_size)

    async def create_read_stream(self, feed_id: bytes | str, start: int = 0,
                                 limit: int | None = None) -> AsyncIterator[bytes]:
        """The feed's blocks from ``start``, at most ``limit`` of them, waiting as needed."""
        check_index(start)
        if limit is not None:
            check_index(limit)
        stop = None if limit is None else start + limit
        with self.get(feed_id) as feed:
            index = start
            while stop is None or index < stop:
                for block in feed.iter_local(index, stop):  # fast path: what is held here
                    yield block
                    index += 1
                if stop is not None and index >= stop:
                    return
                block = await feed.get(index)
                if block is None:
                    return
                yield block
                index += 1


class WriteStream:
    """Appends to a new feed in batches; closing it finalizes the feed.

    With ``block_size`` set, what is written is a byte stream cut into blocks of that
    size (the last one may be shorter); without it, every write is one block, as in the
    seed. Blocks are buffered up to a few MiB so each LevelDB batch is large.
    """

    FLUSH_BYTES = 4 << 20
    FLUSH_BLOCKS = 4096

    def __init__(self, feed: Feed, block_size: int | None = None) -> None:
        if block_size is not None and block_size <= 0:
            raise ValueError("block size must be positive")
        self.feed = feed
        self.block_size = block_size
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._partial = bytearray()

    @property
    def id(self) -> bytes | None:
        return self.feed.id

    @property
    def blocks(self) -> int | None:
        return self.feed.blocks

    async def write(self, data: BytesLike) -> None:
        if self.feed.id is not None:
            raise FeedFinalized("the stream is closed")
        if self.block_size is None:
            self._pending.append(bytes(data))
            self._pending_bytes += len(data)
        else:
            self._cut(data)
        if self._pending_bytes >= self.FLUSH_BYTES or len(self._pending) >= self.FLUSH_BLOCKS:
            await self.flush()

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
        for offset in range(0, whole, size):
            self._pending.append(bytes(view[offset : offset + size]))
        self._pending_bytes += whole
        self._partial += view[whole:]

    async def flush(self) -> None:
        if self._pending:
            pending, self._pending, self._pending_bytes = self._pending, [], 0
            await self.feed.append(pending)

    async def close(self, name: bytes | None = None) -> bytes:
        """Append what is buffered and finalize; returns the feed id."""
        if self._partial:
            self._pending.append(bytes(self._partial))
            self._partial.clear()
        await self.flush()
        return await self.feed.finalize(name)

    async def __aenter__(self) -> WriteStream:
        return self

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            await self.close()


@asynccontextmanager
async def open_core(path: str | os.PathLike[str]) -> AsyncIterator[Core]:
    """Open (creating if need be) the core stored at ``path``; closed on exit."""
    core = Core(os.path.expanduser(path))
    try:
        yield core
    finally:
        core.close()
