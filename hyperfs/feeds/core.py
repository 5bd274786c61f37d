"""A core: the set of feeds kept in one database, and the seed's API over them.

The core owns the store and hands out one :class:`Feed` object per feed id, so every
reader, the filesystem and the replication layer see the same waiters and bitfield.
"""

from __future__ import annotations

import builtins
import logging
import os
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from hyperfs.base.callbacks import Callbacks
from hyperfs.base.errors import FeedFinalized
from hyperfs.feeds import ingest
from hyperfs.feeds import live as live_feeds
from hyperfs.feeds.cache import Cache
from hyperfs.feeds.feed import Feed, check_index
from hyperfs.feeds.filestream import FileWriteStream
from hyperfs.feeds.names import Names
from hyperfs.feeds.privacy import PrivateFeeds
from hyperfs.feeds.streams import WriteStream
from hyperfs.store import fsck
from hyperfs.store.entry import Entry
from hyperfs.store.migrate import open_store
from hyperfs.store.signed import fork, signed
from hyperfs.tree.hashes import parse_id
from hyperfs.tree.merkle import Node

log = logging.getLogger("hyperfs.core")

EVENTS = ("interested", "uninterested", "peer", "finalized", "created", "shared", "append",
          "fork")
"""What :meth:`Core.on` can listen to. ``created``: a feed finalized here whose bytes were
not stored before (``finalized`` is sent for every one); ``shared``: a feed's id went to a
peer, or came from one (emitted by the replication layer)."""

DEFAULT_BLOCK_SIZE = 64 * 1024
"""Bytes per block of a file made into a feed (`hyperfs add`, a copy into the mount) when
nobody says otherwise; a :class:`WriteStream` without a block size keeps writes as blocks."""


@dataclass(frozen=True, slots=True)
class FeedInfo:
    """What `hyperfs ls` shows of a stored feed."""

    id: bytes
    blocks: int | None
    local: int
    live: bool = False
    forked: bool = False
    """A live feed whose key signed two different trees (``feeds.live``): readers keep
    the verified prefix, the writer here refuses to append."""

    @property
    def kind(self) -> str:
        """What `hyperfs ls` and ``.status`` call it: static, live or live, forked."""
        return "live, forked" if self.forked else "live" if self.live else "static"


class Core:
    """Feeds in one LevelDB directory. Prefer :func:`open_core` to manage its life.

    The registry of open feeds: one :class:`Feed` per id while anything has it open,
    with how many opens hold it and how many of those want it (interest).
    """

    def __init__(self, path: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.store, _moved = open_store(path)
        self.store.durable = durable
        self._feeds: dict[bytes, Feed] = {}
        self._opens: dict[bytes, int] = {}
        self._interest: dict[bytes, int] = {}
        self.names = Names(self.store)
        """The local names of feeds (the filesystem's files and directories)."""
        self._handlers: dict[str, Callbacks[...]] = {event: Callbacks() for event in EVENTS}
        self.extensions: list[str] = []
        self.private = PrivateFeeds(self.store.path)
        """The feeds never joined in plaintext (``privacy``); ``private.new_feeds`` makes
        every feed finalized here private."""
        for num in self.store.pending():
            log.info("discarding writable feed #%d left unfinished by an earlier run", num)
            self.store.delete_feed(num, None)
        self.store.reopened.add(self._reload)
        self.cache = Cache(self.store, self._feeds.get)
        """Limits on fetched feeds' block data, eviction, pins (no limit until
        :meth:`Cache.limit`)."""

    def _reload(self) -> None:
        """After the store recovered from a failed write: every open feed's bitfield
        again as stored, so no later page write carries bits of writes that were lost."""
        for feed in self._feeds.values():
            feed.reload()

    async def commit(self, *, keep: Collection[int] = ()) -> None:
        """Every change made so far on disk, to outlive a power cut (fsync in a mount, its
        periodic commit, `hyperfs add --fsync`): the disk waits happen in a worker thread,
        so the event loop goes on serving meanwhile. Raises OSError (EIO, ENOSPC).

        ``keep``: numbers of writable feeds still being written, whose data files are
        left to a later commit (a crash discards an unfinished feed anyway; syncing a
        file being written every few seconds halved a mount's `cp` of 2 GiB)."""
        await trio.to_thread.run_sync(self.store.committer(keep))

    def close(self) -> None:
        self.cache.save()
        self.store.close()

    # -- events ------------------------------------------------------------------------

    def on(self, event: str, handler: Callable[..., None]) -> Callable[[], None]:
        """Call ``handler`` on ``event`` ('interested', 'uninterested', 'finalized' with
        the feed id, 'created' and 'shared' with the feed id (see ``EVENTS``), 'peer' with
        a peer, 'append' with a live feed that grew, here or by a verified signed length,
        'fork' with a live feed found forked); returns the function that unsubscribes."""
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

    def add(self, *, live: bool = False) -> Feed:
        """A new writable feed: append to it, then finalize to give it its id.

        ``live=True``: a live feed instead, its id a new public key (the secret key is
        kept in the database directory, apart from the index); every ``append`` is
        signed and it is never finalized. It is open like a :meth:`get` (close it).
        """
        if live:
            return self.get(live_feeds.create(self.store))
        with self.store.batch() as batch:
            num = self.store.allocate(batch)
            self.store.put_pending(batch, num, True)
        return Feed(self.store, self, num, None, None)

    def get(self, feed_id: bytes | str) -> Feed:
        """The feed with this id, opened (and recorded, to be fetched) if need be.

        The open counts as the local side wanting the feed: the core says 'interested'
        at the first, and the swarm then asks every peer for it. ``feed.close()`` (or
        the end of ``with core.get(id) as feed``) undoes it.
        """
        feed = self._open(parse_id(feed_id))
        if self._count(self._interest, feed, +1) == 1:
            self.emit("interested", feed.id)
        return feed

    def hold(self, feed_id: bytes | str) -> Held:
        """Open a feed without wanting it: for serving a feed a peer named, so that one
        peer's request is never revealed to another. Close the returned handle once."""
        return Held(self, self._open(parse_id(feed_id)))

    def _open(self, feed_id: bytes) -> Feed:
        feed = self._feeds.get(feed_id)
        if feed is None:
            num = self.store.lookup(feed_id)
            if num is None:
                with self.store.batch() as batch:
                    num = self.store.allocate(batch)
                    self.store.put_feed(batch, num, feed_id, None)
            feed = Feed(self.store, self, num, feed_id, self.store.blocks(num))
            live_feeds.attach(feed, self.store, self.emit)
            self._feeds[feed_id] = feed
        self._count(self._opens, feed, +1)
        return feed

    @staticmethod
    def _count(counts: dict[bytes, int], feed: Feed, step: int) -> int:
        assert feed.id is not None
        count = counts[feed.id] = counts.get(feed.id, 0) + step
        if not count:
            del counts[feed.id]
        return count

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
        """Undo one :meth:`get` (or, with ``interested=False``, one :meth:`hold`)."""
        feed_id = feed.id
        if feed_id is None or self._feeds.get(feed_id) is not feed or feed_id not in self._opens:
            return
        if (interested and feed_id in self._interest
                and self._count(self._interest, feed, -1) == 0):
            self.emit("uninterested", feed_id)
        # An 'uninterested' handler may have released the feed's last open already.
        if feed_id in self._opens and self._count(self._opens, feed, -1) == 0:
            self._feeds.pop(feed_id, None)

    def is_interested(self, feed_id: bytes) -> bool:
        """Whether the local side wants this feed (some :meth:`get` of it is open)."""
        return feed_id in self._interest

    def interesting(self) -> list[Feed]:
        """Open feeds the local side wants."""
        return [self._feeds[feed_id] for feed_id in self._interest]

    def learn_live(self, feed: Feed, length: int, roots: list[Node], signature: bytes) -> None:
        """A feed opened by id proved live: take its first signed length (verified)."""
        live_feeds.learn(feed, self.store, self.emit, length, roots, signature)

    def finalized(self, feed: Feed, replaced: int | None) -> None:
        """A feed made here got its id (see :meth:`Feed.finalize`). When the same content
        was stored before (perhaps in part), this complete copy is kept: the earlier
        one's data goes, and an open object for the id takes over this copy's storage."""
        assert feed.id is not None
        if self.private.new_feeds:
            self.private.mark(feed.id)
        self.emit("finalized", feed.id)
        if replaced is None:
            self.emit("created", feed.id)
            return
        self.store.delete_feed(replaced, None)
        open_feed = self._feeds.get(feed.id)
        if open_feed is not None:
            open_feed.adopt(feed)

    async def remove(self, feed_id: bytes | str) -> None:
        """Delete a feed and every name that points at it from the database."""
        feed_id = parse_id(feed_id)
        num = self.store.lookup(feed_id)
        if num is None:
            return
        self.names.forget_feed(feed_id)
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
            live = signed(self.store, num) is not None
            forked = live and fork(self.store, num) is not None
            result.append(FeedInfo(feed_id, blocks, local, live, forked))
        return result

    def check(self, *, repair: bool = False, scrub: bool = True) -> fsck.Report:
        """Check the database's invariants (see :mod:`hyperfs.store.fsck`).

        With ``repair``, damaged blocks (outside their file, failing their crc32c or, with
        ``scrub``, their SHA-256 leaf hash) are marked missing, exactly as a read that
        finds them would, instead of being reported; orphan data files are deleted.
        """

        def drop(num: int, index: int) -> None:
            for feed in self._feeds.values():
                if feed.num == num:
                    feed.drop(index)
                    return
            self.store.data.drop(num, index)

        return fsck.check(self.store, repair=drop if repair else None, scrub=scrub)

    async def add_file(self, path: str | os.PathLike[str], block_size: int = DEFAULT_BLOCK_SIZE,
                       name: bytes | None = None, *, entry: Entry | None = None,
                       replace: bool = False) -> bytes:
        """A new feed of the file at ``path`` in blocks of ``block_size``, finalized
        (``name``, ``entry``, ``replace``: as :meth:`Feed.finalize`); returns its id, the
        same as a stream of the same bytes would give. A big regular file is copied in
        the kernel and hashed by worker processes (:mod:`.ingest`), anything else read
        as a stream. Nothing of it stays when it fails or is cancelled."""
        with open(path, "rb") as source:
            feed = self.add()
            try:
                if ingest.worth_copying(source.fileno()):
                    await ingest.copy_into(feed, self.store, source.fileno(), block_size,
                                           name=os.fsdecode(path))
                    return await feed.finalize(name, entry=entry, replace=replace)
                stream = WriteStream(feed, block_size)
                await stream.write_from(source.read)
                return await stream.close(name, entry=entry, replace=replace)
            finally:
                if feed.id is None:
                    self.discard(feed)

    # -- streams --------------------------------------------------------------------------

    def create_write_stream(self, block_size: int | None = None) -> WriteStream:
        """A new feed written as a stream; ``async with`` finalizes it on exit."""
        return WriteStream(self.add(), block_size)

    def create_file_stream(self, block_size: int = DEFAULT_BLOCK_SIZE) -> FileWriteStream:
        """A new feed written as a byte stream that may be a big file: past a few MiB its
        bytes go straight to the data file and a worker process hashes them
        (:mod:`.filestream`), so the writer never waits for the hashing. Close it to
        finalize; :meth:`WriteStream.abort` before discarding it unclosed."""
        return FileWriteStream(self.add(), block_size, self.store)

    async def create_read_stream(self, feed_id: bytes | str, start: int = 0,
                                 limit: int | None = None, *,
                                 live: bool = False) -> AsyncIterator[bytes]:
        """The feed's blocks from ``start``, at most ``limit`` of them, waiting as needed.

        ``live=True`` follows a live feed past its end: the stream waits for each new
        signed length and goes on forever (or to ``limit``)."""
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
                fetched = await feed.get(index)
                if fetched is None:
                    if not (live and await live_feeds.wait_longer(feed, index)):
                        return
                    continue
                yield fetched
                index += 1


class Held:
    """A :meth:`Core.hold` of a feed: an open that does not want it. ``with`` closes it."""

    __slots__ = ("_core", "closed", "feed")

    def __init__(self, core: Core, feed: Feed) -> None:
        self._core, self.feed, self.closed = core, feed, False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._core.release(self.feed, interested=False)

    def __enter__(self) -> Feed:
        return self.feed

    def __exit__(self, *exc: object) -> None:
        self.close()


@asynccontextmanager
async def open_core(path: str | os.PathLike[str], *,
                    durable: bool = True) -> AsyncIterator[Core]:
    """Open (creating if need be) the core stored at ``path``; closed on exit.
    ``durable``: whether each finalize waits for the disk (:attr:`.store.Store.durable`)."""
    core = Core(os.path.expanduser(path), durable=durable)
    try:
        yield core
    finally:
        core.close()
