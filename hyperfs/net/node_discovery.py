"""Discovery for a running node: what to announce and look up, and dialing what is found.

:mod:`hyperfs.net.discovery` finds peers for the ids it is given; this module decides which
ids those are, for a node (:mod:`hyperfs.net.node`) and its core:

* Feeds the local side wants (the core's 'interested') are *wanted*: announced and looked
  up at once on the DHT and over mDNS (:meth:`Discovery.want`, with its fast first
  retries), and every peer found is dialed once (``connect``; the node deduplicates, and
  discovery re-reports a peer only after ``peer_backoff``, which is the redial back-off).
* Feeds stored with content are *held*: announced only. A node may hold 10,000 feeds, so
  they do not go through :meth:`Discovery.hold` (a task and a 1-2-4-... s retry schedule
  per feed, for every feed at once). One paced task announces them instead, at most
  ``hold_rate`` feeds a second, each at ``HELD_DELAYS`` after its first announce and then
  every ``DhtOptions.interval``; stored feeds are re-listed every ``rescan`` seconds,
  which is how feeds added or removed while running are noticed.
* mDNS carries at most ``MAX_TXT_KEYS`` keys per node, so the keys advertised are chosen:
  wanted feeds first (newest first), then held feeds by when they were last served or
  wanted, then the rest in id order.

A *discovery round* for a wanted feed (:meth:`NodeDiscovery.wait_round`) is how long one
honest attempt to find its peers takes: the DHT's routing table has a node (at most
``bootstrap_wait`` after the want) and ``dht_round`` seconds of lookups have run since,
and mDNS has had ``resolve_timeout`` to resolve the services on the link. A reader that
has heard of no peer after a round plus its own timeout gives up (``Node.get``).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from hyperfs.feeds.core import Core
from hyperfs.net.address import Address
from hyperfs.net.discovery import DhtOptions, Discovery, MdnsOptions, open_discovery
from hyperfs.net.discovery.keys import discovery_key, seed_info_hash
from hyperfs.net.discovery.mdns import MAX_TXT_KEYS
from hyperfs.replication.swarm import Swarm

log = logging.getLogger(__name__)

HELD_DELAYS = (2.0, 8.0)
"""Seconds from a held feed's first announce to its second, and second to third: the first
announces of a young routing table reach few nodes. Then every ``DhtOptions.interval``."""

SERVED_POLL = 5.0
"""How often the feeds being served are noted (for the mDNS choice)."""


@dataclass(frozen=True)
class DiscoveryConfig:
    """How a node discovers peers; ``dht``/``mdns`` None turns that mechanism off."""

    dht: DhtOptions | None = None
    mdns: MdnsOptions | None = None
    #: Also announce/look up ``id[:20]`` on the DHT, as the original implementation does.
    seed_compat: bool = False
    #: Held feeds announced per second at most (wanted feeds are not limited).
    hold_rate: float = 20.0
    #: Seconds between listings of the stored feeds (new feeds are held from then on).
    rescan: float = 60.0
    #: A round's longest wait for the DHT's first routing-table node.
    bootstrap_wait: float = 10.0
    #: A round's seconds of DHT lookups once the routing table has a node.
    dht_round: float = 3.0
    #: Most keys advertised over mDNS (the TXT record's cap).
    mdns_keys: int = MAX_TXT_KEYS
    #: Seconds before a found peer is reported (so dialed) again for the same feed.
    peer_backoff: float = 30.0

    @property
    def enabled(self) -> bool:
        return self.dht is not None or self.mdns is not None


class NodeDiscovery:
    """The glue between a core/swarm and a :class:`Discovery`. Use :func:`open_node_discovery`."""

    def __init__(self, core: Core, swarm: Swarm, disc: Discovery, config: DiscoveryConfig,
                 connect: Callable[[Address], None]) -> None:
        self.core = core
        self.swarm = swarm
        self.disc = disc
        self.config = config
        self._connect = connect
        self.wanted: dict[bytes, float] = {}  # id -> when it became wanted
        self.held: dict[bytes, int] = {}  # id -> sequence number of its live heap entry
        self._heap: list[tuple[float, int, int, bytes]] = []  # (due, seq, step, id)
        self._seq = 0
        self._heap_changed = trio.Event()
        self._last_used: dict[bytes, float] = {}
        self._mdns_on: set[bytes] = set()
        self._mdns_dirty = trio.Event()
        self._found: dict[bytes, trio.Event] = {}
        self._rounds_done: set[bytes] = set()
        self._dht_ready_at: float | None = None
        self.held_announces = 0
        self.dialed = 0

    # -- core events and found peers ------------------------------------------------------

    def _interested(self, feed_id: bytes) -> None:
        self.wanted[feed_id] = trio.current_time()
        self.disc.want(feed_id)  # advertises on mDNS too; the curator keeps the cap
        self._mdns_on.add(discovery_key(feed_id))
        self._mdns_dirty.set()

    def _uninterested(self, feed_id: bytes) -> None:
        if self.wanted.pop(feed_id, None) is None:
            return
        self.disc.forget(feed_id)
        self._mdns_on.discard(discovery_key(feed_id))
        self._found.pop(feed_id, None)
        self._rounds_done.discard(feed_id)
        self._last_used[feed_id] = trio.current_time()
        num = self.core.store.lookup(feed_id)
        if num is not None and self.core.store.blocks(num) is not None:
            self._hold(feed_id, fresh=feed_id not in self.held)
        self._mdns_dirty.set()

    def _on_peer(self, feed_id: bytes, peer: Address) -> None:
        self._found.setdefault(feed_id, trio.Event()).set()
        self.dialed += 1
        log.info("discovered %s:%d for %s", peer[0], peer[1], feed_id.hex()[:12])
        self._connect(peer)

    # -- held feeds: paced DHT announces ----------------------------------------------------

    def _hold(self, feed_id: bytes, *, fresh: bool = True) -> None:
        """Announce ``feed_id`` from now on (``fresh``: soon, restarting its schedule)."""
        if feed_id in self.held and not fresh:
            return
        self._seq += 1
        self.held[feed_id] = self._seq
        heapq.heappush(self._heap, (trio.current_time(), self._seq, 0, feed_id))
        self._heap_changed.set()
        self._mdns_dirty.set()

    def _unhold(self, feed_id: bytes) -> None:
        if self.held.pop(feed_id, None) is not None:  # its heap entry goes stale
            self._mdns_dirty.set()

    async def _rescan(self) -> None:
        """Hold every stored feed with content; drop those deleted since the last scan."""
        while True:
            seen: set[bytes] = set()
            for count, (feed_id, _num, blocks) in enumerate(self.core.store.feeds()):
                if count % 512 == 511:
                    await trio.lowlevel.checkpoint()
                if blocks is not None:
                    seen.add(feed_id)
                    if feed_id not in self.held:
                        self._hold(feed_id)
            for feed_id in [f for f in self.held if f not in seen]:
                self._unhold(feed_id)
            await trio.sleep(self.config.rescan)

    async def _announce_held(self) -> None:
        dht = self.disc.dht
        assert dht is not None
        while dht.stats()["nodes"] == 0:  # an announce into an empty table reaches no one
            await trio.sleep(0.1)
        gap = 1.0 / self.config.hold_rate
        while True:
            if not self._heap:
                await self._heap_changed.wait()
                self._heap_changed = trio.Event()
                continue
            due, seq, step, feed_id = self._heap[0]
            now = trio.current_time()
            if due > now:
                with trio.move_on_at(due):
                    await self._heap_changed.wait()
                    self._heap_changed = trio.Event()
                continue
            heapq.heappop(self._heap)
            if self.held.get(feed_id) != seq:
                continue  # unheld, or rescheduled by a fresher entry
            if feed_id not in self.wanted:  # a wanted feed has Discovery's own schedule
                for key in self._keys(feed_id):
                    dht.announce_once(key, self.disc.port)
                self.held_announces += 1
            delay = HELD_DELAYS[step] if step < len(HELD_DELAYS) else dht.options.interval
            heapq.heappush(self._heap, (now + delay, seq, step + 1, feed_id))
            await trio.sleep(gap)

    def _keys(self, feed_id: bytes) -> tuple[bytes, ...]:
        key = discovery_key(feed_id)
        return (key, seed_info_hash(feed_id)) if self.config.seed_compat else (key,)

    # -- mDNS: which keys fit in the TXT record ------------------------------------------

    def _mdns_choice(self) -> set[bytes]:
        cap = self.config.mdns_keys
        wanted = sorted(self.wanted, key=self.wanted.__getitem__, reverse=True)
        used = sorted((f for f in self.held if f in self._last_used and f not in self.wanted),
                      key=self._last_used.__getitem__, reverse=True)
        chosen = wanted[:cap] + used[:max(0, cap - len(wanted))]
        if len(chosen) < cap:
            taken = set(chosen)
            chosen += [f for f in self.held if f not in taken][:cap - len(chosen)]
        return {discovery_key(f) for f in chosen}

    async def _curate_mdns(self) -> None:
        mdns = self.disc.mdns
        assert mdns is not None
        while True:
            await self._mdns_dirty.wait()
            self._mdns_dirty = trio.Event()
            chosen = self._mdns_choice()
            for key in self._mdns_on - chosen:
                mdns.withdraw(key)
            for key in chosen - self._mdns_on:
                mdns.advertise(key)
            self._mdns_on = chosen
            await trio.sleep(0.05)  # coalesce bursts (a rescan holding thousands)

    async def _note_served(self) -> None:
        """Remember which feeds peers are fetching: they go first among held mDNS keys."""
        while True:
            await trio.sleep(SERVED_POLL)
            now, changed = trio.current_time(), False
            for feed_id, feed_swarm in list(self.swarm.feeds.items()):
                if feed_swarm.channels and feed_id in self.held:
                    changed |= feed_id not in self._last_used
                    self._last_used[feed_id] = now
            if changed or len(self.held) > self.config.mdns_keys:
                self._mdns_dirty.set()

    async def _watch_dht(self) -> None:
        dht = self.disc.dht
        assert dht is not None
        while dht.stats()["nodes"] == 0:
            await trio.sleep(0.05)
        self._dht_ready_at = trio.current_time()

    # -- rounds ----------------------------------------------------------------------------

    def round_over(self, feed_id: bytes) -> bool:
        """Whether :meth:`wait_round` would return at once (cheap: called per block)."""
        found = self._found.get(feed_id)
        return feed_id in self._rounds_done or (found is not None and found.is_set())

    async def wait_round(self, feed_id: bytes) -> None:
        """Return when one discovery round for wanted ``feed_id`` is over, or a peer for it
        has been found (whichever is first). See the module doc."""
        found = self._found.setdefault(feed_id, trio.Event())
        if self.round_over(feed_id):
            return
        start = self.wanted.get(feed_id, trio.current_time())
        async with trio.open_nursery() as nursery:
            async def until_found() -> None:
                await found.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_found)
            if self.disc.mdns is not None:
                await trio.sleep_until(start + self.disc.mdns.options.resolve_timeout)
            if self.disc.dht is not None:
                with trio.move_on_at(start + self.config.bootstrap_wait):
                    while self._dht_ready_at is None:
                        await trio.sleep(0.05)
                if self._dht_ready_at is not None:
                    await trio.sleep_until(max(start, self._dht_ready_at)
                                           + self.config.dht_round)
            if feed_id in self.wanted:
                self._rounds_done.add(feed_id)
            nursery.cancel_scope.cancel()

    def explain(self, feed_id: bytes) -> str:
        """Why no peer has sent anything of ``feed_id``, for a reader's error message."""
        status = self.disc.status()
        peers = status["feeds"].get(feed_id.hex(), {}).get("peers_found", 0)
        if peers:
            return f"discovery found {peers} peer(s) for it but none sent it"
        parts = []
        if status["dht"] is not None:
            dht = status["dht"]
            if dht["nodes"]:
                parts.append(f"DHT: {dht['nodes']} nodes known, {dht['lookups']} lookups")
            else:
                parts.append("DHT: no node answered (check --bootstrap and the network)")
        if status["mdns"] is not None:
            parts.append(f"mDNS: {status['mdns']['services_known']} hyperfs services on the "
                         "local network, none with it")
        return f"no peer has it: one discovery round found none ({'; '.join(parts)})"

    def status(self) -> dict[str, Any]:
        status = self.disc.status()
        status.update({
            "wanted": len(self.wanted),
            "held": len(self.held),
            "held_announces": self.held_announces,
            "mdns_advertised": len(self._mdns_on) if self.disc.mdns is not None else None,
            "peers_dialed": self.dialed,
        })
        return status

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        unsubscribe = [self.core.on("interested", self._interested),
                       self.core.on("uninterested", self._uninterested)]
        remove = self.disc.add_listener(self._on_peer)
        try:
            for feed in self.core.interesting():
                assert feed.id is not None
                self._interested(feed.id)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._rescan)
                if self.disc.dht is not None:
                    nursery.start_soon(self._announce_held)
                    nursery.start_soon(self._watch_dht)
                if self.disc.mdns is not None:
                    nursery.start_soon(self._curate_mdns)
                    nursery.start_soon(self._note_served)
                task_status.started()
        finally:
            remove()
            for stop in unsubscribe:
                stop()


@asynccontextmanager
async def open_node_discovery(core: Core, swarm: Swarm, config: DiscoveryConfig, *,
                              port: int, host: str | None,
                              connect: Callable[[Address], None]) -> AsyncIterator[NodeDiscovery]:
    """Discovery for a node listening on TCP ``host:port`` (``host`` None or 0.0.0.0: all
    addresses), dialing found peers with ``connect``; everything stops when the block exits."""
    async with open_discovery(port, dht=config.dht, mdns=config.mdns,
                              seed_compat=config.seed_compat, host=host,
                              backoff=config.peer_backoff) as disc:
        glue = NodeDiscovery(core, swarm, disc, config, connect)
        async with trio.open_nursery() as nursery:
            await nursery.start(glue._run)
            try:
                yield glue
            finally:
                nursery.cancel_scope.cancel()
