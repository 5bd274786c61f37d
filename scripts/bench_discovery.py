#!/usr/bin/env python3
"""Discovery latency benchmarks, on this machine only (127.0.0.0/8, nothing public).

    .venv/bin/python scripts/bench_discovery.py [--nodes 20] [--runs 9] [--json]

Measures, as medians over ``--runs`` fresh info-hashes/keys:

* tables settled: time until every node of the fresh private DHT has at least two
  confirmed nodes in its routing table (libtorrent confirms by its own refresh timers).
* dht warm: on a private DHT of ``--nodes`` libtorrent nodes (127.0.1.x) whose routing
  tables have formed, a holder has announced (and a probe has confirmed the announce is
  stored); a node that never touched the hash starts a lookup -> first peer reported.
* dht cold: holder announce and looker lookup start at the same moment -> first peer
  (the first lookup usually races the announce, so this is ~ the first retry delay).
* mdns warm: two mDNS instances on loopback (non-standard port) already browsing; the
  holder advertises a new key and the browser wants it -> first peer reported.
* mdns cold: the holder is up; a new instance starts (register + browse) and wants the
  key -> first peer reported (includes zeroconf start-up).

* first byte: a reader that knows only a feed id, through a node with discovery (what
  `hyperfs cat ID` does) -> block 0 verified, with the holder on the 20-node DHT or on
  loopback mDNS; also as a real `hyperfs cat` process (start-up included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import trio

from hyperfs.feeds.core import open_core
from hyperfs.net.discovery.dht import DhtNode, DhtOptions, open_dht, session_settings
from hyperfs.net.discovery.keys import discovery_key
from hyperfs.net.discovery.mdns import MdnsNode, MdnsOptions, open_mdns
from hyperfs.net.node import open_node
from hyperfs.net.node_discovery import DiscoveryConfig
from hyperfs.testing import zeroconf
from hyperfs.testing.discovery import free_udp_port

FAST = {"initial_retry": 0.25, "stats_interval": 0.5}
HYPERFS = str(Path(sys.executable).with_name("hyperfs"))


def _waiter(node: DhtNode | MdnsNode, key: bytes) -> tuple[trio.Event, Callable[[], None]]:
    """An event set when ``node`` reports a peer for ``key``; returns (event, remove)."""
    event = trio.Event()

    def on_peer(k: bytes, _peer: tuple[str, int]) -> None:
        if k == key:
            event.set()

    return event, node.add_listener(on_peer)


@asynccontextmanager
async def private_dht(count: int) -> AsyncIterator[list[DhtNode]]:
    """``count`` nodes on 127.0.1.2.. each knowing the two previous; the first the last."""
    async with AsyncExitStack() as stack:
        nodes: list[DhtNode] = []
        for i in range(count):
            known = [(n.address, n.port) for n in nodes[-2:]]
            options = DhtOptions.private(bind=f"127.0.1.{i + 2}", bootstrap_nodes=known, **FAST)
            assert options.routers == () and session_ok(options)
            nodes.append(await stack.enter_async_context(open_dht(options)))
        nodes[0].add_node(nodes[-1].address, nodes[-1].port)
        yield nodes


def session_ok(options: DhtOptions) -> bool:
    """The private options really leave no way out of 127.0.0.0/8."""
    s = session_settings(options)
    return s["dht_bootstrap_nodes"] == "" and not (
        s["enable_lsd"] or s["enable_upnp"] or s["enable_natpmp"]
    )


async def bench_dht(count: int, runs: int) -> dict[str, object]:
    warm: list[float] = []
    cold: list[float] = []
    async with private_dht(count) as nodes:
        t0 = time.monotonic()
        with trio.fail_after(30):
            for node in nodes:
                await node.wait_for_nodes(min(2, count - 1))
        settle = time.monotonic() - t0
        for run in range(runs):
            # Spread roles over the network; holder, probe and looker are distinct.
            holder = nodes[run % count]
            probe = nodes[(run + count // 3) % count]
            looker = nodes[(run + 2 * count // 3) % count]
            key = os.urandom(20)
            stored, remove_probe = _waiter(probe, key)
            holder.announce(key, 5000 + run)
            probe.lookup(key)
            with trio.fail_after(30):
                await stored.wait()
            probe.stop_lookup(key)
            remove_probe()
            found, remove = _waiter(looker, key)
            start = time.monotonic()
            looker.lookup(key)
            with trio.fail_after(30):
                await found.wait()
            warm.append(time.monotonic() - start)
            looker.stop_lookup(key)
            holder.stop_announce(key)
            remove()

            key = os.urandom(20)
            found, remove = _waiter(looker, key)
            start = time.monotonic()
            holder.announce(key, 6000 + run)
            looker.lookup(key)
            with trio.fail_after(30):
                await found.wait()
            cold.append(time.monotonic() - start)
            looker.stop_lookup(key)
            holder.stop_announce(key)
            remove()
    return {
        "nodes": count,
        "tables_settled_s": round(settle, 3),
        "warm_lookup_median_s": round(statistics.median(warm), 4),
        "warm_lookup_max_s": round(max(warm), 4),
        "cold_announce_lookup_median_s": round(statistics.median(cold), 4),
        "cold_announce_lookup_max_s": round(max(cold), 4),
    }


async def bench_mdns(runs: int) -> dict[str, object]:
    options = MdnsOptions(interfaces=("127.0.0.1",), port=free_udp_port())
    warm: list[float] = []
    cold: list[float] = []
    async with open_mdns(7001, options) as holder:
        async with open_mdns(7002, options) as browser:
            for _ in range(runs):
                key = os.urandom(20)
                found, remove = _waiter(browser, key)
                start = time.monotonic()
                holder.advertise(key)
                browser.want(key)
                with trio.fail_after(10):
                    await found.wait()
                warm.append(time.monotonic() - start)
                remove()
        for _ in range(runs):
            key = os.urandom(20)
            holder.advertise(key)
            start = time.monotonic()
            async with open_mdns(7003, options) as newcomer:
                found, _remove = _waiter(newcomer, key)
                newcomer.want(key)
                with trio.fail_after(10):
                    await found.wait()
                cold.append(time.monotonic() - start)
    return {
        "warm_median_s": round(statistics.median(warm), 4),
        "warm_max_s": round(max(warm), 4),
        "cold_start_median_s": round(statistics.median(cold), 4),
        "cold_start_max_s": round(max(cold), 4),
    }


async def _first_byte(reader_db: Path, feed_id: bytes, config: DiscoveryConfig) -> float:
    """Seconds from opening a node that knows only ``feed_id`` to block 0 verified."""
    start = time.monotonic()
    async with open_core(reader_db) as core, open_node(core, discovery=config) as node:
        with core.get(feed_id) as feed:
            block = await node.get(feed, 0, 10.0)
    assert block is not None
    return time.monotonic() - start


async def _cat_first_byte(db: Path, feed_id: bytes, args: list[str]) -> float:
    """Seconds from starting a `hyperfs cat` process to the first byte on its stdout."""
    start = time.monotonic()
    proc = await trio.lowlevel.open_process(
        [HYPERFS, "--db", str(db), "cat", feed_id.hex(), "--timeout", "10", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={**os.environ, "HYPERFS_LOCAL_ONLY": "1"})
    try:
        assert proc.stdout is not None
        with trio.fail_after(30):
            assert await proc.stdout.receive_some(), "cat wrote nothing"
        return time.monotonic() - start
    finally:
        if proc.returncode is None:
            proc.kill()  # the process started here, by its handle
        await proc.wait()


async def _holder_core(db: Path, runs: int) -> list[bytes]:
    ids = []
    async with open_core(db) as core:
        for run in range(runs):
            feed = core.add()
            await feed.append([os.urandom(4096) for _ in range(4)] + [b"run %d" % run])
            ids.append(await feed.finalize())
    return ids


async def bench_first_byte(count: int, runs: int) -> dict[str, object]:
    """End to end: a reader that knows only a feed id -> first verified byte.

    A holder (core with ``runs`` finalized feeds, TCP listener, discovery) announces on a
    private DHT of ``count`` nodes; each run a fresh reader (new core, new DHT node that
    knows two DHT nodes) opens a node, wants one feed and reads block 0 - the in-process
    work of `hyperfs cat ID`. ``cat_process`` adds a real `hyperfs cat` process (Python
    and library start-up included). Over mDNS the same with two loopback instances.
    """
    dht_times: list[float] = []
    cat_times: list[float] = []
    mdns_times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as tmp:
        base = Path(tmp)
        ids = await _holder_core(base / "holder", runs)
        async with private_dht(count) as nodes:
            with trio.fail_after(30):
                for node in nodes:
                    await node.wait_for_nodes(min(2, count - 1))
            seeds = [(n.address, n.port) for n in nodes[:2]]
            holder_dht = DhtOptions.private(bind="127.0.1.200", bootstrap_nodes=seeds, **FAST)
            async with open_core(base / "holder") as core, open_node(
                    core, discovery=DiscoveryConfig(dht=holder_dht)) as holder:
                probe = nodes[count // 2]
                for feed_id in ids:  # wait until every announce is stored in the DHT
                    key = discovery_key(feed_id)
                    stored, remove = _waiter(probe, key)
                    probe.lookup(key)
                    with trio.fail_after(30):
                        await stored.wait()
                    probe.stop_lookup(key)
                    remove()
                assert holder.discovery is not None
                for run, feed_id in enumerate(ids):
                    far = [(n.address, n.port) for n in nodes[-2:]]
                    dht = DhtOptions.private(bind=f"127.0.2.{run + 2}", bootstrap_nodes=far,
                                             **FAST)
                    dht_times.append(await _first_byte(
                        base / f"reader{run}", feed_id, DiscoveryConfig(dht=dht)))
                    boot = [a for h, p in far for a in ("--bootstrap", f"{h}:{p}")]
                    cat_times.append(await _cat_first_byte(
                        base / f"cat{run}", feed_id,
                        ["--no-mdns", "--dht-listen", f"127.0.3.{run + 2}:0", *boot]))
        mdns = MdnsOptions(interfaces=("127.0.0.1",), port=free_udp_port())
        async with open_core(base / "holder") as core, open_node(
                core, discovery=DiscoveryConfig(mdns=mdns)) as holder:
            for run, feed_id in enumerate(ids):
                # An mDNS responder multicasts a record at most once a second (RFC 6762
                # 6.2): a reader right after another waits for that; space them out.
                await trio.sleep(1.5)
                mdns_times.append(await _first_byte(
                    base / f"mreader{run}", feed_id, DiscoveryConfig(mdns=mdns)))
    return {
        "dht_nodes": count,
        "dht_median_s": round(statistics.median(dht_times), 4),
        "dht_max_s": round(max(dht_times), 4),
        "dht_cat_process_median_s": round(statistics.median(cat_times), 4),
        "dht_cat_process_max_s": round(max(cat_times), 4),
        "mdns_median_s": round(statistics.median(mdns_times), 4),
        "mdns_max_s": round(max(mdns_times), 4),
    }


async def main(args: argparse.Namespace) -> None:
    results: dict[str, object] = {"runs": args.runs}
    results["dht"] = await bench_dht(args.nodes, args.runs)
    results["mdns"] = await bench_mdns(args.runs)
    results["first_byte"] = await bench_first_byte(args.nodes, args.runs)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for section, values in results.items():
        if isinstance(values, dict):
            print(f"{section}:")
            for name, value in values.items():
                print(f"  {name:32} {value}")
        else:
            print(f"{section}: {values}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=20, help="private DHT size")
    parser.add_argument("--runs", type=int, default=9, help="runs per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON")
    zeroconf.install()  # the benchmark runs mDNS on free ports, never on 5353
    trio.run(main, parser.parse_args())
