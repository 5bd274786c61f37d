"""A BitTorrent mainline DHT node (libtorrent) used only for peer discovery, driven by trio.

Why libtorrent: it is a mature, interoperable Kademlia implementation (BEP 5, with the
anti-abuse rules of BEP 42) that the original implementation's DHT also speaks, so feeds
announced here are findable by any mainline node. We use the session purely as a DHT
node: no torrents are added, incoming/outgoing BitTorrent connections are disabled, and
Local Service Discovery is always off (it multicasts on every interface and only serves
torrents anyway).

How it is driven: libtorrent runs its own network thread and reports results as *alerts*.
``set_alert_fd`` makes it write a byte to a pipe whenever the alert queue becomes
non-empty, so a trio task waits on the pipe with ``trio.lowlevel.wait_readable`` and never
blocks the event loop or needs a thread of ours.

Facts this code depends on (measured with libtorrent 2.1.1):

* All settings must be passed when the session is created (``lt.session(settings)``);
  applying them later lets the session start with defaults (public bootstrap, LSD, UPnP).
* Routers (``dht_bootstrap_nodes``) are only used to start lookups and never enter the
  routing table; real nodes are added with ``add_dht_node`` once *we* listen.
* ``dht_get_peers`` has no completion signal: a ``dht_get_peers_reply_alert`` is posted
  for each responding node that stores peers (category ``dht_operation``), and nothing at
  all when no one has any. Lookups are therefore repeated on a schedule, sooner while they
  find nothing (a young routing table often yields nothing), and results stream out.
* ``dht_restrict_routing_ips``/``dht_restrict_search_ips`` allow one node per /24; they
  must be off for a private DHT where every node is 127.0.0.x.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import libtorrent as lt
import trio

from hyperfs.base.callbacks import Callbacks
from hyperfs.net.address import Address
from hyperfs.net.discovery.dht_options import (
    PUBLIC_ROUTERS,
    DhtOptions,
    check_options,
    endpoint,
    session_settings,
)

# With the options re-exported, this one module is what a user of the DHT imports.
__all__ = [
    "PUBLIC_ROUTERS",
    "DhtNode",
    "DhtOptions",
    "PeerCallback",
    "open_dht",
    "session_settings",
]

#: Called (in the trio thread) with ``(info_hash, (host, port))`` for each peer a lookup finds.
PeerCallback = Callable[[bytes, Address], None]

_UDP_SOCKETS = {lt.socket_type_t.udp, lt.socket_type_t.utp}


@dataclass
class _HashState:
    """Per-info-hash bookkeeping for stats and for the lookup schedule."""

    peers: set[Address] = field(default_factory=set)
    last_peer_at: float = -math.inf
    lookups: int = 0
    announces: int = 0


class DhtNode:
    """One DHT node. Create with :func:`open_dht`; all methods run in the trio thread.

    Announces and lookups are *standing*: ``announce``/``lookup`` start a schedule that
    repeats until ``stop_announce``/``stop_lookup`` or close. Peers found are delivered to
    the callbacks registered with :meth:`add_listener` (and the one given to
    :func:`open_dht`), possibly repeatedly: deduplication is the caller's policy.
    """

    def __init__(self, options: DhtOptions, session: Any, alert_fd: int) -> None:
        self.options = options
        self._ses = session
        self._alert_fd = alert_fd
        self._listeners: Callbacks[[bytes, Address]] = Callbacks()
        self._nursery: trio.Nursery | None = None
        self._listening = trio.Event()
        self._listen_error: str | None = None
        self._port = 0
        self._hashes: dict[bytes, _HashState] = {}
        self._announce_scopes: dict[bytes, tuple[int, trio.CancelScope]] = {}
        self._lookup_scopes: dict[bytes, trio.CancelScope] = {}
        self._nodes = 0
        self._replacements = 0
        self._announces = 0
        self._lookups = 0
        self._stats_event = trio.Event()
        self._table_filled = trio.Event()

    # -- public API ---------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The address the DHT socket is bound to (as configured)."""
        return self.options.bind

    @property
    def port(self) -> int:
        """The UDP port the DHT listens on (known once open)."""
        return self._port

    def add_listener(self, callback: PeerCallback) -> Callable[[], None]:
        """Register ``callback(info_hash, (host, port))``; returns a function removing it."""
        return self._listeners.add(callback)

    def add_node(self, host: str, port: int) -> None:
        """Add a known DHT node: it is pinged and enters the routing table if it answers."""
        self._ses.add_dht_node((host, port))

    def announce(self, info_hash: bytes, port: int) -> None:
        """Announce that peers for ``info_hash`` are at (our address, ``port``), repeatedly.

        Idempotent for the same port; a different port replaces the schedule.
        """
        info_hash = _check_hash(info_hash)
        current = self._announce_scopes.get(info_hash)
        if current is not None and current[0] == port:
            return
        if current is not None:
            current[1].cancel()
        scope = trio.CancelScope()
        self._announce_scopes[info_hash] = (port, scope)
        self._spawn(self._announce_loop, info_hash, port, scope)

    def stop_announce(self, info_hash: bytes) -> None:
        """Stop re-announcing (entries stored on other nodes expire by themselves)."""
        current = self._announce_scopes.pop(bytes(info_hash), None)
        if current is not None:
            current[1].cancel()

    def lookup(self, info_hash: bytes) -> None:
        """Look up peers for ``info_hash`` now and on a schedule until :meth:`stop_lookup`."""
        info_hash = _check_hash(info_hash)
        if info_hash in self._lookup_scopes:
            return
        scope = trio.CancelScope()
        self._lookup_scopes[info_hash] = scope
        self._spawn(self._lookup_loop, info_hash, scope)

    def stop_lookup(self, info_hash: bytes) -> None:
        """Stop the standing lookup for ``info_hash``."""
        scope = self._lookup_scopes.pop(bytes(info_hash), None)
        if scope is not None:
            scope.cancel()

    def query(self, info_hash: bytes) -> None:
        """Issue one get_peers lookup now (results arrive through the listeners)."""
        info_hash = _check_hash(info_hash)
        self._hash(info_hash).lookups += 1
        self._lookups += 1
        self._ses.dht_get_peers(lt.sha1_hash(info_hash))

    def announce_once(self, info_hash: bytes, port: int) -> None:
        """Send one announce now, outside any schedule."""
        info_hash = _check_hash(info_hash)
        self._hash(info_hash).announces += 1
        self._announces += 1
        self._ses.dht_announce(lt.sha1_hash(info_hash), port, 0)

    def settings(self) -> dict[str, Any]:
        """The live session's settings (what libtorrent actually uses)."""
        return dict(self._ses.get_settings())

    def stats(self) -> dict[str, Any]:
        """Counters: routing-table nodes, announces/lookups sent, unique peers per hash."""
        return {
            "address": endpoint(self.address, self.port),
            "nodes": self._nodes,
            "replacement_nodes": self._replacements,
            "announces": self._announces,
            "lookups": self._lookups,
            "announcing": len(self._announce_scopes),
            "looking_up": len(self._lookup_scopes),
            "peers_found": {h.hex(): len(s.peers) for h, s in self._hashes.items() if s.peers},
        }

    async def refresh_stats(self) -> dict[str, Any]:
        """Ask libtorrent for the routing-table size now and return fresh :meth:`stats`."""
        event = self._stats_event
        self._ses.post_dht_stats()
        await event.wait()
        return self.stats()

    async def wait_for_nodes(self, count: int = 1) -> None:
        """Wait until the routing table holds at least ``count`` nodes (polls the stats)."""
        while self._nodes < count:
            event = self._stats_event
            self._ses.post_dht_stats()
            await event.wait()
            if self._nodes < count:
                await trio.sleep(0.05)  # libtorrent has no "node added" alert: poll

    # -- internals ----------------------------------------------------------------------

    def _hash(self, info_hash: bytes) -> _HashState:
        state = self._hashes.get(info_hash)
        if state is None:
            state = self._hashes[info_hash] = _HashState()
        return state

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is None:
            raise RuntimeError("DHT node is not running (use open_dht)")
        self._nursery.start_soon(fn, *args)

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` seconds, but stop early if the routing table was empty and
        receives its first node: whatever we just sent reached no one."""
        with trio.move_on_after(delay):
            if self._nodes == 0:
                await self._table_filled.wait()
            else:
                await trio.sleep_forever()

    async def _announce_loop(self, info_hash: bytes, port: int, scope: trio.CancelScope) -> None:
        with scope:
            delay = self.options.initial_retry
            while True:
                self.announce_once(info_hash, port)
                await self._pause(delay)
                delay = min(delay * 2, self.options.interval)

    async def _lookup_loop(self, info_hash: bytes, scope: trio.CancelScope) -> None:
        with scope:
            delay = self.options.initial_retry
            while True:
                sent_at = time.monotonic()
                self.query(info_hash)
                await self._pause(delay)
                if self._hash(info_hash).last_peer_at >= sent_at:
                    delay = self.options.interval
                else:
                    delay = min(delay * 2, self.options.interval)

    async def _alert_pump(self) -> None:
        """Deliver libtorrent's alerts in the trio thread as they become available."""
        while True:
            # Drain the wake-up bytes *before* popping: an alert posted after the pop
            # refills an empty queue and writes a new byte, so none is missed.
            with contextlib.suppress(BlockingIOError):
                while os.read(self._alert_fd, 4096):
                    pass
            for alert in self._ses.pop_alerts():
                self._handle_alert(alert)
            await trio.lowlevel.wait_readable(self._alert_fd)

    def _handle_alert(self, alert: Any) -> None:
        if isinstance(alert, lt.dht_get_peers_reply_alert):
            info_hash = alert.info_hash.to_bytes()
            state = self._hash(info_hash)
            for host, port in alert.peers():
                peer = (str(host), int(port))
                state.peers.add(peer)
                state.last_peer_at = time.monotonic()
                self._listeners(info_hash, peer)
        elif isinstance(alert, lt.dht_stats_alert):
            self._nodes = sum(b["num_nodes"] for b in alert.routing_table)
            if self._nodes:
                self._table_filled.set()
            self._replacements = sum(b["num_replacements"] for b in alert.routing_table)
            self._stats_event.set()
            self._stats_event = trio.Event()
        elif isinstance(alert, lt.listen_succeeded_alert):
            if alert.socket_type in _UDP_SOCKETS:
                self._port = int(alert.port)
                self._listening.set()
        elif (
            isinstance(alert, lt.listen_failed_alert)
            and alert.socket_type in _UDP_SOCKETS
            and not self._listening.is_set()
        ):
            self._listen_error = alert.message()
            self._listening.set()

    async def _stats_loop(self) -> None:
        # While the table is empty, poll fast so that schedules waiting in _pause resume
        # as soon as the first node is in (libtorrent has no alert for it); back off
        # towards stats_interval so an offline node does not poll at 20 Hz forever.
        empty_delay = 0.05
        while True:
            self._ses.post_dht_stats()
            if self._nodes:
                await trio.sleep(self.options.stats_interval)
            else:
                await trio.sleep(empty_delay)
                empty_delay = min(empty_delay * 1.2, self.options.stats_interval)


def _check_hash(info_hash: bytes) -> bytes:
    info_hash = bytes(info_hash)
    if len(info_hash) != 20:
        raise ValueError(f"info-hash must be 20 bytes, got {len(info_hash)}")
    return info_hash


@contextlib.asynccontextmanager
async def open_dht(
    options: DhtOptions | None = None, on_peer: PeerCallback | None = None
) -> AsyncIterator[DhtNode]:
    """Start a DHT node; it is listening (``node.port`` known) when this yields.

    Everything runs under a nursery owned by this context: leaving it (or cancellation)
    stops all schedules and destroys the libtorrent session (in a worker thread, since the
    destructor joins libtorrent's threads).
    """
    options = options or DhtOptions()
    check_options(options)
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    box: list[Any] = []
    try:
        settings = session_settings(options)
        box.append(await trio.to_thread.run_sync(lt.session, settings))
        box[0].set_alert_fd(wfd)
        node = DhtNode(options, box[0], rfd)
        try:
            async with trio.open_nursery() as nursery:
                node._nursery = nursery
                nursery.start_soon(node._alert_pump)
                with trio.fail_after(10):
                    await node._listening.wait()
                if node._listen_error is not None:
                    raise OSError(
                        f"DHT could not listen on {settings['listen_interfaces']}: "
                        f"{node._listen_error}"
                    )
                nursery.start_soon(node._stats_loop)
                for host, port in options.bootstrap_nodes:
                    node.add_node(host, port)
                try:
                    yield node
                finally:
                    node._nursery = None
                    nursery.cancel_scope.cancel()
        finally:
            node._ses = None
    finally:
        with trio.CancelScope(shield=True):
            # Drop the last reference in a worker: ~session() blocks until libtorrent's
            # threads have stopped.
            await trio.to_thread.run_sync(box.clear)
        os.close(rfd)
        os.close(wfd)
