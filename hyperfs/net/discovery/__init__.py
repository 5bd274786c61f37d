"""Peer discovery for hyperfs: the mainline DHT (libtorrent) plus multicast DNS (zeroconf).

This package is self-contained (it knows nothing of feeds, the wire protocol or
connections, only the rule for a feed id, :func:`hyperfs.tree.hashes.parse_id`); the network
layer feeds it ids and consumes ``(feed_id, (host, port))``::

    async with open_discovery(port=tcp_port, dht=DhtOptions(), mdns=MdnsOptions()) as disc:
        disc.hold(feed_id)            # we serve it: announce only
        disc.want(other_id)           # we want it: announce + look up
        async for feed_id, (host, port) in disc.peers():
            ...connect...

What goes on the network is the discovery key of each id (:mod:`.keys`), never the id,
unless ``seed_compat=True`` also announces ``feed_id[:20]`` on the DHT so that peers of
the original implementation find us (and we them).

A peer is reported at most once per ``backoff`` seconds for the same feed (sources keep
re-reporting as they re-query, which is what lets a dropped connection be re-established),
and never when it is our own address and port.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from hyperfs.base.callbacks import Callbacks
from hyperfs.net.address import Address
from hyperfs.net.discovery.dht import DhtNode, DhtOptions, open_dht
from hyperfs.net.discovery.keys import discovery_key, seed_info_hash
from hyperfs.net.discovery.mdns import MdnsNode, MdnsOptions, local_ipv4_addresses, open_mdns
from hyperfs.tree.hashes import parse_id

__all__ = [
    "DhtOptions",
    "Discovery",
    "MdnsOptions",
    "discovery_key",
    "open_discovery",
    "seed_info_hash",
]

FeedPeerCallback = Callable[[bytes, Address], None]
Mode = Literal["want", "hold"]

_PRUNE_AT = 4096


@dataclass
class _Feed:
    mode: Mode
    keys: tuple[bytes, ...]
    peers: set[Address] = field(default_factory=set)
    reported: int = 0


class Discovery:
    """Combined DHT + mDNS discovery. Create with :func:`open_discovery`; call from trio."""

    def __init__(
        self,
        port: int,
        host: str | None,
        dht: DhtNode | None,
        mdns: MdnsNode | None,
        seed_compat: bool,
        backoff: float,
        buffer: int,
    ) -> None:
        self.port = port
        self.host = host
        self.dht = dht
        self.mdns = mdns
        self.seed_compat = seed_compat
        self.backoff = backoff
        self._buffer = buffer
        self._feeds: dict[bytes, _Feed] = {}
        self._by_key: dict[bytes, bytes] = {}
        self._last_report: dict[tuple[bytes, Address], float] = {}
        self._subscribers: list[trio.MemorySendChannel[tuple[bytes, Address]]] = []
        self._callbacks: Callbacks[[bytes, Address]] = Callbacks()
        self._own_hosts = self._compute_own_hosts(host)
        self._ignored_self = 0
        self._suppressed = 0
        self._dropped = 0

    # -- public API ---------------------------------------------------------------------

    def want(self, feed_id: bytes | str) -> None:
        """We want this feed: announce it and look for peers that have it."""
        self._set(parse_id(feed_id), "want")

    def hold(self, feed_id: bytes | str) -> None:
        """We have this feed: announce it (others find us) but do not look for peers."""
        self._set(parse_id(feed_id), "hold")

    def forget(self, feed_id: bytes | str) -> None:
        """Stop announcing and looking up this feed."""
        feed_id = parse_id(feed_id)
        feed = self._feeds.pop(feed_id, None)
        if feed is None:
            return
        for key in feed.keys:
            self._by_key.pop(key, None)
            if self.dht is not None:
                self.dht.stop_announce(key)
                self.dht.stop_lookup(key)
            if self.mdns is not None:
                self.mdns.withdraw(key)
                self.mdns.unwant(key)

    def peers(self) -> trio.MemoryReceiveChannel[tuple[bytes, Address]]:
        """A new subscription to found peers, as ``(feed_id, (host, port))``.

        Subscribed from the moment of the call (nothing found after it is missed). Iterate
        with ``async for``; close it (``async with disc.peers() as peers:``) to
        unsubscribe. Ends when discovery closes. A subscriber that falls more than the
        buffer behind loses reports (counted in ``status()['dropped']``).
        """
        send, receive = trio.open_memory_channel[tuple[bytes, Address]](self._buffer)
        self._subscribers.append(send)
        return receive

    def add_listener(self, callback: FeedPeerCallback) -> Callable[[], None]:
        """Call ``callback(feed_id, (host, port))`` for each report; returns a remover."""
        return self._callbacks.add(callback)

    def status(self) -> dict[str, Any]:
        """Snapshot for diagnostics (``hyperfs status`` and tests)."""
        return {
            "port": self.port,
            "seed_compat": self.seed_compat,
            "feeds": {
                fid.hex(): {"mode": f.mode, "peers_found": len(f.peers), "reported": f.reported}
                for fid, f in self._feeds.items()
            },
            "ignored_self": self._ignored_self,
            "suppressed_duplicates": self._suppressed,
            "dropped": self._dropped,
            "dht": self.dht.stats() if self.dht is not None else None,
            "mdns": self.mdns.stats() if self.mdns is not None else None,
        }

    # -- internals ----------------------------------------------------------------------

    @staticmethod
    def _compute_own_hosts(host: str | None) -> frozenset[str] | None:
        """Addresses at which (host, our port) is ourselves; None = any local address."""
        if host is None or ipaddress.ip_address(host).is_unspecified:
            return None
        return frozenset({host})

    def _is_self(self, peer: Address) -> bool:
        host, port = peer
        if port != self.port:
            return False
        if self._own_hosts is not None:
            return host in self._own_hosts
        # Listener on all addresses: any address of this host is us. Interfaces can
        # change, so look them up (rare: only for reports carrying our own port).
        return host in local_ipv4_addresses(include_loopback=True)

    def _set(self, feed_id: bytes, mode: Mode) -> None:
        keys: tuple[bytes, ...] = (discovery_key(feed_id),)
        if self.seed_compat:
            keys += (seed_info_hash(feed_id),)
        feed = self._feeds.get(feed_id)
        if feed is None:
            feed = self._feeds[feed_id] = _Feed(mode=mode, keys=keys)
        feed.mode = mode
        for key in keys:
            self._by_key[key] = feed_id
        if self.dht is not None:
            for key in keys:
                self.dht.announce(key, self.port)
                if mode == "want":
                    self.dht.lookup(key)
                else:
                    self.dht.stop_lookup(key)
        if self.mdns is not None:
            # mDNS only carries the private key: the original implementation's mDNS
            # format is not spoken here.
            self.mdns.advertise(keys[0])
            if mode == "want":
                self.mdns.want(keys[0])
            else:
                self.mdns.unwant(keys[0])

    def _on_key_peer(self, key: bytes, peer: Address) -> None:
        """A source found ``peer`` for ``key``: map to the feed, filter, deduplicate."""
        feed_id = self._by_key.get(key)
        feed = None if feed_id is None else self._feeds.get(feed_id)
        if feed_id is None or feed is None or feed.mode != "want":
            return  # forgotten, or our own announce's traversal reporting for a held feed
        if self._is_self(peer):
            self._ignored_self += 1
            return
        feed.peers.add(peer)
        now = trio.current_time()
        last = self._last_report.get((feed_id, peer))
        if last is not None and now - last < self.backoff:
            self._suppressed += 1
            return
        if len(self._last_report) >= _PRUNE_AT:
            self._last_report = {
                k: t for k, t in self._last_report.items() if now - t < self.backoff
            }
        self._last_report[(feed_id, peer)] = now
        feed.reported += 1
        item = (feed_id, peer)
        for send in list(self._subscribers):
            try:
                send.send_nowait(item)
            except trio.WouldBlock:
                self._dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(send)
        self._callbacks(feed_id, peer)

    def _close(self) -> None:
        for send in self._subscribers:
            send.close()
        self._subscribers.clear()


@contextlib.asynccontextmanager
async def open_discovery(
    port: int,
    *,
    dht: DhtOptions | None = None,
    mdns: MdnsOptions | None = None,
    seed_compat: bool = False,
    host: str | None = None,
    backoff: float = 60.0,
    on_peer: FeedPeerCallback | None = None,
    buffer: int = 1024,
) -> AsyncIterator[Discovery]:
    """Run discovery for a node whose hypercore TCP listener is at ``port``.

    ``dht``/``mdns``: options to enable each mechanism (None = off; ``DhtOptions()``
    joins the public DHT, ``MdnsOptions()`` uses every interface). ``host``: the address
    the TCP listener is bound to, if specific (used to recognise ourselves). ``backoff``:
    minimum seconds between two reports of the same peer for the same feed.

    Both mechanisms run in nurseries owned by this context; on exit (or cancellation)
    announcements stop, zeroconf says goodbye and closes, and the libtorrent session is
    destroyed.
    """
    if not 0 < port < 65536:
        raise ValueError(f"bad port {port}")
    if host is not None:
        ipaddress.ip_address(host)
    async with contextlib.AsyncExitStack() as stack:
        dht_node = await stack.enter_async_context(open_dht(dht)) if dht is not None else None
        mdns_node = (
            await stack.enter_async_context(open_mdns(port, mdns)) if mdns is not None else None
        )
        disc = Discovery(port, host, dht_node, mdns_node, seed_compat, backoff, buffer)
        stack.callback(disc._close)
        if on_peer is not None:
            disc.add_listener(on_peer)
        if dht_node is not None:
            dht_node.add_listener(disc._on_key_peer)
        if mdns_node is not None:
            mdns_node.add_listener(disc._on_key_peer)
        yield disc
