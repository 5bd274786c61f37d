"""The status file of a running node, and `hyperfs status`, which reads it.

A node started by serve, cat or mount keeps a small JSON file of what it is doing (its
peers, its discovery state) in a per-database place, so that `hyperfs status` can show
it without talking to the node, and no port or socket has to be opened for it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import trio

from hyperfs.cli.cache import describe
from hyperfs.net.node import Node

STATUS_INTERVAL = 2.0


def default_status_file(db: Path) -> Path:
    """Per-database status path, in $XDG_RUNTIME_DIR (else the temp dir), so that
    `hyperfs status` finds a running node of the same --db without talking to it."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    digest = hashlib.sha256(os.fsencode(os.path.abspath(db))).hexdigest()[:16]
    return Path(base) / f"hyperfs-{os.getuid()}" / f"{digest}.json"


def status_path(args: argparse.Namespace) -> Path:
    """The status file the arguments name: --status-file, else the database's."""
    return args.status_file or default_status_file(args.db)


def _write_status(path: Path, node: Node) -> None:
    status = {"pid": os.getpid(), **node.status(), "cache": node.core.cache.status()}
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


async def publish_status(path: Path, node: Node) -> None:
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


# -- hyperfs status --------------------------------------------------------------------


def status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--status-file", metavar="PATH", type=Path, default=None,
                        help="the file the node was started with (default: the database's)")
    parser.add_argument("--json", action="store_true", help="print the whole status as JSON")


async def show_status(args: argparse.Namespace) -> int:
    """What a running serve/cat/mount of this database is doing."""
    path = status_path(args)
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
    for peer in status.get("peers", []):
        how = (f"encrypted, node key {peer['node_key']}" if peer.get("encrypted")
               else "plaintext (hypercore 1.x)")
        print(f"  peer {peer.get('address') or '?'}: {how}")
    cache = status.get("cache")
    if cache and (cache["max_size"] or cache["min_free"] or cache["pinned_feeds"]):
        print(describe(cache))  # (no line for a node without limits or pins)
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
