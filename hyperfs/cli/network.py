"""The options of the commands that go on the network (serve, cat, mount, pin), and `serve`.

One place defines them, so `serve`, `cat` and `mount` spell and document them alike, and a
command that uses :func:`add_network_options` + :func:`node_from_args` gets discovery (DHT
and mDNS), the status file and `hyperfs status` (:mod:`hyperfs.cli.status`) without code
of its own.

Safety of the defaults: without ``--bootstrap`` the DHT joins the public mainline DHT
through its well-known routers, and mDNS uses every interface. Tests must never reach
those: they pass ``--bootstrap`` (private nodes on 127.0.0.x) and ``--no-mdns`` or private
mDNS settings, and set ``HYPERFS_LOCAL_ONLY=1`` in the environment of the processes they
start, which turns any configuration that could leave loopback (or a network namespace of
the test's own) into an error instead of traffic.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from hyperfs.base.signals import wait_for_stop_signal
from hyperfs.cli.arguments import host_port, ipv4
from hyperfs.cli.cache import add_cache_options, cache_limits
from hyperfs.cli.status import publish_status, status_path
from hyperfs.feeds.core import Core, open_core
from hyperfs.net.address import parse_address
from hyperfs.net.node import Node, open_node

if TYPE_CHECKING:
    from hyperfs.net.node_discovery import DiscoveryConfig

DEFAULT_PORT = 3282
LOCAL_ONLY_ENV = "HYPERFS_LOCAL_ONLY"


def add_network_options(parser: argparse.ArgumentParser, *, listen: str | None) -> None:
    """--listen, --peer and the discovery options; ``listen`` is the default (None: do not
    listen, unless discovery needs a port: then an ephemeral one)."""
    parser.add_argument("--listen", metavar="HOST:PORT", type=host_port, default=listen,
                        help=f"accept peers on this address (default: {listen or 'none'}; "
                             "with discovery on, an ephemeral port)")
    parser.add_argument("--peer", metavar="HOST:PORT", type=host_port, action="append",
                        default=[], help="connect to this peer (repeatable)")
    parser.add_argument("--request-timeout", type=float, default=10.0, metavar="S",
                        help="drop a peer that leaves requests unanswered this long")
    parser.add_argument("--handshake-timeout", type=float, default=10.0, metavar="S",
                        help="drop a peer that has not sent its handshake this long after "
                             "connecting (default 10)")
    parser.add_argument("--message-timeout", type=float, default=60.0, metavar="S",
                        help="drop a peer whose message takes longer than this to arrive, "
                             "or that does not read what we send this long (default 60)")
    parser.add_argument("--secure-only", action="store_true",
                        help="talk only to peers that encrypt (hyperfs peers): refuse plain "
                             "hypercore 1.x peers, which are otherwise served public feeds")
    group = parser.add_argument_group(
        "discovery", "Find peers of the feeds held or wanted on the BitTorrent mainline DHT "
        "and on the local network (mDNS). What is announced is a one-way key of each id.")
    group.add_argument("--no-dht", action="store_true", help="do not use the DHT")
    group.add_argument("--no-mdns", action="store_true", help="do not use mDNS")
    bootstrap = group.add_argument(
        "--bootstrap", metavar="HOST:PORT", type=host_port, action="append", default=None,
        help="DHT node to join through (repeatable; default: the public mainline routers "
             "%(routers)s)")
    bootstrap.routers = _PublicRouters()  # type: ignore[attr-defined]  # (argparse's %(name)s)
    group.add_argument("--dht-listen", metavar="HOST:PORT", type=host_port, default=None,
                       help="UDP address of the DHT node (default: the --listen address, "
                            "or 0.0.0.0 with an ephemeral port)")
    group.add_argument("--mdns-interface", metavar="ADDR", type=ipv4, action="append",
                       default=None, help="IPv4 address of an interface for mDNS "
                                          "(repeatable; default: the --listen host if it "
                                          "is specific, else every interface)")
    group.add_argument("--seed-compat", action="store_true",
                       help="also announce and look up the first 20 bytes of each id, as "
                            "the original implementation does (reveals the ids)")
    group.add_argument("--status-file", metavar="PATH", type=Path, default=None,
                       help="where to keep this node's status for `hyperfs status` "
                            "(default: a per-database file in the runtime directory)")
    add_cache_options(parser)


class _PublicRouters:
    """The DHT's public routers, as --help prints them: looked up only then, since the
    discovery modules (libtorrent, zeroconf, asyncio) cost ~60 ms of start-up to every
    command that runs without discovery."""

    def __str__(self) -> str:
        from hyperfs.net.discovery.dht import PUBLIC_ROUTERS

        return ", ".join(f"{h}:{p}" for h, p in PUBLIC_ROUTERS)


def discovery_config(args: argparse.Namespace) -> DiscoveryConfig | None:
    """The :class:`DiscoveryConfig` the options describe (None: discovery off, and its
    modules not even imported).

    ``HYPERFS_LOCAL_ONLY`` set: raise ValueError for anything that could send packets
    beyond loopback or a network namespace of the caller's own (see the module doc).
    """
    if args.no_dht and args.no_mdns:
        return None
    from hyperfs.net.discovery import DhtOptions, MdnsOptions
    from hyperfs.net.node_discovery import DiscoveryConfig

    listen_host = parse_address(args.listen)[0] if args.listen else None
    specific = listen_host if listen_host and not _unspecified(listen_host) else None
    dht = None
    if not args.no_dht:
        if args.dht_listen:
            bind, port = parse_address(args.dht_listen, default_host=specific or "0.0.0.0")
        else:
            bind = specific or "0.0.0.0"
            port = parse_address(args.listen)[1] if args.listen else 0
        if args.bootstrap:
            nodes = tuple(parse_address(text) for text in args.bootstrap)
            dht = DhtOptions(bind=bind, port=port, routers=(), bootstrap_nodes=nodes,
                             restrict_ips=not all(_is_private(h) for h, _ in nodes))
        else:
            dht = DhtOptions(bind=bind, port=port)
    mdns = None
    if not args.no_mdns:
        interfaces = tuple(args.mdns_interface or ([specific] if specific else []))
        mdns = MdnsOptions(interfaces=interfaces)
    config = DiscoveryConfig(dht=dht, mdns=mdns, seed_compat=args.seed_compat)
    if os.environ.get(LOCAL_ONLY_ENV):
        check_local_only(config)
    return config if config.enabled else None


def check_local_only(config: DiscoveryConfig) -> None:
    """ValueError unless ``config`` can only reach loopback or a private namespace."""
    private_ns = in_private_netns()
    if config.dht is not None:
        dht = config.dht
        if dht.routers:
            raise ValueError(f"{LOCAL_ONLY_ENV}: the DHT would contact the public routers "
                             f"{dht.routers} (pass --bootstrap)")
        if dht.port_mapping:
            raise ValueError(f"{LOCAL_ONLY_ENV}: DHT port mapping talks to the gateway")
        for host in (dht.bind, *(h for h, _ in dht.bootstrap_nodes)):
            if not (private_ns or _is_loopback(host)):
                raise ValueError(f"{LOCAL_ONLY_ENV}: DHT address {host} is not loopback")
    mdns = config.mdns
    if mdns is not None and not private_ns and not (
            mdns.interfaces and all(map(_is_loopback, mdns.interfaces))):
        raise ValueError(f"{LOCAL_ONLY_ENV}: mDNS would use non-loopback interfaces "
                             "(pass --mdns-interface 127.0.0.1 or --no-mdns)")


def in_private_netns() -> bool:
    """Whether this process runs in a named network namespace (`ip netns exec`): one
    bind-mounted under /run/netns, which tests create and delete themselves."""
    try:
        own = os.stat("/proc/self/ns/net")
        names = os.listdir("/run/netns")
    except OSError:
        return False
    for name in names:
        with contextlib.suppress(OSError):
            info = os.stat(f"/run/netns/{name}")
            if (info.st_dev, info.st_ino) == (own.st_dev, own.st_ino):
                return True
    return False


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _is_private(host: str) -> bool:
    """A private network (loopback, 10/8, 192.168/16, ...): nodes share subnets there, so
    libtorrent's one-node-per-/24 rule must be off."""
    try:
        return ipaddress.ip_address(host).is_private
    except ValueError:
        return host == "localhost"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# -- running a node from the options ---------------------------------------------------


@asynccontextmanager
async def node_from_args(core: Core, args: argparse.Namespace) -> AsyncIterator[Node]:
    """The node the options describe, keeping its status file current while it runs."""
    running = open_node(core, listen=args.listen, peers=args.peer,
                        request_timeout=args.request_timeout,
                        handshake_timeout=args.handshake_timeout,
                        message_timeout=args.message_timeout, discovery=discovery_config(args),
                        secure_only=args.secure_only)
    core.cache.limit(cache_limits(args))
    async with running as node, trio.open_nursery() as nursery:
        nursery.start_soon(publish_status, status_path(args), node)
        nursery.start_soon(core.cache.run)
        yield node
        nursery.cancel_scope.cancel()


# -- hyperfs serve ---------------------------------------------------------------------


def serve_arguments(parser: argparse.ArgumentParser) -> None:
    add_network_options(parser, listen=f"0.0.0.0:{DEFAULT_PORT}")


async def serve(args: argparse.Namespace) -> int:
    """Seed every stored feed until a signal to stop."""
    async with open_core(args.db) as core, node_from_args(core, args) as node:
        if node.address is not None:
            host, port = node.address
            print(f"listening on {host}:{port}", flush=True)
        signum = await wait_for_stop_signal()
        print(f"{signum.name}: stopping", file=sys.stderr)
    return 0
