"""The swarm: which peer to ask for which block, for every feed of a core.

Order of asking, per feed: blocks a task is waiting for in ``Feed.get`` (oldest first),
then blocks whose peer was lost, then the feed's prefetch ranges from their start. A
block is asked of one peer at a time, except in the end game (the last few blocks in
flight, when a slow peer would hold up the whole download). Each peer gets as many
requests in flight as fill its link (see ``peer.WINDOW_BYTES``).

Privacy: a feed is joined on every peer only when the local side wants it (it is open
with interest). A feed that a peer names is joined on that peer alone, and only if it is
stored here; the list of stored feeds is never announced. What a peer says of the other
feeds it names is kept, bounded, for when we want them (``offers``), and answers nothing.

Encryption: every connection to a hyperfs peer is encrypted (``secure``), and there a
feed is named by its discovery key, which :meth:`Swarm.resolve` maps back to the ids
known here. On a plaintext connection (a JS hypercore 1.x peer) a feed is joined only
if ``feeds.privacy.may_travel_plaintext`` allows it: private feeds never are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import trio

from hyperfs.feeds.core import Core, Held
from hyperfs.feeds.feed import Feed
from hyperfs.feeds.privacy import may_travel_plaintext
from hyperfs.replication import live
from hyperfs.replication.channel import Channel, PeerLink
from hyperfs.replication.deadlines import Timeouts
from hyperfs.replication.peer import Peer
from hyperfs.replication.secure import node_keypair
from hyperfs.wire.capabilities import discovery_key as channel_key
from hyperfs.wire.noise import KeyPair

log = logging.getLogger("hyperfs.swarm")

ENDGAME = 8
"""In-flight blocks at or below which a block may be asked of a second peer."""


class _Scan:
    """Where the scan of a prefetch range for one peer stopped: each block before ``pos``
    in ``range`` was here, asked for, or not at the peer. A Have from it starts over."""

    __slots__ = ("pos", "range")

    def __init__(self) -> None:
        self.range: list[int | None] | None = None
        self.pos = 0


class FeedSwarm:
    """One feed's share of the swarm: its channels and its requests in flight.

    The scheduler of the feed (``channel.FeedScheduler``): its peers tell it what they
    hear, it tells them what to ask for.
    """

    def __init__(self, swarm: Swarm, held: Held) -> None:
        self.swarm = swarm
        self._held = held  # the swarm's open of the feed, without interest
        self.feed = feed = held.feed
        self.channels: dict[PeerLink, Channel] = {}
        self.inflight: dict[int, set[PeerLink]] = {}
        self.requeued: set[int] = set()
        self._scans: dict[PeerLink, _Scan] = {}  # one per channel
        self._unlisten = feed.listen(self)

    def join(self, peer: PeerLink) -> None:
        """Share the feed with ``peer`` (if not shared yet), and ask it for what is wanted:
        a remote that opened the feed first may have said what it has already. A live
        feed is shared with hyperfs peers only (``live.can_share``), and it and a private
        feed only on encrypted connections (``may_travel_plaintext``)."""
        if not live.can_share(self.feed, peer):
            return
        if not peer.encrypted and not may_travel_plaintext(self.feed, self.swarm.core.private):
            log.info("not joining private or live feed %s on plaintext peer %s",
                     self.feed.hex, peer)
            self.swarm.maybe_forget(self)
            return
        if not peer.encrypted:  # a 1.x Join names the feed by its id
            self.swarm.core.emit("shared", self.feed.id)
        self._scans.setdefault(peer, _Scan())
        channel = self.channels[peer] = peer.join(self)
        self.fill(peer, channel)

    def close(self) -> None:
        self._unlisten()
        self._held.close()

    # -- feed listener ------------------------------------------------------------------

    def feed_wants(self, feed: Feed, block: int) -> None:
        self.fill_all()

    def feed_unwants(self, feed: Feed, block: int) -> None:
        if not self._in_prefetch(block):
            for peer in list(self.inflight.pop(block, ())):
                channel = self.channels.get(peer)
                if channel is not None:
                    peer.cancel(channel, block)

    def feed_stored(self, feed: Feed, block: int) -> None:
        self.requeued.discard(block)
        for peer in self.inflight.pop(block, ()):
            channel = self.channels.get(peer)
            if channel is not None:
                peer.cancel(channel, block)  # end game: someone else was faster
        for peer, channel in self.channels.items():
            if channel.ready:
                if feed.live:  # the block's nodes may complete an upgrade proof a relay lacked
                    live.tell(peer, channel)
                peer.queue_have(channel, block)

    def feed_prefetch(self, feed: Feed, block: int) -> None:
        self.fill_all()

    def feed_grew(self, feed: Feed, first: int) -> None:
        """A live feed's new signed length: push it to every peer now, and fetch the new
        blocks if the feed is wanted here (a live feed wanted is followed: tail -f)."""
        for peer, channel in list(self.channels.items()):
            if channel.ready:
                live.tell(peer, channel)
        if feed.id is not None and self.swarm.core.is_interested(feed.id) \
                and feed.local < (feed.blocks or 0) and not self._in_prefetch(first):
            feed.prefetch(first)  # (a range open to the end, a download's, covers it)

    # -- scheduling ---------------------------------------------------------------------

    def fill_all(self) -> None:
        for peer, channel in list(self.channels.items()):
            self.fill(peer, channel)

    def fill(self, peer: PeerLink, channel: Channel) -> None:
        """Ask ``peer`` for blocks until its window is full or it has nothing we need:
        blocks waited for first, then those to ask again, then the prefetch ranges (a
        run of them picked in one pass: a download asks for a round's worth at a time),
        then, in the end game, blocks in flight elsewhere."""
        if not channel.ready or channel.remote_paused:
            return
        inflight = self.inflight
        room = peer.window - peer.inflight
        picked: list[int] = []
        while len(picked) < room and (block := self._pick_urgent(channel)) is not None:
            inflight.setdefault(block, set()).add(peer)
            picked.append(block)
        if len(picked) < room:
            picked += self._pick_prefetch(peer, channel, room - len(picked))
        while len(picked) < room and (block := self._pick_endgame(peer, channel)) is not None:
            inflight[block].add(peer)
            picked.append(block)
        peer.request(channel, picked)
        if room <= len(picked):
            peer.wait_for_room(channel)

    def remote_has_changed(self, peer: PeerLink, channel: Channel) -> None:
        """The peer's Have may name blocks its scan passed: scan again from the start."""
        self._scans[peer].range = None
        self.fill(peer, channel)

    def _pick_urgent(self, channel: Channel) -> int | None:
        """A block a task waits for, else one to ask again, that the remote has."""
        feed, has, inflight = self.feed, channel.remote_has, self.inflight
        local = feed.bitfield
        for block in feed.wanted:
            if block not in inflight and block not in local and block in has:
                return block
        for block in sorted(self.requeued):
            if block in local:
                self.requeued.discard(block)
            elif block not in inflight and block in has:
                self.requeued.discard(block)
                return block
        return None

    def _pick_endgame(self, peer: PeerLink, channel: Channel) -> int | None:
        """The last few blocks in flight may be asked of a second peer too."""
        if len(self.inflight) <= ENDGAME:
            has = channel.remote_has
            for block, askers in self.inflight.items():
                if peer not in askers and block in has and block not in channel.requested:
                    return block
        return None

    def _pick_prefetch(self, peer: PeerLink, channel: Channel, room: int) -> list[int]:
        """Up to ``room`` blocks of the prefetch ranges, in order, that are neither here
        nor in flight and that the remote has, now in flight to ``peer``; its scan
        remembers where it stopped."""
        feed, has, inflight, scan = self.feed, channel.remote_has, self.inflight, self._scans[peer]
        local = feed.bitfield
        ranges = feed.prefetching
        picked: list[int] = []
        for rng in list(ranges):
            start, end = rng
            assert start is not None
            limit = feed.blocks if feed.blocks is not None else has.end
            if end is not None:
                limit = min(limit, end)
            while start < limit and start in local:
                start += 1
            rng[0] = start
            if feed.blocks is not None and start >= limit:
                ranges.remove(rng)  # done
                continue
            pos = scan.pos if scan.range is rng else start
            pos = max(pos, start)
            while pos < limit:
                if pos not in local and pos not in inflight and pos in has:
                    inflight[pos] = {peer}  # (ranges may overlap: not picked twice)
                    picked.append(pos)
                    if len(picked) == room:
                        scan.range, scan.pos = rng, pos + 1
                        return picked
                pos += 1
            scan.range, scan.pos = rng, pos
        return picked

    def _in_prefetch(self, block: int) -> bool:
        return any(start is not None and start <= block and (end is None or block < end)
                   for start, end in self.feed.prefetching)

    def requeue(self, block: int) -> None:
        """A block's request failed: ask someone else."""
        self.inflight.pop(block, None)
        if block not in self.feed.bitfield:
            self.requeued.add(block)

    def requests_failed(self, peer: PeerLink, blocks: Iterable[int]) -> None:
        """``peer`` will not answer its requests for ``blocks``: ask someone else."""
        for block in blocks:
            askers = self.inflight.get(block)
            if askers is not None:
                askers.discard(peer)
                if not askers:
                    self.requeue(block)
        self.fill_all()

    def channel_closed(self, peer: PeerLink, channel: Channel) -> None:
        self.channels.pop(peer, None)
        self._scans.pop(peer, None)
        self.requests_failed(peer, channel.requested)
        self.swarm.maybe_forget(self)


class Swarm:
    """Every peer of a core, and a :class:`FeedSwarm` for each feed shared with them.

    What its peers tell it is ``peer.Scheduler``; the timeouts are ``deadlines.Timeouts``.
    ``keypair`` is the node key (default: the database's, ``secure.node_keypair``);
    ``secure_only`` refuses peers that do not encrypt (JS peers); ``encrypt=False``
    does not offer encryption (for measuring the plain protocol between hyperfs peers:
    both must say so, since a hyperfs peer that offers refuses one that does not).
    """

    def __init__(self, core: Core, nursery: trio.Nursery, *, request_timeout: float = 10.0,
                 handshake_timeout: float = 10.0, message_timeout: float = 60.0,
                 peer_id: bytes | None = None, keypair: KeyPair | None = None,
                 secure_only: bool = False, encrypt: bool = True) -> None:
        self.core = core
        self.nursery = nursery
        self.timeouts = Timeouts(request_timeout, handshake_timeout, message_timeout)
        self.peer_id = peer_id or os.urandom(32)
        self.keypair = keypair or node_keypair(core.store.path)
        self.secure_only = secure_only
        self.encrypt = encrypt
        self._keys: dict[bytes, bytes] | None = None  # discovery key -> id, built on use
        self.peers: set[Peer] = set()
        self.feeds: dict[bytes, FeedSwarm] = {}
        self._unsubscribe = [core.on("interested", self._interested),
                             core.on("uninterested", self._uninterested),
                             core.on("finalized", self._known)]
        for feed in core.interesting():
            assert feed.id is not None  # interest is taken by id (Core.get)
            self._interested(feed.id)

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for peer in list(self.peers):
            peer.close()
        for feed_swarm in list(self.feeds.values()):
            feed_swarm.close()
        self.feeds.clear()

    # -- peers ----------------------------------------------------------------------------

    def add_peer(self, stream: trio.abc.Stream, address: str | None = None) -> Peer:
        """Start replicating over ``stream``; the peer runs until either side closes."""
        peer = Peer(self, stream, address, peer_id=self.peer_id,
                    extensions=self.core.extensions, timeouts=self.timeouts,
                    batch=self.core.store.group, keypair=self.keypair,
                    secure_only=self.secure_only, offer=self.encrypt)
        self.peers.add(peer)
        self.nursery.start_soon(peer.run)
        return peer

    async def replicate(self, stream: trio.abc.Stream, address: str | None = None) -> Peer:
        """Replicate over ``stream`` until it closes; returns the finished peer."""
        peer = self.add_peer(stream, address)
        await peer.closed.wait()
        return peer

    def peer_ready(self, peer: Peer) -> None:
        """Handshake done: join every feed the local side wants."""
        for feed_id, feed_swarm in list(self.feeds.items()):
            if self.core.is_interested(feed_id):
                feed_swarm.join(peer)
        self.core.emit("peer", peer)

    def resolve(self, discovery_key: bytes) -> bytes | None:
        """The id behind a discovery key an encrypted peer joined, among the feeds
        stored here: one dict lookup (a peer naming unknown keys costs no more). The map
        is built from the store at the first Join and kept current as feeds are opened
        (recorded, to fetch) or finalized; nothing else adds feeds to an open store."""
        if self._keys is None:
            self._keys = {}
            for feed_id, _num, _blocks in self.core.store.feeds():
                self._known(feed_id)
        return self._keys.get(discovery_key)

    def _known(self, feed_id: bytes) -> None:
        if self._keys is not None:
            self._keys[channel_key(feed_id)] = feed_id

    def peer_closed(self, peer: Peer) -> None:
        self.peers.discard(peer)
        for feed_id in list(peer.channels):
            peer.close_channel(feed_id)
        log.info("peer %s closed: %s", peer.address or peer.remote_id, peer.close_reason)

    # -- feeds ----------------------------------------------------------------------------

    def _feed_swarm(self, feed_id: bytes) -> FeedSwarm:
        feed_swarm = self.feeds.get(feed_id)
        if feed_swarm is None:
            feed_swarm = self.feeds[feed_id] = FeedSwarm(self, self.core.hold(feed_id))
            self._known(feed_id)
        return feed_swarm

    def serve(self, peer: Peer, feed_id: bytes) -> None:
        """``peer`` named a feed: join it on that peer alone, if we store it (or want it)."""
        if feed_id in self.feeds or self.core.stored(feed_id):
            self._feed_swarm(feed_id).join(peer)

    def named(self, feed_id: bytes) -> None:
        self.core.emit("shared", feed_id)

    def _interested(self, feed_id: bytes) -> None:
        feed_swarm = self._feed_swarm(feed_id)
        for peer in list(self.peers):
            if peer.handshaken.is_set():
                feed_swarm.join(peer)

    def _uninterested(self, feed_id: bytes) -> None:
        feed_swarm = self.feeds.get(feed_id)
        if feed_swarm is not None:
            self.maybe_forget(feed_swarm)

    def maybe_forget(self, feed_swarm: FeedSwarm) -> None:
        """Close a feed's swarm state once no peer shares it and nobody here wants it."""
        feed_id = feed_swarm.feed.id
        assert feed_id is not None
        if (not feed_swarm.channels and not self.core.is_interested(feed_id)
                and self.feeds.pop(feed_id, None) is feed_swarm):
            feed_swarm.close()

    def status(self) -> dict[str, object]:
        return {
            "peer_id": self.peer_id.hex(),
            "node_key": self.keypair.public.hex(),
            "peers": [peer.status() for peer in self.peers],
            "feeds": [
                {"id": feed_id.hex(), "blocks": fs.feed.blocks, "local": fs.feed.local,
                 "peers": len(fs.channels), "inflight": len(fs.inflight),
                 "private": feed_id in self.core.private}
                for feed_id, fs in self.feeds.items()
            ],
        }


@asynccontextmanager
async def open_swarm(core: Core, **options: Any) -> AsyncIterator[Swarm]:
    """A swarm for ``core`` whose peers all end when the block exits (``options``: the
    keywords of :class:`Swarm`)."""
    async with trio.open_nursery() as nursery:
        swarm = Swarm(core, nursery, **options)
        try:
            yield swarm
        finally:
            swarm.close()
            nursery.cancel_scope.cancel()
