"""One feed: its blocks, its verified hashes, and the tasks waiting for blocks to arrive.

A feed is either *writable* (made by :meth:`Core.add`, appended to, then finalized, which
gives it its id) or *known by id* (a finalized feed, held wholly or in part, filled by
verified :meth:`Feed.put` calls from the network). Readers await :meth:`Feed.get`; the
replication layer learns what readers wait for through a :class:`FeedListener` and
answers with ``put``. All state lives in the store; memory holds only the bitfield, the
roots and the pending roots of a writable feed. (One class of ~400 lines: writing,
reading, waiting and serving all keep the same bitfield in step with the store, and
that rule is easiest to check in one place.)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from typing import Protocol

import trio

from hyperfs.base.errors import (
    BadProof,
    BlockUnavailable,
    EmptyFeed,
    FeedFinalized,
    InvalidIndex,
)
from hyperfs.feeds.hashers import Hashed
from hyperfs.feeds.hashing import as_block, hash_beside
from hyperfs.feeds.names import Names, new_entry
from hyperfs.store.blocks import ReadBuffer
from hyperfs.store.blockstore import Run
from hyperfs.store.cache import evict
from hyperfs.store.entry import Entry, Kind
from hyperfs.store.index import Batch
from hyperfs.store.store import Store
from hyperfs.tree import merkle
from hyperfs.tree.bitfield import PAGE_BITS, Bitfield
from hyperfs.tree.flat_tree import full_roots
from hyperfs.tree.hashes import tree_id

log = logging.getLogger("hyperfs.feed")

BytesLike = bytes | bytearray | memoryview


class BadBlock(BadProof):
    """Block :attr:`block` of a :meth:`Feed.put_many` did not verify (those before it,
    which did, are stored)."""

    def __init__(self, block: int, message: str) -> None:
        super().__init__(message)
        self.block = block


class FeedListener(Protocol):
    """What the replication layer hears from a feed (every method is optional; a live
    feed also calls ``feed_grew(feed, first_new_block)`` at each new signed length)."""

    def feed_wants(self, feed: Feed, block: int) -> None: ...
    def feed_unwants(self, feed: Feed, block: int) -> None: ...
    def feed_stored(self, feed: Feed, block: int) -> None: ...
    def feed_prefetch(self, feed: Feed, block: int) -> None: ...


class LivePart(Protocol):
    """What a live feed adds (``feeds.live.Live``): the writer's signed appends."""

    @property
    def writable(self) -> bool: ...
    async def append(self, data: BytesLike | Iterable[BytesLike]) -> None: ...


class FeedOwner(Protocol):
    """What a feed tells the core that opened it (the core is the registry of feeds)."""

    def release(self, feed: Feed) -> None:
        """The feed's holder closed it (undoes one interested open)."""

    def learn_live(self, feed: Feed, length: int, roots: list[merkle.Node],
                   signature: bytes) -> None:
        """``feed``, opened by id, proved live: attach its live part (``feeds.live``)."""

    def finalized(self, feed: Feed, replaced: int | None) -> None:
        """``feed`` now has its id; ``replaced`` is the local number of an earlier copy of
        the same feed that the finalize batch retired (its data is still to delete)."""


def check_index(index: object) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InvalidIndex(f"block index must be a non-negative integer, not {index!r}")
    return index


class Feed:
    """A feed of blocks stored in a core. Get one from :meth:`Core.add` or :meth:`Core.get`."""

    MAX_PREFETCH = 16

    def __init__(self, store: Store, owner: FeedOwner, num: int, feed_id: bytes | None,
                 blocks: int | None) -> None:
        self._owner = owner
        self._store = store
        self.num = num
        self.id = feed_id
        self.blocks = blocks
        # A writable feed is new (the core discards unfinished ones at open): no scan.
        self.bitfield = self._store.bitfield(num) if feed_id is not None else Bitfield()
        self.roots: list[merkle.Node] = self._load_roots()
        self._builder = merkle.TreeBuilder() if feed_id is None else None
        self._waiters: dict[int, trio.Event] = {}
        self._failures: dict[int, tuple[trio.Event, OSError]] = {}  # see _store_failed
        self._wanted: dict[int, int] = {}
        self._length_known = trio.Event()
        if blocks is not None:
            self._length_known.set()
        self._listeners: list[FeedListener] = []
        self._node_cache: dict[int, bytes] = {}  # verified hashes never change
        self._cache_failures = store.write_failures  # (their writes may fail: _nodes)
        self.prefetching: list[list[int | None]] = []
        self.live_state: LivePart | None = None  # set by feeds.live for a live feed

    def __repr__(self) -> str:
        name = self.id.hex()[:16] if self.id else f"writable #{self.num}"
        return f"<Feed {name} blocks={self.blocks} local={self.local}>"

    @property
    def hex(self) -> str | None:
        return None if self.id is None else self.id.hex()

    @property
    def local(self) -> int:
        """How many blocks are stored here."""
        return self.bitfield.count

    @property
    def writable(self) -> bool:
        return self._builder is not None or (
            self.live_state is not None and self.live_state.writable)

    @property
    def live(self) -> bool:
        """Whether this is a live feed (its id a public key, its length signed): such a
        feed travels only to hyperfs peers, never to a 1.x peer."""
        return self.live_state is not None

    def has(self, index: int) -> bool:
        return check_index(index) in self.bitfield

    async def ready(self) -> None:
        """Wait until the feed's length is known (at once for feeds held or made here)."""
        await self._length_known.wait()

    def listen(self, listener: FeedListener) -> Callable[[], None]:
        """Register a listener; returns the function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def prefetch(self, start: int = 0, end: int | None = None) -> None:
        """Ask for blocks ``start .. end-1`` (to the feed's end if None) ahead of need.

        Lower priority than blocks a task waits for in :meth:`get`. The replication layer
        keeps the ranges up to date (``[start, end]`` lists, the start advancing as
        blocks arrive); only the newest few are kept.
        """
        check_index(start)
        if end is not None and end <= start:
            return
        self.prefetching.append([start, end])
        del self.prefetching[:-self.MAX_PREFETCH]
        self._notify("feed_prefetch", start)

    async def download(self, start: int = 0, end: int | None = None) -> None:
        """Fetch blocks ``start .. end-1`` (to the feed's end if None) and wait for them."""
        self.prefetch(start, end)
        index = start
        while end is None or index < end:
            if index not in self.bitfield and not await self._held(index):
                return
            index += 1
            if self.blocks is not None and index >= self.blocks:
                return

    async def _held(self, index: int) -> bool:
        """Wait until block ``index`` is stored here (True) or is past the end (False):
        what :meth:`get` waits for, without reading the block back (a download only
        needs it stored; it was verified on the way in)."""
        while self.blocks is None or index < self.blocks:
            if index in self.bitfield:
                return True
            await self._wait_for(index)
        return False

    @property
    def wanted(self) -> list[int]:
        """Blocks some task is waiting for, in the order first asked."""
        return list(self._wanted)

    # -- writing -------------------------------------------------------------------

    async def append(self, data: BytesLike | Iterable[BytesLike]) -> None:
        """Append one block, or a list of blocks in one atomic write."""
        if self.live_state is not None:
            await self.live_state.append(data)
            return
        if self._builder is None:
            raise FeedFinalized("cannot append to a finalized feed")
        items = [data] if isinstance(data, BytesLike) else list(data)
        blocks = [as_block(item) for item in items]
        leaves = hash_beside(blocks)
        store, num = self._store, self.num
        self._extend(len(blocks), lambda batch, start: store.data.append(batch, num, start,
                                                                         blocks), leaves)
        await trio.lowlevel.checkpoint()

    async def append_stored(self, offset: int, lengths: Sequence[int], hashed: Hashed) -> None:
        """Append blocks whose bytes are in the feed's data file already, one after
        another from ``offset`` (copied there by :meth:`.blockstore.BlockStore.copy_in`),
        of ``lengths``, with the leaf hashes and crc32c a hash worker found of those
        stored bytes (:mod:`.hashers`): what :meth:`append` does, less the writing and
        the hashing. One atomic batch, like :meth:`append`."""
        if self._builder is None:
            raise FeedFinalized("cannot append to a finalized feed")
        store, num = self._store, self.num
        self._extend(len(lengths), lambda batch, start: store.data.record(
            batch, num, start, offset, lengths, hashed.crcs), lambda: hashed.leaves)
        await trio.lowlevel.checkpoint()

    def _extend(self, count: int, place: Callable[[Batch, int], None],
                leaves: Callable[[], list[bytes]]) -> None:
        """The batch of an append of ``count`` blocks: ``place(batch, start)`` writes their
        ``l`` keys (their bytes first, if they are not stored yet), then their tree nodes
        from ``leaves()`` and their bitfield pages. Undone in memory if it fails."""
        builder, store, num, bitfield = self._builder, self._store, self.num, self.bitfield
        assert builder is not None
        start, saved_roots = builder.blocks, list(builder.roots)
        end = start + count
        try:
            with store.batch() as batch:
                place(batch, start)  # while the leaves are hashed
                store.put_nodes(batch, num, builder.extend_leaves(leaves()))
                bitfield.add_range(start, end)
                for page in range(start // PAGE_BITS, (end - 1) // PAGE_BITS + 1):
                    store.put_page(batch, num, page, bitfield.page(page))
        except BaseException:
            for index in range(start, end):
                bitfield.discard(index)
            builder.roots, builder.blocks = saved_roots, start
            raise
        if self._waiters or self._listeners:
            for index in range(start, end):
                self._stored(index)

    async def finalize(self, name: bytes | None = None, *, entry: Entry | None = None,
                       replace: bool = False) -> bytes:
        """Seal the feed and give it its id; ``name`` is recorded with it, atomically.

        ``name`` is a path of :mod:`.names` (a file name at the top, or ``dir/file``);
        ``entry`` gives the name's mode, owner, times and xattrs (default: 0644, now,
        this process's user), ``replace`` lets it replace a file of that name.

        The feed's data file is synced to disk first; then one synced batch writes the id,
        the length, the end of the pending mark and the name (both syncs are left to the
        next :meth:`.core.Core.commit` when the store is not durable); an earlier copy of the same
        feed (the same content stored before, perhaps in part) is retired in that batch
        too, so there is never a moment with two records for one id. The owner then
        deletes the retired copy's data.
        """
        builder, store, num = self._builder, self._store, self.num
        if builder is None:
            raise FeedFinalized("feed is already finalized")
        if builder.blocks == 0:
            raise EmptyFeed("cannot finalize a feed with no blocks")
        roots, blocks = list(builder.roots), builder.blocks
        feed_id = tree_id(roots)
        previous = store.lookup(feed_id)
        replaced = previous if previous is not None and previous != num else None
        with store.batch(sync=store.durable) as batch:
            store.data.seal(batch, num)
            store.put_feed(batch, num, feed_id, blocks)
            store.put_pending(batch, num, False)
            if replaced is not None:
                store.retire_feed(batch, replaced)
            if name is not None:  # a refused name raises here: nothing is written
                entry = entry or new_entry(Kind.FILE, 0o644)
                Names(store).bind(batch, name, dataclasses.replace(entry, feed_id=feed_id),
                                  replace=replace)
        self.id, self.roots, self.blocks, self._builder = feed_id, roots, blocks, None
        self._length_known.set()
        self._owner.finalized(self, replaced)
        await trio.lowlevel.checkpoint()
        return feed_id

    def adopt(self, other: Feed) -> None:
        """Take over another object's storage for the same id (after a duplicate finalize)."""
        self.num, self.bitfield, self.roots, self.blocks = (
            other.num, other.bitfield, other.roots, other.blocks)
        self._length_known.set()
        for event in self._waiters.values():
            event.set()
        self._waiters.clear()

    # -- reading -------------------------------------------------------------------

    async def get(
        self, index: int, *, timeout: float | None = None, wait: bool = True
    ) -> bytes | None:
        """Block ``index``, waiting for it to arrive if it is not stored here.

        Returns None for an index past the end once the length is known. ``timeout``
        (seconds) raises TimeoutError; ``wait=False`` raises BlockUnavailable instead of
        waiting. Cancelling the caller withdraws its interest in the block.
        """
        check_index(index)
        scope = trio.fail_after(timeout) if timeout is not None else nullcontext()
        try:
            with scope:
                while True:
                    if self.blocks is not None and index >= self.blocks:
                        return None
                    if index in self.bitfield:
                        data = self._read(index)
                        if data is not None:
                            return data
                    if not wait:
                        raise BlockUnavailable(f"block {index} is not stored locally")
                    await self._wait_for(index)
        except trio.TooSlowError:
            raise TimeoutError(f"block {index} did not arrive within {timeout} s") from None

    def read_local(self, index: int) -> bytes | None:
        """Block ``index`` if it is stored here (and still verifies), without waiting."""
        if check_index(index) not in self.bitfield:
            return None
        return self._read(index)

    def iter_local(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Blocks ``start, start+1, ...`` (before ``end``) while they are stored here.

        Stops at the first block not held (or damaged on disk: that one is dropped, as
        :meth:`get` does), so a reader can fall back to :meth:`get` there. Whole-feed
        reads take this path: one LevelDB range scan and a ``pread`` per block, every
        block checked against its crc32c (see :mod:`hyperfs.store.store` for why that,
        not SHA-256, is the check on reads).
        """
        check_index(start)
        if end is None:
            end = self._local_end()
        bitfield, index = self.bitfield, start
        for data in self._store.data.iter(self.num, start, end):
            if index not in bitfield:
                return
            if data is None:
                self._damaged(index)
                return
            yield data
            index += 1

    def read_run(self, start: int, want: int, buffer: ReadBuffer) -> Run:
        """Blocks ``start, start+1, ...`` held here, read one after another into
        ``buffer`` until they hold ``want`` bytes (fewer at the feed's end or at the first
        block not held), each checked against its crc32c: a FUSE read of many blocks in
        one go (:meth:`.BlockStore.read_run`). A damaged block ends the run and is dropped
        to be fetched again, as :meth:`get` does; :attr:`Run.damaged` says so."""
        run = self._store.data.read_run(self.num, check_index(start), self._local_end(),
                                        want, buffer)
        held, bitfield = 0, self.bitfield
        while held < len(run.lengths) and start + held in bitfield:
            held += 1
        if held < len(run.lengths):  # dropped since (its bytes may be rewritten): cut there
            return Run(run.data[: sum(run.lengths[:held])], run.lengths[:held], False)
        if run.damaged:
            self._damaged(start + held)
        return run

    def _local_end(self) -> int:
        """Where the feed's blocks end; a writable feed's is what was appended so far."""
        if self.blocks is not None:
            return self.blocks
        return self._builder.blocks if self._builder is not None else 0

    def _read(self, index: int) -> bytes | None:
        data = self._store.data.read(self.num, index)
        if data is None:
            self._damaged(index)
        return data

    def _damaged(self, index: int) -> None:
        """A held block is gone or no longer matches its hash: never return it, refetch it."""
        log.warning("feed %s block %d is damaged on disk; marked missing to fetch again",
                    self.hex or self.num, index)
        self.drop(index)

    async def _wait_for(self, index: int) -> None:
        event = self._waiters.get(index)
        if event is None:
            event = self._waiters[index] = trio.Event()
        first = index not in self._wanted
        self._wanted[index] = self._wanted.get(index, 0) + 1
        if first:
            self._notify("feed_wants", index)
        try:
            await event.wait()
            failure = self._failures.get(index)
            if failure is not None and failure[0] is event:
                raise failure[1]
        finally:
            self._wanted[index] -= 1
            if not self._wanted[index]:
                del self._wanted[index]
                failed = self._failures.get(index, (None,))[0] is event
                if not event.is_set() or failed:  # (a failed one is no longer asked for)
                    if self._waiters.get(index) is event:
                        del self._waiters[index]
                    self._notify("feed_unwants", index)

    def _stored(self, index: int) -> None:
        self._failures.pop(index, None)
        event = self._waiters.pop(index, None)
        if event is not None:
            event.set()
        self._notify("feed_stored", index)

    def _notify(self, method: str, index: int) -> None:
        for listener in list(self._listeners):
            handler = getattr(listener, method, None)
            if handler is not None:
                handler(self, index)

    # -- replication -----------------------------------------------------------------

    def proof(self, index: int, *known: Bitfield | None) -> list[merkle.Node]:
        """The nodes a responder sends with block ``index`` (PROTOCOL.md, Proofs).

        ``known`` are bitfields of blocks the receiver holds (or will hold by the time
        it reads this proof): every peer stores the whole verified path of a block, so
        nodes above those blocks are left out. That shrinks a proof from ~log2(blocks)
        nodes to one or two in a download.
        """
        if self.blocks is None or check_index(index) not in self.bitfield:
            raise BlockUnavailable(f"block {index} is not stored locally")
        fields = [field.any for field in known if field is not None and field.count]
        knows: Callable[[int, int], bool] | None = None
        if len(fields) == 1:
            knows = fields[0]
        elif len(fields) == 2:  # what it has and what we sent it: every upload's proof
            first, second = fields

            def knows(start: int, end: int) -> bool:
                return first(start, end) or second(start, end)
        elif fields:
            def knows(start: int, end: int) -> bool:
                return any(field(start, end) for field in fields)
        cache = self._nodes()
        nodes = []
        for node in merkle.proof_indexes(index, self.blocks, knows):
            digest = cache.get(node)
            if digest is None:
                digest = self._store.node(self.num, node)
                if digest is None:
                    raise BlockUnavailable(f"node {node} of block {index} is not stored")
                cache[node] = digest
            nodes.append((node, digest))
        return nodes

    def _nodes(self) -> dict[int, bytes]:
        """The verified hashes kept in memory: proofs climb the same nodes again and
        again, and a put's climb meets the nodes put just before. Bounded, and forgotten
        after any failed write, which may have been the one that stored them."""
        cache, failures = self._node_cache, self._store.write_failures
        if len(cache) > 65536 or self._cache_failures != failures:
            cache.clear()
            self._cache_failures = failures
        return cache

    def put(self, index: int, data: BytesLike, proof: list[merkle.Node]) -> bool:
        """Verify block ``index`` against the feed id and store it with its proof.

        Returns False if the block was already here. Raises BadProof, storing nothing,
        when the data or proof does not verify.
        """
        return self.put_many([(index, data, proof)]) == 1

    def put_many(self, received: Sequence[tuple[int, BytesLike, list[merkle.Node]]]) -> int:
        """:meth:`put` of many blocks (one network read's), in order, in one batch.

        Each block is verified as it comes, its climb meeting the nodes of the blocks
        before it; all are stored together, the bytes of blocks at consecutive places
        in one write: a block's fixed costs are paid once a read. Returns how many were
        new. A block that does not verify raises :class:`BadBlock` (naming it) once
        those before it are stored; an OSError (a full disk) stores none of them.
        """
        feed_id = self.id
        if feed_id is None:
            raise BadProof("a writable feed takes blocks by append, not put")
        store, num, bitfield, cache = self._store, self.num, self.bitfield, self._nodes()
        fresh: dict[int, bytes] = {}  # nodes verified in this call, not stored yet
        index = -1

        def stored(node: int) -> bytes | None:  # the climb meets the nodes put just before
            digest = fresh.get(node) or cache.get(node)
            if digest is not None:
                return digest
            if node == 2 * index and index ^ 1 not in bitfield:
                # The block's own leaf, neither it nor its neighbour held: not stored
                # (a download's every other block asked LevelDB in vain). Should it be
                # (a dropped block's hashes stay), the climb goes on to the stored
                # nodes above it: never wrong, since a block verifies only by a chain
                # of hashes up to a node already trusted.
                return None
            return store.node(num, node)

        run: list[tuple[int, BytesLike, merkle.Verified]] = []
        taken: set[int] = set()
        new = 0
        try:
            for index, data, proof in received:
                if check_index(index) in bitfield or index in taken:
                    continue
                verified = self._verify(feed_id, index, data, proof, stored)
                run.append((index, data, verified))
                taken.add(index)
                fresh.update(verified.nodes)
                if verified.roots is not None:  # the length learned: verify the rest by it
                    new += self._store_run(feed_id, run)
                    run, fresh = [], {}
        except BadProof as exc:
            new += self._store_run(feed_id, run)
            raise BadBlock(index, str(exc)) from None
        return new + self._store_run(feed_id, run)

    def _verify(self, feed_id: bytes, index: int, data: BytesLike, proof: list[merkle.Node],
                stored: Callable[[int], bytes | None]) -> merkle.Verified:
        try:
            return merkle.verify(feed_id, index, data, proof, blocks=self.blocks,
                                 roots=self.roots, stored=stored)
        except BadProof:
            if self.live_state is None:
                raise
            # The responder may know a longer signed length: its proof climbs past our
            # roots. The nodes below them are the same in both trees (merkle.within).
            within = merkle.within(index, self.blocks or 0, proof)
            return merkle.verify(feed_id, index, data, within, blocks=self.blocks,
                                 roots=self.roots, stored=stored)

    def _store_run(self, feed_id: bytes,
                   run: list[tuple[int, BytesLike, merkle.Verified]]) -> int:
        """Store verified blocks (of one length: ``run``'s last may have taught it) in one
        batch: their bits, nodes and bytes, each bitfield page once."""
        if not run:
            return 0
        store, num, bitfield = self._store, self.num, self.bitfield
        last = run[-1][2]
        try:
            with store.batch() as batch:  # (which may reopen the store: see reload)
                for index, _data, verified in run:
                    bitfield.add(index)
                    store.put_nodes(batch, num, verified.nodes)
                store.data.put_many(batch, num, [(index, data) for index, data, _ in run],
                                    None if self.live_state is not None else last.blocks)
                for page in sorted({index // PAGE_BITS for index, _data, _ in run}):
                    store.put_page(batch, num, page, bitfield.page(page))
                if last.roots is not None:
                    store.put_feed(batch, num, feed_id, last.blocks)
        except BaseException as exc:
            for index, _data, _verified in run:
                bitfield.discard(index)
            if isinstance(exc, OSError):
                self._store_failed(run[0][0], exc)
            raise
        cache = self._nodes()
        for _index, _data, verified in run:
            cache.update(verified.nodes)
        if last.roots is not None:
            self._learn_length(last.blocks, last.roots)
        for index, _data, _verified in run:
            self._stored(index)
        return len(run)

    def _store_failed(self, index: int, exc: OSError) -> None:
        """Storing a verified block failed (a full disk): nothing of it was kept. Every
        waiter of the feed gets the error (a reader sees ENOSPC, not a timeout) and stops
        asking, and nothing more is fetched ahead: it would only fail too, or, once there
        is room, fill it again for readers that gave up (the kernel's read-ahead). A
        reader that asks again fetches again."""
        error = OSError(exc.errno, f"cannot store block {index} of feed {self.hex}: "
                                   f"{exc.strerror or exc}")
        log.warning("%s", error.strerror)
        self.prefetching.clear()
        waiters, self._waiters = self._waiters, {}
        for waiting, event in waiters.items():
            self._failures[waiting] = (event, error)
            event.set()

    def extended(self, blocks: int, roots: list[merkle.Node], appended: range) -> None:
        """A live feed grew to a signed length (``feeds.live``): readers past the old end
        may read on, listeners hear ``feed_grew`` with the first new block (before the
        blocks ``appended`` here are announced, so a peer learns the length before it
        hears of the blocks)."""
        old = self.blocks or 0
        self._learn_length(blocks, roots)
        self._notify("feed_grew", old)
        if self._waiters or self._listeners:
            for index in appended:
                self._stored(index)

    def learn_live(self, length: int, roots: list[merkle.Node], signature: bytes) -> None:
        """This feed, opened by id and of unknown length, proved live: a signed length
        that verifies with its id as the public key (BadSignature otherwise; nothing is
        stored then). Its core attaches the live part."""
        self._owner.learn_live(self, length, roots, signature)

    def _learn_length(self, blocks: int, roots: list[merkle.Node]) -> None:
        self.blocks, self.roots = blocks, roots
        self._length_known.set()
        for index in [i for i in self._waiters if i >= blocks]:
            self._waiters.pop(index).set()  # their get() now returns None

    def drop(self, index: int) -> bool:
        """Forget the local copy of a block (its verified hash stays, so it can return):
        its bit and ``l`` key in one batch, then its bytes punched out of the data file
        (:func:`hyperfs.store.cache.evict`), so a dropped block takes no disk."""
        return evict(self._store, self.num, [check_index(index)], self.bitfield)[0] > 0

    def reload(self) -> None:
        """After the store recovered from a failed write (:attr:`Store.reopened`): the
        bitfield again as stored (in place: whoever holds it sees the change), without
        the bits of blocks whose ``l`` key did not survive, which are cleared in the
        store too, so that nothing is marked held that is not stored."""
        if self._builder is not None:
            return
        store = self._store
        self.bitfield.replace(store.bitfield(self.num))
        placed = {index for index, _ in store.data.locations(self.num)}
        lost = [index for index in self.bitfield.iter_set() if index not in placed]
        if lost:
            log.warning("feed %s: %d blocks did not survive a failed write; fetching them "
                        "again", self.hex, len(lost))
            evict(store, self.num, lost, self.bitfield)

    def _load_roots(self) -> list[merkle.Node]:
        if self.blocks is None:
            return []
        roots = []
        for node in full_roots(self.blocks):
            digest = self._store.node(self.num, node)
            if digest is None:
                raise BadProof(f"feed {self.id!r}: root {node} is missing from storage")
            roots.append((node, digest))
        return roots

    def close(self) -> None:
        """Undo the :meth:`Core.get` that opened this feed; the core says 'uninterested'
        once no open wants it."""
        self._owner.release(self)

    def __enter__(self) -> Feed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
