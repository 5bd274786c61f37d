"""How a DHT node is set up: :class:`DhtOptions`, and the complete settings pack of
the libtorrent session they make (:func:`session_settings`).

Apart from the node that runs the session (:mod:`.dht`), so that what will be configured
can be read, and asserted on by tests, without the machinery that drives it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import libtorrent as lt

from hyperfs.net.address import Address

#: The well-known public mainline routers; used only when no other routers are configured.
PUBLIC_ROUTERS: tuple[Address, ...] = (
    ("router.bittorrent.com", 6881),
    ("dht.transmissionbt.com", 6881),
    ("router.utorrent.com", 6881),
)

_CAT = lt.alert.category_t
# error/status: listen results; dht_operation: get_peers replies (without it they never
# arrive). dht_stats_alert has no category and is always delivered. Plain dht_notification
# (every incoming query) is left out: it is noise for us.
_ALERT_MASK = int(
    _CAT.error_notification | _CAT.status_notification | _CAT.dht_operation_notification
)


@dataclass(frozen=True)
class DhtOptions:
    """How to run the DHT node.

    The defaults join the public mainline DHT. Tests and private swarms use
    :meth:`private`, which has no routers and never talks to anything not named in
    ``bootstrap_nodes`` or learned from those.
    """

    #: Local address for the DHT's UDP socket ("0.0.0.0" = all IPv4 interfaces).
    bind: str = "0.0.0.0"
    #: UDP port; 0 picks a free one (see :attr:`DhtNode.port`).
    port: int = 0
    #: Bootstrap *routers* (host, port): only used to start lookups, never stored.
    routers: tuple[Address, ...] = PUBLIC_ROUTERS
    #: Real DHT nodes (host, port), added to the routing table once we listen.
    bootstrap_nodes: tuple[Address, ...] = ()
    #: Steady-state period of re-announces and of re-lookups that already found peers.
    interval: float = 300.0
    #: First retry delay; doubles up to ``interval``. Early announces/lookups against a
    #: young routing table reach few or no nodes, so they are repeated sooner.
    initial_retry: float = 1.0
    #: How often the routing-table size is refreshed for :meth:`DhtNode.stats`.
    stats_interval: float = 2.0
    #: One node per /24 in routing table and lookups (libtorrent's anti-Sybil default).
    #: Must be False when several nodes share a subnet, e.g. a private DHT on 127.0.0.x.
    restrict_ips: bool = True
    #: Ask the router for a port mapping (UPnP + NAT-PMP). Off unless asked: it talks to
    #: the LAN gateway.
    port_mapping: bool = False

    @classmethod
    def private(
        cls,
        bind: str = "127.0.0.1",
        port: int = 0,
        bootstrap_nodes: Iterable[Address] = (),
        **kwargs: Any,
    ) -> DhtOptions:
        """Options for a private DHT (tests, benchmarks, closed networks): no routers,
        no port mapping, no per-subnet restrictions."""
        return cls(
            bind=bind,
            port=port,
            routers=(),
            bootstrap_nodes=tuple(bootstrap_nodes),
            restrict_ips=False,
            port_mapping=False,
            **kwargs,
        )


def endpoint(host: str, port: int) -> str:
    """libtorrent's "host:port" form (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def session_settings(options: DhtOptions) -> lt.settings_pack:
    """The complete settings pack a :class:`DhtNode` creates its session with.

    Public so that tests can assert on exactly what will be configured (no public routers,
    no LSD/UPnP/NAT-PMP) before anything is started.
    """
    return {
        "listen_interfaces": endpoint(options.bind, options.port),
        # An explicitly chosen port that is taken is an error, not a silent change.
        "listen_system_port_fallback": options.port == 0,
        "enable_dht": True,
        "dht_bootstrap_nodes": ",".join(endpoint(h, p) for h, p in options.routers),
        "dht_restrict_routing_ips": options.restrict_ips,
        "dht_restrict_search_ips": options.restrict_ips,
        # Only the DHT is wanted: no torrents, no BitTorrent peer connections, no local
        # multicast discovery of torrents.
        "enable_lsd": False,
        "enable_upnp": options.port_mapping,
        "enable_natpmp": options.port_mapping,
        "enable_incoming_tcp": False,
        "enable_outgoing_tcp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "alert_mask": _ALERT_MASK,
        "alert_queue_size": 10000,
    }


def check_options(options: DhtOptions) -> None:
    """ValueError for options no session can be started with."""
    ipaddress.ip_address(options.bind)  # a literal address: no name resolution surprises
    if not 0 <= options.port < 65536:
        raise ValueError(f"bad DHT port {options.port}")
    if options.interval <= 0 or options.initial_retry <= 0:
        raise ValueError("intervals must be positive")
