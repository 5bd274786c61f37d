#!/usr/bin/env python3
"""Full-feed replication over loopback TCP between two processes, hyperfs vs hypercore 1.8.0.

For each shape (blocks x size), in one run and side by side:
- hyperfs: `hyperfs serve` on a database holding the feed, and a fetching process (this
  script with --child) that connects, downloads every block and reports the seconds it
  took, measured inside the process from connect to the last verified block; then a
  fresh fetcher reports the time from connect to one verified middle block.
- JS: the reference seeder and fetcher (tests/js/ref.js, setNoDelay on) doing the same.
The CPU seconds of both processes over the download are reported too (the fetcher's
measured inside it, the seeder's from /proc), in all and per block. Peak memory of both
hyperfs processes is sampled every 20 ms and reported in two parts:
anonymous memory (heap, buffers: what the process really holds) and file-backed pages
(LevelDB maps its table files, so pages of the feed it reads count in RSS until the
kernel reclaims them). Medians of --runs runs.

``--big`` adds 4 GiB in 64 KiB blocks (65536x65536), hyperfs only: JS keeps the feed in
memory, so its figure beside it is the 131 MB shape's (2000x65536), measured in the
same run. ``--whole`` adds whole processes, start to exit: ``hyperfs serve`` ->
``hyperfs cat ID --peer HOST:PORT > FILE`` of 256 MiB in 64 KiB blocks, against the JS
seeder -> a JS fetcher process (``--out FILE``), both files checked against the source.
Both hyperfs processes run with ``--no-dht --no-mdns``: the peer is given. The package
is byte-compiled first, as an installed one is. Between two hyperfs processes the
connection is encrypted (the default); ``--plaintext`` measures plain 1.x instead (the
fetchers and the seeder, `serve`'s node run by this script, do not offer to encrypt),
the wire a JS peer speaks.

    .venv/bin/python scripts/bench_replicate.py \
        [--runs 3] [--big] [--whole] [--plaintext] [--no-js] [BLOCKSxSIZE ...]
"""

from __future__ import annotations

import argparse
import compileall
import filecmp
import json
import os
import shutil
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
NO_DISCOVERY = ["--no-dht", "--no-mdns"]
BIG = "65536x65536"
BIG_JS = "2000x65536"
WHOLE = "4096x65536"


def plaintext() -> bool:
    """``--plaintext`` (set in the environment, so the fetching children see it too):
    nobody offers to encrypt, so the connection is plain hypercore 1.x, as with JS."""
    return os.environ.get("BENCH_PLAINTEXT") == "1"


async def child(db: str, feed_id: str, peer: str, block: int | None) -> None:
    """Fetch the feed (or one block) and print timings as JSON."""
    from hyperfs import open_core
    from hyperfs.net.node import open_node

    async with open_core(db) as core:
        feed = core.get(feed_id)
        start, cpu, main_cpu = time.perf_counter(), time.process_time(), time.thread_time()
        async with open_node(core, peers=[peer], encrypt=not plaintext()):
            if block is not None:
                data = await feed.get(block, timeout=60)
                assert data is not None
                result = {"seconds": time.perf_counter() - start, "bytes": len(data)}
            else:
                await feed.download()
                seconds = time.perf_counter() - start
                result = {"seconds": seconds, "cpu": time.process_time() - cpu,
                          "main_cpu": time.thread_time() - main_cpu,
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


def add(db: Path, source: Path, block_size: int) -> str:
    """``hyperfs add`` of the source file: its feed id."""
    return subprocess.run(
        [*HYPERFS, "--db", str(db), "add", "--block-size", str(block_size), str(source)],
        check=True, capture_output=True, text=True).stdout.strip()


async def seed(db: str) -> None:
    """``--plaintext``'s seeder: `hyperfs serve`'s node, not offering to encrypt either
    (a hyperfs peer that does not offer is refused by one that does: no silent fallback)."""
    from hyperfs import open_core
    from hyperfs.net.node import open_node

    async with open_core(db) as core, open_node(core, listen="127.0.0.1:0",
                                                encrypt=False) as node:
        assert node.address is not None
        print(f"listening on {node.address[0]}:{node.address[1]}", flush=True)
        await trio.sleep_forever()


def serve(db: Path, *, plain: bool = False) -> tuple[subprocess.Popen, str]:
    """A ``hyperfs serve`` of ``db`` on loopback (``plain``: this script's seeder, which
    does not offer to encrypt), and its HOST:PORT once it listens."""
    command = ([sys.executable, __file__, "--seed", str(db)] if plain else
               [*HYPERFS, "--db", str(db), "serve", *NO_DISCOVERY, "--listen", "127.0.0.1:0"])
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()  # "listening on HOST:PORT"
    return server, line.split()[-1]


def hyperfs_run(seed_db: Path, feed_id: str, size: int, blocks: int,
                tmp: Path) -> dict[str, float]:
    """One fetch of the whole feed (and one of its middle block) from a ``hyperfs serve``."""
    server, peer = serve(seed_db, plain=plaintext())
    try:
        seeder_cpu = _cpu_seconds(server.pid)
        fetcher = _start_child(tmp / "fetch", feed_id, peer, None)
        memory = MemoryPeaks(server.pid, fetcher.pid)
        full = _finish_child(fetcher)
        seeder_cpu = _cpu_seconds(server.pid) - seeder_cpu
        peaks = memory.stop()
        if full["local"] != blocks:
            raise RuntimeError(f"fetched {full['local']} of {blocks} blocks")
        middle = _finish_child(_start_child(tmp / "middle", feed_id, peer, blocks // 2))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)  # (4 GiB: the next run needs the room)
    return {"seconds": full["seconds"], "mb_per_s": size / full["seconds"] / 1e6,
            "blocks_per_s": blocks / full["seconds"],
            "middle_block_ms": middle["seconds"] * 1000,
            "fetcher_cpu_s": full["cpu"], "fetcher_main_cpu_s": full["main_cpu"],
            "fetcher_cpu_us_a_block": full["cpu"] / blocks * 1e6,
            "seeder_cpu_s": seeder_cpu, "seeder_cpu_us_a_block": seeder_cpu / blocks * 1e6,
            "seeder_anon_mb": peaks[server.pid]["anon"],
            "seeder_file_mb": peaks[server.pid]["file"],
            "fetcher_anon_mb": peaks[fetcher.pid]["anon"],
            "fetcher_file_mb": peaks[fetcher.pid]["file"]}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hyperfs_whole_run(seed_db: Path, feed_id: str, source: Path, tmp: Path) -> float:
    """Seconds of a whole ``hyperfs cat ID --peer`` process, start to exit, writing the
    feed to a file (checked against the source) from a ``hyperfs serve`` listening (the
    real command, encrypted as `cat` is, --plaintext or not)."""
    server, peer = serve(seed_db)
    out = tmp / "out"
    try:
        tmp.mkdir()
        with out.open("wb") as f:
            start = time.perf_counter()
            subprocess.run([*HYPERFS, "--db", str(tmp / "cat"), "cat", feed_id, "--peer",
                            peer, *NO_DISCOVERY], stdout=f, check=True)
            seconds = time.perf_counter() - start
        if not filecmp.cmp(out, source, shallow=False):
            raise RuntimeError("hyperfs cat wrote different bytes than the source")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return seconds


def js_whole_run(source: Path, block_size: int, tmp: Path) -> float:
    """Seconds of a whole JS fetcher process (``ref.js fetch --out``), start to exit, from
    a JS seeder listening; the file is checked against the source."""
    from hyperfs.testing.jsref import start_js_fetcher, start_js_seeder

    seeder, feed_id, port = start_js_seeder(source, block_size, timeout=600)
    out = tmp / "js-out"
    try:
        start = time.perf_counter()
        fetcher = start_js_fetcher(f"127.0.0.1:{port}", feed_id, out=out)
        try:
            if fetcher.wait(600):
                raise RuntimeError("the JS fetcher failed")
        finally:
            fetcher.terminate()
        seconds = time.perf_counter() - start
        if not filecmp.cmp(out, source, shallow=False):
            raise RuntimeError("the JS fetcher wrote different bytes than the source")
    finally:
        seeder.terminate()
        out.unlink(missing_ok=True)
    return seconds


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


def _shape(text: str) -> tuple[int, int]:
    blocks, size = (int(x) for x in text.lower().split("x"))
    return blocks, size


def _source(path: Path, blocks: int, size: int) -> Path:
    with path.open("wb") as f:
        for _ in range(blocks):
            f.write(os.urandom(size))
    return path


def replication_row(ours_shape: str, js_shape: str | None, runs: int, tmp: Path) -> dict:
    """hyperfs fetching ``ours_shape`` and JS ``js_shape`` (None: no JS), runs alternated."""
    from hyperfs.testing.jsref import js_replication_run

    blocks, size = _shape(ours_shape)
    source = _source(tmp / "source", blocks, size)
    seed_db = tmp / "seed"
    feed_id = add(seed_db, source, size)
    js_source = None
    if js_shape is not None:
        js_source = source if js_shape == ours_shape else _source(tmp / "js-source",
                                                                  *_shape(js_shape))
    ours, js = [], []
    for run in range(runs):
        ours.append(hyperfs_run(seed_db, feed_id, blocks * size, blocks, tmp / f"run{run}"))
        if js_source is not None:
            js.append(js_replication_run(js_source, _shape(js_shape or "")[1]))
    row: dict[str, object] = {"shape": ours_shape}
    for key in ours[0]:
        row[f"hyperfs_{key}"] = round(statistics.median(r[key] for r in ours), 2)
    if js:
        row["js_shape"] = js_shape
        row["js_mb_per_s"] = round(statistics.median(r["mb_per_s"] for r in js), 2)
        row["js_blocks_per_s"] = round(statistics.median(r["blocks_per_s"] for r in js), 1)
        row["js_middle_block_ms"] = round(
            statistics.median(r["middle_block_seconds"] for r in js) * 1000, 2)
        row["ratio_vs_js"] = round(
            row["hyperfs_mb_per_s"] / row["js_mb_per_s"], 2)  # type: ignore[operator]
        row["blocks_ratio_vs_js"] = round(
            row["hyperfs_blocks_per_s"] / row["js_blocks_per_s"], 2)  # type: ignore[operator]
    return row


def whole_row(runs: int, with_js: bool, tmp: Path) -> dict:
    """``hyperfs serve`` -> ``hyperfs cat`` vs JS -> JS, whole fetching processes."""
    blocks, size = _shape(WHOLE)
    source = _source(tmp / "source", blocks, size)
    seed_db = tmp / "seed"
    feed_id = add(seed_db, source, size)
    ours, js = [], []
    for run in range(runs):
        ours.append(hyperfs_whole_run(seed_db, feed_id, source, tmp / f"run{run}"))
        if with_js:
            js.append(js_whole_run(source, size, tmp))
    seconds = statistics.median(ours)
    row: dict[str, object] = {"whole_processes": WHOLE, "hyperfs_seconds": round(seconds, 3),
                              "hyperfs_mb_per_s": round(blocks * size / seconds / 1e6, 2),
                              "hyperfs_runs": [round(s, 3) for s in ours]}
    if js:
        js_seconds = statistics.median(js)
        row.update(js_seconds=round(js_seconds, 3),
                   js_mb_per_s=round(blocks * size / js_seconds / 1e6, 2),
                   js_runs=[round(s, 3) for s in js],
                   ratio_vs_js=round(js_seconds / seconds, 2))
    return row


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--seed":
        trio.run(seed, sys.argv[2])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        db, feed_id, peer, *block = sys.argv[2:]
        trio.run(child, db, feed_id, peer, int(block[0]) if block else None)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", default=["2000x65536", "100000x1024"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-js", action="store_true", help="skip the JS reference")
    parser.add_argument("--big", action="store_true",
                        help=f"also {BIG} (4 GiB), hyperfs only, beside JS at {BIG_JS}")
    parser.add_argument("--plaintext", action="store_true",
                        help="hyperfs fetchers do not encrypt (the default between hyperfs "
                             "peers): plain 1.x, as with JS; --whole is unaffected")
    parser.add_argument("--whole", action="store_true",
                        help=f"also whole processes, serve -> cat of {WHOLE} (256 MiB)")
    args = parser.parse_args()
    if args.plaintext:
        os.environ["BENCH_PLAINTEXT"] = "1"
    # Byte-compiled as an installed package is: with PYTHONDONTWRITEBYTECODE set (as on
    # this machine) every process would otherwise compile every module as it starts.
    compileall.compile_dir(ROOT / "hyperfs", quiet=1)
    rows: list[tuple[str, str | None]] = [(s, None if args.no_js else s) for s in args.shapes]
    if args.big:
        rows.append((BIG, None if args.no_js else BIG_JS))
    for ours_shape, js_shape in rows:
        with tempfile.TemporaryDirectory(prefix="bench-replicate-") as tmpdir:
            row = replication_row(ours_shape, js_shape, args.runs, Path(tmpdir))
        print(json.dumps(row), flush=True)
    if args.whole:
        with tempfile.TemporaryDirectory(prefix="bench-replicate-") as tmpdir:
            print(json.dumps(whole_row(args.runs, not args.no_js, Path(tmpdir))), flush=True)


if __name__ == "__main__":
    main()
