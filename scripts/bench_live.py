#!/usr/bin/env python3
"""Live feeds: append -> readable latency between two processes over loopback, append
speed (signed) beside a static feed's, and replication of a finished live feed beside a
static feed of the same blocks.

- latency: a writer process appends one small block every --gap seconds (its
  CLOCK_MONOTONIC time inside, a clock both processes share); a follower process
  connected to it over loopback TCP reads the live feed with
  ``create_read_stream(live=True)`` and notes, per block, now - stamp. Median and p99.
- append: in this process, 1 KiB blocks appended in batches of 1,000 (one signature per
  batch) and one block per append (one signature each), beside a static feed's appends
  of the same blocks (no signature) in the same run.
- replication: a `hyperfs serve` holding a live feed and a static feed of the same
  blocks; a fresh fetching process per feed downloads it whole (connect -> last block
  verified), FETCHES times each, alternated, the fastest of each kept. The ratio
  live / static is what the issue bounds (within 10 %); the fetcher's CPU time is shown
  beside the wall time, as the steadier figure on a loaded machine.

Medians of --runs runs. Run under the bench lock:

    flock /work/wt/bench.lock .venv/bin/python scripts/bench_live.py [--runs 3]
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
from pathlib import Path

import trio

HYPERFS = [sys.executable, "-m", "hyperfs.cli"]
FETCHES = 6
"""Fetches of each feed per run, alternated (the fastest counts: a shared machine's
noise only ever slows a fetch down)."""


# -- child processes --------------------------------------------------------------------


async def writer(db: str, count: int, gap: float) -> None:
    """Listen, print the port and live id, wait for a follower, then append ``count``
    stamped blocks ``gap`` seconds apart."""
    from hyperfs import open_core
    from hyperfs.net.node import open_node

    async with open_core(db) as core, open_node(core, listen="127.0.0.1:0") as node:
        feed = core.add(live=True)
        await feed.append(b"start")
        assert node.address is not None
        peers = trio.Event()
        core.on("peer", lambda peer: peers.set())
        print(json.dumps({"port": node.address[1], "id": feed.hex}), flush=True)
        await peers.wait()
        await trio.sleep(0.5)  # let the follower join and learn the first length
        for _ in range(count):
            await feed.append(time.monotonic_ns().to_bytes(8, "big") + bytes(120))
            await trio.sleep(gap)
        sys.stdin.read()  # stay up until the parent is done


async def follower(db: str, port: int, feed_id: str, count: int) -> None:
    from hyperfs import open_core
    from hyperfs.net.node import open_node

    latencies = []
    async with open_core(db) as core, open_node(core, peers=[f"127.0.0.1:{port}"]):
        stream = core.create_read_stream(feed_id, live=True, limit=count + 1)
        assert await anext(stream) == b"start"
        async for block in stream:
            latencies.append((time.monotonic_ns() - int.from_bytes(block[:8], "big")) / 1e6)
    print(json.dumps(latencies), flush=True)


async def fetch(db: str, port: int, feed_id: str) -> None:
    from hyperfs import open_core
    from hyperfs.net.node import open_node

    async with open_core(db) as core:
        feed = core.get(feed_id)
        start, cpu = time.perf_counter(), time.process_time()
        async with open_node(core, peers=[f"127.0.0.1:{port}"]):
            await feed.download()
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu": cpu, "local": feed.local}), flush=True)


# -- measurements -----------------------------------------------------------------------


def latency_run(tmp: Path, count: int, gap: float) -> list[float]:
    script = [sys.executable, __file__]
    writing = subprocess.Popen([*script, "--writer", str(tmp / "w"), str(count), str(gap)],
                               stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    try:
        assert writing.stdout is not None
        hello = json.loads(writing.stdout.readline())
        out = subprocess.run([*script, "--follower", str(tmp / "f"), str(hello["port"]),
                              hello["id"], str(count)], capture_output=True, text=True,
                             check=True, timeout=600).stdout
    finally:
        writing.kill()
        writing.wait()
    return json.loads(out.strip().splitlines()[-1])


async def append_run(tmp: Path, blocks: int, live_first: bool) -> dict[str, float]:
    """Static and live appends of the same blocks, each into a fresh database, in the
    order given (alternated between runs: a database's first writes are the cheapest)."""
    from hyperfs import open_core

    data = [os.urandom(1024) for _ in range(1000)]
    result = {}
    for kind in ("live", "static") if live_first else ("static", "live"):
        async with open_core(tmp / kind) as core:
            feed = core.add(live=kind == "live")
            start = time.perf_counter()
            for _ in range(blocks // 1000):
                await feed.append(data)
            result[f"{kind}_batched_blocks_per_s"] = blocks / (time.perf_counter() - start)
            single = blocks // 10
            start = time.perf_counter()
            for index in range(single):
                await feed.append(data[index % 1000])
            result[f"{kind}_single_appends_per_s"] = single / (time.perf_counter() - start)
    return result


async def _make_feeds(db: Path, blocks: int, size: int) -> tuple[str, str]:
    from hyperfs import open_core

    async with open_core(db) as core:
        live, static = core.add(live=True), core.add()
        for start in range(0, blocks, 256):
            batch = [os.urandom(size) for _ in range(min(256, blocks - start))]
            await live.append(batch)
            await static.append(batch)
        await static.finalize()
        assert live.hex is not None and static.hex is not None
        return live.hex, static.hex


def replication_run(tmp: Path, blocks: int, size: int) -> dict[str, float]:
    seed = tmp / "seed"
    live_id, static_id = trio.run(_make_feeds, seed, blocks, size)
    server = subprocess.Popen([*HYPERFS, "--db", str(seed), "serve", "--listen",
                               "127.0.0.1:0", "--no-dht", "--no-mdns"],
                              stdout=subprocess.PIPE, text=True)
    seconds: dict[str, list[float]] = {}
    try:
        assert server.stdout is not None
        port = server.stdout.readline().split()[-1].rsplit(":", 1)[1]
        for turn in range(FETCHES):  # alternated, each kind first in turn
            for kind, feed_id in (("static", static_id), ("live", live_id))[::1 - 2 * (turn % 2)]:
                out = subprocess.run([sys.executable, __file__, "--fetch",
                                      str(tmp / f"{kind}{turn}"), port, feed_id],
                                     capture_output=True, text=True, check=True,
                                     timeout=600).stdout
                result = json.loads(out.strip().splitlines()[-1])
                if result["local"] != blocks:
                    raise RuntimeError(f"{kind}: fetched {result['local']} of {blocks} blocks")
                seconds.setdefault(kind, []).append(result["seconds"])
                seconds.setdefault(f"{kind}_cpu", []).append(result["cpu"])
    finally:
        server.terminate()
        server.wait()
    static, live, static_cpu, live_cpu = (
        min(seconds[kind]) for kind in ("static", "live", "static_cpu", "live_cpu"))
    return {"static_s": static, "live_s": live, "live_vs_static": live / static,
            "static_cpu_s": static_cpu, "live_cpu_s": live_cpu,
            "live_vs_static_cpu": live_cpu / static_cpu}


def _median_row(name: str, runs: list[dict[str, float]]) -> dict[str, object]:
    row: dict[str, object] = {"measure": name}
    for key in runs[0]:
        row[key] = round(statistics.median(run[key] for run in runs), 3)
    return row


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("--") and sys.argv[1] in (
            "--writer", "--follower", "--fetch"):
        role, *rest = sys.argv[1:]
        if role == "--writer":
            trio.run(writer, rest[0], int(rest[1]), float(rest[2]))
        elif role == "--follower":
            trio.run(follower, rest[0], int(rest[1]), rest[2], int(rest[3]))
        else:
            trio.run(fetch, rest[0], int(rest[1]), rest[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--appends", type=int, default=300, help="latency samples per run")
    parser.add_argument("--gap", type=float, default=0.01, help="seconds between appends")
    parser.add_argument("--blocks", type=int, default=100_000, help="1 KiB blocks appended")
    parser.add_argument("--feed", default="2000x65536", help="replicated feed BLOCKSxSIZE")
    args = parser.parse_args()
    shape = [int(x) for x in args.feed.lower().split("x")]
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmpdir:
        tmp = Path(tmpdir)
        samples: list[float] = []
        appends, replication = [], []
        for run in range(args.runs):
            samples += latency_run(tmp / f"lat{run}", args.appends, args.gap)
            appends.append(trio.run(append_run, tmp / f"app{run}", args.blocks, run % 2 == 1))
            replication.append(replication_run(tmp / f"rep{run}", *shape))
    ordered = sorted(samples)
    print(json.dumps({"measure": "append -> readable on B (ms)", "samples": len(ordered),
                      "median": round(statistics.median(ordered), 2),
                      "p99": round(ordered[int(len(ordered) * 0.99) - 1], 2)}), flush=True)
    print(json.dumps(_median_row("append 1 KiB blocks", appends)), flush=True)
    print(json.dumps(_median_row(f"replicate {args.feed} whole", replication)), flush=True)


if __name__ == "__main__":
    main()
