"""Live feeds: a feed whose id is an ed25519 public key, that grows by signed lengths.

The tree and the blocks are a static feed's (:class:`.feed.Feed` does all of reading,
serving and verified puts); what is added here is the length. The writer (the machine
holding the secret key, :mod:`hyperfs.store.keys`) signs each append batch once
(:mod:`hyperfs.tree.signing`); everyone else takes a new length only with a valid
signature over roots that extend the tree already verified (:mod:`hyperfs.tree.upgrade`).
A :class:`Live` is attached to the feed as ``feed.live_state``; ``feed.live`` says whether
there is one.

Crashes: an append writes its bytes first, then one LevelDB batch with the blocks'
places, nodes, bitfield, the ``m`` length and the signed length (:mod:`hyperfs.store.
signed`), so the signed length is never ahead of what is stored. A new length from the
network is stored in one batch with its roots and upgrade nodes, likewise.

Forks: when the key signed a second tree for a length whose roots we hold, the evidence
is kept (``f`` record) and the feed is marked forked: readers keep the verified prefix,
no new length is taken, and the writer here refuses to append (FeedForked), because one
more signature would only deepen the fork.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import trio

from hyperfs.base.errors import BadProof, FeedForked, NotWritable
from hyperfs.feeds.feed import BytesLike, Feed
from hyperfs.feeds.hashing import as_block, hash_beside
from hyperfs.store import keys
from hyperfs.store.signed import Fork, Signed, fork, put_fork, put_signed, signed
from hyperfs.store.store import Store
from hyperfs.tree import signing
from hyperfs.tree.bitfield import PAGE_BITS
from hyperfs.tree.flat_tree import full_roots
from hyperfs.tree.merkle import Node, TreeBuilder
from hyperfs.tree.upgrade import upgrade_indexes, verify_upgrade

log = logging.getLogger("hyperfs.live")

Emit = Callable[[str, Feed], None]
NO_SIGNATURE = bytes(signing.SIGNATURE_SIZE)
"""What a live feed made here and not appended to yet records as its signature."""

FORKED = ("the live feed {id} forked: its secret key signed two different trees"
          " (a copied key or a restored backup appended elsewhere); the evidence is kept"
          " and this machine will not append to it again")


class Live:
    """The live part of one open feed: its signed length, its signer if ours, its forks."""

    def __init__(self, feed: Feed, store: Store, current: Signed,
                 signer: signing.Signer | None, emit: Emit) -> None:
        assert feed.id is not None  # a live feed is opened by its id, its public key
        self.feed, self.id = feed, feed.id
        self._store = store
        self.signature = current.signature
        self.signer = signer
        self.forked: Fork | None = fork(store, feed.num)
        self._emit = emit  # the core's events: "append", "fork"
        self._longer = trio.Event()  # set (and replaced) each time the length grows

    @property
    def writable(self) -> bool:
        return self.signer is not None and self.forked is None

    @property
    def length(self) -> int:
        return self.feed.blocks or 0

    async def wait_longer(self, than: int) -> None:
        """Wait until the feed has more than ``than`` blocks (a signed length says so)."""
        while self.length <= than:
            await self._longer.wait()

    def _extended(self, length: int, roots: list[Node], appended: range) -> None:
        self.feed.extended(length, roots, appended)
        self._longer.set()
        self._longer = trio.Event()
        self._emit("append", self.feed)

    # -- the writer --------------------------------------------------------------------

    async def append(self, data: BytesLike | Iterable[BytesLike]) -> None:
        """Append one block or a list of blocks, signed once, in one atomic write."""
        if self.signer is None:
            raise NotWritable(f"the live feed {self.feed.hex} is not writable here: its"
                              " secret key is on another machine")
        if self.forked is not None:
            raise FeedForked(FORKED.format(id=self.feed.hex))
        items = [data] if isinstance(data, BytesLike) else list(data)
        blocks = [as_block(item) for item in items]
        if not blocks:
            return
        feed, store, num = self.feed, self._store, self.feed.num
        start = self.length
        end = start + len(blocks)
        builder = TreeBuilder()
        builder.roots, builder.blocks = list(feed.roots), start
        leaves = hash_beside(blocks)
        bitfield = feed.bitfield
        try:
            with store.batch() as batch:
                store.data.append(batch, num, start, blocks)  # while the leaves are hashed
                store.put_nodes(batch, num, builder.extend_leaves(leaves()))
                signature = self.signer.sign(end, builder.roots)
                bitfield.add_range(start, end)
                for page in range(start // PAGE_BITS, (end - 1) // PAGE_BITS + 1):
                    store.put_page(batch, num, page, bitfield.page(page))
                store.put_feed(batch, num, self.id, end)
                put_signed(batch, num, Signed(end, signature))
        except BaseException:
            for index in range(start, end):
                bitfield.discard(index)
            raise
        self.signature = signature
        self._extended(end, list(builder.roots), range(start, end))
        await trio.lowlevel.checkpoint()

    # -- what peers send and are sent ----------------------------------------------------

    def upgrade_nodes(self, old: int) -> list[Node] | None:
        """The upgrade proof from ``old`` blocks to ours, None if a node of it is not
        stored here (a relay that never saw that part of the tree)."""
        nodes = []
        for index in upgrade_indexes(old, self.length):
            digest = self._store.node(self.feed.num, index)
            if digest is None:
                return None
            nodes.append((index, digest))
        return nodes

    def receive(self, length: int, roots: Sequence[Node], signature: bytes,
                old: int | None, nodes: Sequence[Node]) -> bool:
        """A peer's signed length; True if it made the feed longer.

        ``old`` is the length the upgrade proof ``nodes`` start from (None: no proof).
        Raises BadSignature / BadProof for anything that does not verify (nothing is
        stored) and FeedForked when it proves a fork (the evidence is stored).
        """
        if length == self.length and signature == self.signature:
            return False  # what we hold (told again by each peer): verified once already
        signing.verify(self.id, length, roots, signature)
        if length <= self.length:
            self._check_same_tree(length, list(roots), signature)
            return False
        if self.forked is not None:
            raise FeedForked(FORKED.format(id=self.feed.hex))
        if old != self.length:
            return False  # a proof from another length: the sender learns ours and retries
        learned = verify_upgrade(self.feed.roots, roots, nodes)
        store, num = self._store, self.feed.num
        with store.batch() as batch:
            store.put_nodes(batch, num, learned)
            store.put_nodes(batch, num, roots)
            store.put_feed(batch, num, self.id, length)
            put_signed(batch, num, Signed(length, signature))
        self.signature = signature
        self._extended(length, list(roots), range(0))
        return True

    def _check_same_tree(self, length: int, roots: list[Node], signature: bytes) -> None:
        """A validly signed tree for a length we hold: the same as ours, or a fork."""
        ours = [(node, self._store.node(self.feed.num, node)) for node in full_roots(length)]
        if any(digest is None for _, digest in ours) or ours == roots:
            return  # the same tree (or one we cannot compare: that part was never here)
        evidence = Fork(length, signature, roots)
        if self.forked is None:
            with self._store.batch(sync=True) as batch:
                put_fork(batch, self.feed.num, evidence)
            self.forked = evidence
            log.error(FORKED.format(id=self.feed.hex))
            self._emit("fork", self.feed)
        raise FeedForked(FORKED.format(id=self.feed.hex))


def attach(feed: Feed, store: Store, emit: Emit) -> None:
    """Give ``feed`` its live part if the store says it is live (on every open)."""
    current = signed(store, feed.num)
    if current is not None and feed.id is not None:
        feed.live_state = Live(feed, store, current, keys.load_signer(store.path, feed.id),
                               emit)


def create(store: Store) -> bytes:
    """Make a new live feed: a key pair (the secret stored first), then its record."""
    signer, seed = signing.Signer.generate()
    feed_id = signer.public_key
    keys.save_secret(store.path, feed_id, seed)
    with store.batch(sync=True) as batch:
        num = store.allocate(batch)
        store.put_feed(batch, num, feed_id, 0)
        put_signed(batch, num, Signed(0, NO_SIGNATURE))
    return feed_id


def learn(feed: Feed, store: Store, emit: Emit, length: int, roots: Sequence[Node],
          signature: bytes) -> None:
    """A feed opened by id, of unknown length, turns out to be live: the first signed
    length verified (by the id as public key) makes it so, stored in one batch."""
    if feed.blocks is not None or feed.id is None:
        raise BadProof("a signed length for a feed already known to be static")
    signing.verify(feed.id, length, roots, signature)
    with store.batch() as batch:
        store.put_nodes(batch, feed.num, roots)
        store.put_feed(batch, feed.num, feed.id, length)
        put_signed(batch, feed.num, Signed(length, signature))
    signer = keys.load_signer(store.path, feed.id)  # ours, deleted here and fetched again
    live = Live(feed, store, Signed(length, signature), signer, emit)
    feed.live_state = live
    live._extended(length, list(roots), range(0))


async def wait_longer(feed: Feed, than: int) -> bool:
    """Wait until ``feed`` has more than ``than`` blocks; False at once for a static feed
    (a feed of unknown length waits to learn it first)."""
    await feed.ready()
    state = feed.live_state
    if not isinstance(state, Live):
        return False
    await state.wait_longer(than)
    return True
