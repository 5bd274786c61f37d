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

``bench_first_byte`` is the slot for the end-to-end figure ("cat of an unknown id ->
first byte"), to be filled in once the network layer exists.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from hyperfs.discovery.dht import DhtNode, DhtOptions, open_dht, session_settings
from hyperfs.discovery.mdns import MdnsNode, MdnsOptions, open_mdns

FAST = {"initial_retry": 0.25, "stats_interval": 0.5}


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


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def bench_mdns(runs: int) -> dict[str, object]:
    options = MdnsOptions(interfaces=("127.0.0.1",), port=_free_udp_port())
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


async def bench_first_byte(runs: int) -> dict[str, object]:
    """End-to-end: a reader that knows only a feed id -> first verified byte.

    To implement once the network layer exists: start a holder (core with a finalized
    feed, TCP listener, ``open_discovery(port, dht=DhtOptions.private(...))`` and
    ``hold(id)``) on the private DHT from :func:`private_dht`, then time a reader that
    opens discovery, ``want(id)``, connects to the first peer reported and reads block 0.
    """
    raise NotImplementedError("needs the network layer (hyperfs.network)")


async def main(args: argparse.Namespace) -> None:
    results: dict[str, object] = {"runs": args.runs}
    results["dht"] = await bench_dht(args.nodes, args.runs)
    results["mdns"] = await bench_mdns(args.runs)
    try:
        results["first_byte"] = await bench_first_byte(args.runs)
    except NotImplementedError as exc:
        results["first_byte"] = f"not yet: {exc}"
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
    trio.run(main, parser.parse_args())
