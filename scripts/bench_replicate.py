#!/usr/bin/env python3
"""Full-feed replication over loopback TCP between two processes, hyperfs vs hypercore 1.8.0.

For each shape (blocks x size), in one run and side by side:
- hyperfs: `hyperfs serve` on a database holding the feed, and a fetching process (this
  script with --child) that connects, downloads every block and reports the seconds it
  took, measured inside the process from connect to the last verified block; then a
  fresh fetcher reports the time from connect to one verified middle block.
- JS: the reference seeder and fetcher (tests/js/ref.js, setNoDelay on) doing the same.
Peak memory of both hyperfs processes is sampled every 20 ms and reported in two parts:
anonymous memory (heap, buffers: what the process really holds) and file-backed pages
(LevelDB maps its table files, so pages of the feed it reads count in RSS until the
kernel reclaims them). Medians of --runs runs.

    .venv/bin/python scripts/bench_replicate.py [--runs 3] [BLOCKSxSIZE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
HYPERFS = [sys.executable, "-m", "hyperfs.cli"]


async def child(db: str, feed_id: str, peer: str, block: int | None) -> None:
    """Fetch the feed (or one block) and print timings as JSON."""
    from hyperfs import open_core
    from hyperfs.net.node import open_node

    async with open_core(db) as core:
        feed = core.get(feed_id)
        start, cpu = time.perf_counter(), time.process_time()
        async with open_node(core, peers=[peer]):
            if block is not None:
                data = await feed.get(block, timeout=60)
                assert data is not None
                result = {"seconds": time.perf_counter() - start, "bytes": len(data)}
            else:
                await feed.download()
                seconds = time.perf_counter() - start
                result = {"seconds": seconds, "cpu": time.process_time() - cpu,
                          "blocks": feed.blocks, "local": feed.local}
    print(json.dumps(result), flush=True)


class MemoryPeaks:
    """Samples RssAnon and RssFile of some processes in a thread until stopped."""

    def __init__(self, *pids: int) -> None:
        self.peaks = {pid: {"anon": 0.0, "file": 0.0} for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for pid, peak in self.peaks.items():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    for key, field in (("anon", "RssAnon:"), ("file", "RssFile:")):
                        if line.startswith(field):
                            peak[key] = max(peak[key], int(line.split()[1]) / 1024)

    def stop(self) -> dict[int, dict[str, float]]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def hyperfs_run(source: Path, block_size: int, blocks: int, tmp: Path) -> dict[str, float]:
    seed_db, fetch_db = tmp / "seed", tmp / "fetch"
    feed_id = subprocess.run(
        [*HYPERFS, "--db", str(seed_db), "add", "--block-size", str(block_size), str(source)],
        check=True, capture_output=True, text=True).stdout.strip()
    server = subprocess.Popen([*HYPERFS, "--db", str(seed_db), "serve", "--listen",
                               "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "listening on HOST:PORT"
        peer = line.split()[-1]
        fetcher = _start_child(fetch_db, feed_id, peer, None)
        memory = MemoryPeaks(server.pid, fetcher.pid)
        full = _finish_child(fetcher)
        peaks = memory.stop()
        if full["local"] != blocks:
            raise RuntimeError(f"fetched {full['local']} of {blocks} blocks")
        middle = _finish_child(_start_child(tmp / "middle", feed_id, peer, blocks // 2))
    finally:
        server.terminate()
        server.wait()
    size = source.stat().st_size
    return {"seconds": full["seconds"], "mb_per_s": size / full["seconds"] / 1e6,
            "blocks_per_s": blocks / full["seconds"],
            "middle_block_ms": middle["seconds"] * 1000,
            "seeder_anon_mb": peaks[server.pid]["anon"],
            "seeder_file_mb": peaks[server.pid]["file"],
            "fetcher_anon_mb": peaks[fetcher.pid]["anon"],
            "fetcher_file_mb": peaks[fetcher.pid]["file"]}


def _start_child(db: Path, feed_id: str, peer: str, block: int | None) -> subprocess.Popen:
    args = [sys.executable, __file__, "--child", str(db), feed_id, peer]
    if block is not None:
        args.append(str(block))
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


def _finish_child(child_process: subprocess.Popen) -> dict[str, float]:
    out, _ = child_process.communicate()
    if child_process.returncode:
        raise RuntimeError(f"fetching child failed with status {child_process.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        db, feed_id, peer, *block = sys.argv[2:]
        trio.run(child, db, feed_id, peer, int(block[0]) if block else None)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", default=["2000x65536", "100000x1024"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-js", action="store_true", help="skip the JS reference")
    args = parser.parse_args()
    from hyperfs.testing.jsref import js_replication_run

    for shape in args.shapes:
        blocks, size = (int(x) for x in shape.lower().split("x"))
        with tempfile.TemporaryDirectory(prefix="bench-replicate-") as tmpdir:
            tmp = Path(tmpdir)
            source = tmp / "source"
            with source.open("wb") as f:
                for _ in range(blocks):
                    f.write(os.urandom(size))
            ours, js = [], []
            for run in range(args.runs):
                ours.append(hyperfs_run(source, size, blocks, tmp / f"run{run}"))
                if not args.no_js:
                    js.append(js_replication_run(source, size))
        row: dict[str, object] = {"shape": shape}
        for key in ours[0]:
            row[f"hyperfs_{key}"] = round(statistics.median(r[key] for r in ours), 2)
        if js:
            row["js_mb_per_s"] = round(statistics.median(r["mb_per_s"] for r in js), 2)
            row["js_blocks_per_s"] = round(statistics.median(r["blocks_per_s"] for r in js), 1)
            row["js_middle_block_ms"] = round(
                statistics.median(r["middle_block_seconds"] for r in js) * 1000, 2)
            row["ratio_vs_js"] = round(
                row["hyperfs_mb_per_s"] / row["js_mb_per_s"], 2)  # type: ignore[operator]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
