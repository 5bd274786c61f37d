"""Command-line options shared by the commands that go on the network (serve, cat, mount).

One place defines them, so `serve`, `cat` and `mount` spell and document them alike, and a
command that uses :func:`add_network_options` + :func:`node_from_args` gets discovery (DHT
and mDNS), the status file and `hyperfs status` without code of its own.

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
import hashlib
import ipaddress
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from hyperfs.feeds.core import Core
from hyperfs.net.discovery import DhtOptions, MdnsOptions
from hyperfs.net.discovery.dht import PUBLIC_ROUTERS
from hyperfs.net.discovery.mdns import MDNS_PORT
from hyperfs.net.node import Node, open_node, parse_address
from hyperfs.net.node_discovery import DiscoveryConfig

DEFAULT_PORT = 3282
LOCAL_ONLY_ENV = "HYPERFS_LOCAL_ONLY"
STATUS_INTERVAL = 2.0


def _address(text: str) -> str:
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r}") from None


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("port must be 1-65535")
    return value


def add_network_options(parser: argparse.ArgumentParser, *, listen: str | None) -> None:
    """--listen, --peer and the discovery options; ``listen`` is the default (None: do not
    listen, unless discovery needs a port: then an ephemeral one)."""
    parser.add_argument("--listen", metavar="HOST:PORT", type=_address, default=listen,
                        help=f"accept peers on this address (default: {listen or 'none'}; "
                             "with discovery on, an ephemeral port)")
    parser.add_argument("--peer", metavar="HOST:PORT", type=_address, action="append",
                        default=[], help="connect to this peer (repeatable)")
    parser.add_argument("--request-timeout", type=float, default=10.0, metavar="S",
                        help="drop a peer that leaves requests unanswered this long")
    parser.add_argument("--handshake-timeout", type=float, default=10.0, metavar="S",
                        help="drop a peer that has not sent its handshake this long after "
                             "connecting (default 10)")
    parser.add_argument("--message-timeout", type=float, default=60.0, metavar="S",
                        help="drop a peer whose message takes longer than this to arrive, "
                             "or that does not read what we send this long (default 60)")
    group = parser.add_argument_group(
        "discovery", "Find peers of the feeds held or wanted on the BitTorrent mainline DHT "
        "and on the local network (mDNS). What is announced is a one-way key of each id.")
    group.add_argument("--no-dht", action="store_true", help="do not use the DHT")
    group.add_argument("--no-mdns", action="store_true", help="do not use mDNS")
    routers = ", ".join(f"{h}:{p}" for h, p in PUBLIC_ROUTERS)
    group.add_argument("--bootstrap", metavar="HOST:PORT", type=_address, action="append",
                       default=None, help="DHT node to join through (repeatable; default: "
                                          f"the public mainline routers {routers})")
    group.add_argument("--dht-listen", metavar="HOST:PORT", type=_address, default=None,
                       help="UDP address of the DHT node (default: the --listen address, "
                            "or 0.0.0.0 with an ephemeral port)")
    group.add_argument("--mdns-interface", metavar="ADDR", type=_ipv4, action="append",
                       default=None, help="IPv4 address of an interface for mDNS "
                                          "(repeatable; default: the --listen host if it "
                                          "is specific, else every interface)")
    group.add_argument("--mdns-port", metavar="PORT", type=_port, default=MDNS_PORT,
                       help=f"UDP port of mDNS (default {MDNS_PORT}; others only find "
                            "nodes using the same)")
    group.add_argument("--seed-compat", action="store_true",
                       help="also announce and look up the first 20 bytes of each id, as "
                            "the original implementation does (reveals the ids)")
    group.add_argument("--status-file", metavar="PATH", type=Path, default=None,
                       help="where to keep this node's status for `hyperfs status` "
                            "(default: a per-database file in the runtime directory)")


def discovery_config(args: argparse.Namespace) -> DiscoveryConfig | None:
    """The :class:`DiscoveryConfig` the options describe (None: discovery off).

    ``HYPERFS_LOCAL_ONLY`` set: raise ValueError for anything that could send packets
    beyond loopback or a network namespace of the caller's own (see the module doc).
    """
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
        mdns = MdnsOptions(interfaces=interfaces, port=args.mdns_port)
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


# -- running a node from the options, and its status file ------------------------------


def default_status_file(db: Path) -> Path:
    """Per-database status path, in $XDG_RUNTIME_DIR (else the temp dir), so that
    `hyperfs status` finds a running node of the same --db without talking to it."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    digest = hashlib.sha256(os.fsencode(os.path.abspath(db))).hexdigest()[:16]
    return Path(base) / f"hyperfs-{os.getuid()}" / f"{digest}.json"


def _status_path(args: argparse.Namespace) -> Path | None:
    if getattr(args, "status_file", None) is not None:
        return Path(args.status_file)
    db = getattr(args, "db", None)
    return default_status_file(Path(db)) if db is not None else None


def _write_status(path: Path, node: Node) -> None:
    status = {"pid": os.getpid(), **node.status()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(status, indent=2, default=str) + "\n")
    os.replace(tmp, path)  # readers see the old file or the new, never half of one


def _prune_dead(directory: Path) -> None:
    """Remove status files of nodes that were killed (a killed node cannot remove its own)."""
    for stale in directory.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            pid = int(json.loads(stale.read_text())["pid"])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                stale.unlink()


async def _publish_status(path: Path, node: Node) -> None:
    """Keep ``path`` current while the node runs (a small JSON file every few seconds)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _prune_dead(path.parent)
    try:
        while True:
            _write_status(path, node)
            await trio.sleep(STATUS_INTERVAL)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


@asynccontextmanager
async def node_from_args(core: Core, args: argparse.Namespace) -> AsyncIterator[Node]:
    async with open_node(core, listen=args.listen, peers=args.peer,
                         request_timeout=args.request_timeout,
                         handshake_timeout=args.handshake_timeout,
                         message_timeout=args.message_timeout,
                         discovery=discovery_config(args)) as node:
        status = _status_path(args)
        async with trio.open_nursery() as nursery:
            if status is not None:
                nursery.start_soon(_publish_status, status, node)
            yield node
            nursery.cancel_scope.cancel()


def add_status_command(sub: argparse._SubParsersAction) -> None:
    """`hyperfs status`: what a running serve/cat/mount of this database is doing."""
    status = sub.add_parser("status", help="show a running node's peers and discovery state")
    status.add_argument("--status-file", metavar="PATH", type=Path, default=None,
                        help="the file the node was started with (default: the database's)")
    status.add_argument("--json", action="store_true", help="print the whole status as JSON")
    status.set_defaults(run=cmd_status)


async def cmd_status(args: argparse.Namespace) -> int:
    path = _status_path(args)
    assert path is not None
    try:
        status = json.loads(path.read_text())
        os.kill(int(status["pid"]), 0)
    except (OSError, ValueError, KeyError):
        print(f"hyperfs: no node is running on {args.db} (no live {path})", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"pid {status['pid']}, listening on {status.get('listening') or 'nothing'}, "
          f"{len(status.get('peers', []))} peers")
    disc = status.get("discovery")
    if not disc:
        print("discovery: off")
        return 0
    print(f"discovery: {disc['wanted']} feeds wanted, {disc['held']} held "
          f"({disc['held_announces']} held announces), {disc['peers_dialed']} peers dialed")
    if disc.get("dht"):
        dht = disc["dht"]
        print(f"  DHT {dht['address']}: {dht['nodes']} nodes known, {dht['announces']} "
              f"announces, {dht['lookups']} lookups")
    if disc.get("mdns"):
        mdns = disc["mdns"]
        print(f"  mDNS: {mdns['services_known']} services known, "
              f"{disc['mdns_advertised']} keys advertised")
    for feed_id, feed in disc.get("feeds", {}).items():
        print(f"  {feed_id}  {feed['mode']}  {feed['peers_found']} peers found")
    return 0
