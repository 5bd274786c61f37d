#!/usr/bin/env python3
"""Encrypted vs plaintext replication between two hyperfs processes, side by side.

For each shape (blocks x size) and each run, in alternation: a seeding process and a
fetching process, both with encryption (Noise XX + secretstream, the default between
hyperfs peers) or both without (``encrypt=False``: plain hypercore 1.x, the baseline),
over loopback TCP. The fetcher reports the seconds from connect to the last verified
block, and a fresh fetcher the seconds from connect to one verified block (the middle
one). Medians of --runs runs, and of the CPU each process spent on a block (user + system,
all threads: on a shared 2-core machine the wall times are noisy, the CPU less so). The
goals (issue 13): encrypted >= 85 % of plaintext in 64 KiB blocks, >= 75 % in 1 KiB
blocks, connect -> first verified block <= 15 ms.

``--ceiling`` adds a third mode, encrypted with the cipher replaced by a copy: what the
encrypted path costs beside libsodium, i.e. the most that any work outside the cipher
could win back.

Run it under the shared bench lock:

    flock /work/wt/bench.lock .venv/bin/python scripts/bench_secure.py \
        [--runs 3] [--ceiling] [BxS ...]
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

CHILD = [sys.executable, os.path.abspath(__file__)]


async def seed(db: str, encrypt: bool) -> None:
    """Serve the database until stdin closes; print the port first, then the CPU seconds
    used so far (all threads) for each line read, so that the parent can tell what one
    fetch cost the seeder."""
    from hyperfs import open_core
    from hyperfs.net.node import open_node

    async with open_core(db) as core, \
            open_node(core, listen="127.0.0.1:0", encrypt=encrypt) as node:
        assert node.address is not None
        print(node.address[1], flush=True)
        while await trio.to_thread.run_sync(sys.stdin.readline):
            print(time.process_time(), flush=True)


async def fetch(db: str, feed_id: str, port: int, encrypt: bool, block: int | None) -> None:
    """Fetch the feed (or one block) and print the seconds from connect, and the CPU
    seconds (all threads) from then, as JSON."""
    from hyperfs import open_core
    from hyperfs.net.node import open_node
    from hyperfs.replication.secure import node_keypair

    async with open_core(db) as core:
        feed = core.get(feed_id)
        node_keypair(db)  # made with the database, as in any database used before
        start, cpu = time.perf_counter(), time.process_time()
        async with open_node(core, peers=[f"127.0.0.1:{port}"], encrypt=encrypt):
            if block is None:
                await feed.download()
            else:
                assert await feed.get(block, timeout=60) is not None
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu": cpu}), flush=True)


def _make_feed(db: Path, blocks: int, size: int) -> str:
    from hyperfs import open_core
    from hyperfs.testing.network import store_feed

    async def make() -> bytes:
        async with open_core(db) as core:
            return await store_feed(core, [os.urandom(size) for _ in range(blocks)])

    return trio.run(make).hex()


MODES = {"plain": "0", "secure": "1", "nocipher": "c"}
"""Each mode's flag to the children: plaintext, encrypted, and (--ceiling) encrypted with
the cipher replaced by a copy (:func:`_without_cipher`)."""


def _without_cipher() -> None:
    """Replace secretstream's seal and open by plain copies, in this process only.

    A measuring aid, never a mode of hyperfs: everything the encrypted path does but the
    cipher (the Noise handshake, the frames, the buffers, the capabilities) still runs, so
    the ``nocipher`` figures tell what the cipher costs and what the rest does. Both
    children of a run get it; a real peer would refuse the first frame.
    """
    from hyperfs.wire import sodium
    from hyperfs.wire.protobuf import Buffer

    def seal_into(self: sodium.Push, out: bytearray, at: int, message: Buffer,
                  tag: int = sodium.TAG_MESSAGE) -> None:
        out[at + 1:at + 1 + len(message)] = message

    def open_into(self: sodium.Pull, out: bytearray, at: int, sealed: Buffer) -> int:
        size = len(sealed) - sodium.OVERHEAD
        out[at:at + size] = sealed[1:1 + size]
        return sodium.TAG_MESSAGE

    sodium.Push.seal_into = seal_into  # type: ignore[method-assign]
    sodium.Pull.open_into = open_into  # type: ignore[method-assign]


def _run(seed_db: Path, feed_id: str, flag: str, tmp: Path,
         block: int | None) -> tuple[float, float, float]:
    """(seconds, the fetcher's CPU seconds, the seeder's) of one fetch."""
    seeder = subprocess.Popen([*CHILD, "--seed", str(seed_db), flag], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        asks, answers = seeder.stdin, seeder.stdout
        assert asks is not None and answers is not None
        port = answers.readline().strip()

        def seeder_cpu() -> float:
            asks.write("\n")
            asks.flush()
            return float(answers.readline())

        fetch_db = tempfile.mkdtemp(dir=tmp)
        args = [*CHILD, "--fetch", fetch_db, feed_id, port, flag]
        if block is not None:
            args += ["--block", str(block)]
        before = seeder_cpu()
        out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return float(result["seconds"]), float(result["cpu"]), seeder_cpu() - before
    finally:
        if seeder.stdin is not None:
            seeder.stdin.close()
        seeder.wait(30)


def _shape(tmp: Path, blocks: int, size: int, runs: int, modes: list[str]) -> dict[str, object]:
    """Every mode's figures for one shape, the modes alternated in each run."""
    seed_db = tmp / f"seed-{blocks}x{size}"
    feed_id = _make_feed(seed_db, blocks, size)
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for _ in range(runs):
        for mode in modes:
            seconds, fetcher, seeder = _run(seed_db, feed_id, MODES[mode], tmp, None)
            times.setdefault(mode, []).append(seconds)
            cpu.setdefault(f"{mode}_fetcher", []).append(fetcher)
            cpu.setdefault(f"{mode}_seeder", []).append(seeder)
            times.setdefault(f"{mode}_first", []).append(
                _run(seed_db, feed_id, MODES[mode], tmp, blocks // 2)[0])
    med = {key: statistics.median(values) for key, values in times.items()}
    goal = 0.85 if size >= 64 * 1024 else 0.75
    ratio = med["plain"] / med["secure"]
    result: dict[str, object] = {"shape": f"{blocks}x{size}"}
    for mode in modes:
        result[f"{mode}_MBps"] = round(blocks * size / med[mode] / 1e6, 1)
        result[f"{mode}_blocks_per_s"] = round(blocks / med[mode])
    result.update({
        "ratio": round(ratio, 3), "goal": goal, "met": ratio >= goal,
        "first_block_ms": {mode: round(med[f"{mode}_first"] * 1000, 1) for mode in modes},
        "cpu_us_per_block": {key: round(statistics.median(values) / blocks * 1e6, 1)
                             for key, values in cpu.items()},
        "runs": {key: [round(v, 4) for v in values] for key, values in times.items()},
    })
    if "nocipher" in modes:
        result["nocipher_ratio"] = round(med["plain"] / med["nocipher"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shapes", nargs="*", default=["1600x65536", "40000x1024"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ceiling", action="store_true",
                        help="also run encrypted with the cipher replaced by a copy")
    parser.add_argument("--seed", nargs=2, metavar=("DB", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--fetch", nargs=4, metavar=("DB", "ID", "PORT", "MODE"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--block", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    child = args.seed or args.fetch
    if child:
        if child[-1] == MODES["nocipher"]:
            _without_cipher()
        encrypt = child[-1] != MODES["plain"]
        if args.seed:
            trio.run(seed, args.seed[0], encrypt)
        else:
            db, feed_id, port, _ = args.fetch
            trio.run(fetch, db, feed_id, int(port), encrypt, args.block)
        return
    modes = ["plain", "secure", *(["nocipher"] if args.ceiling else [])]
    with tempfile.TemporaryDirectory() as tmpdir:
        for shape in args.shapes:
            blocks, size = (int(x) for x in shape.lower().split("x"))
            print(json.dumps(_shape(Path(tmpdir), blocks, size, args.runs, modes)), flush=True)


if __name__ == "__main__":
    main()
