#!/usr/bin/env python3
"""Benchmark of the feed core: append+finalize and full read-back, on disk.

Side by side, in one run and on the same random data sizes:

* hyperfs: ``Core.create_write_stream`` (one write per block, then finalize), then
  ``Core.create_read_stream`` over the whole feed, each block verified against its hash;
* the JS reference, hypercore 1.8.0 on memdb (``tests/js/bench_core.js``), doing the same;
* the physical limit of our design: hashlib SHA-256 of every block plus plyvel write
  batches of the blocks and their hashes (same options, same batch sizes as hyperfs), and
  for reading, two LevelDB range scans with a SHA-256 check per block.

Medians of ``--runs`` runs, with ratios. Then memory: peak RSS and Python's traced peak of
a child process appending N and 10 N blocks, which must stay flat.

    .venv/bin/python scripts/bench_core.py [--runs 5] [--quick] [--no-js]
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
from hashlib import sha256
from pathlib import Path

import trio

from hyperfs import open_core
from hyperfs.feeds.streams import WriteStream
from hyperfs.store.layout import KEY
from hyperfs.store.store import Store

ROOT = Path(__file__).resolve().parent.parent

CASES = [(100_000, 1024), (2_000, 64 * 1024)]


def make_blocks(count: int, size: int) -> list[bytes]:
    data = os.urandom(count * size)
    return [data[i * size : (i + 1) * size] for i in range(count)]


async def run_hyperfs(blocks: list[bytes], workdir: Path) -> dict[str, float]:
    """Append+finalize through the write stream, then read the feed back."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        async with open_core(tmp) as core:
            start = time.perf_counter()
            async with core.create_write_stream() as stream:
                for block in blocks:
                    await stream.write(block)
            append = time.perf_counter() - start
            start = time.perf_counter()
            count = 0
            async for block in core.create_read_stream(stream.id):
                if block is not blocks[count] and block != blocks[count]:
                    raise AssertionError(f"block {count} differs")
                count += 1
            read = time.perf_counter() - start
            assert count == len(blocks)
    return {"append": append, "read": read}


def run_physical(blocks: list[bytes], workdir: Path) -> dict[str, float]:
    """The floor for our design: hash + LevelDB batches of the same keys and values."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        store = Store(tmp)  # the same plyvel options hyperfs uses
        db, pack = store.db, KEY.pack
        data_prefix, hash_prefix = b"d" + bytes(8), b"h" + bytes(8)
        per_batch = max(1, min(WriteStream.FLUSH_BLOCKS, WriteStream.FLUSH_BYTES // len(blocks[0])))
        start = time.perf_counter()
        for first in range(0, len(blocks), per_batch):
            with db.write_batch(transaction=True) as batch:
                for index in range(first, min(first + per_batch, len(blocks))):
                    block = blocks[index]
                    batch.put(pack(hash_prefix, 2 * index), sha256(b"\0" + block).digest())
                    batch.put(pack(data_prefix, index), block)
        db.put(b"!done", b"", sync=True)  # finalize's one synced write
        append = time.perf_counter() - start
        start = time.perf_counter()
        hashes = db.iterator(prefix=hash_prefix, include_key=False, fill_cache=False)
        count = 0
        for block in db.iterator(prefix=data_prefix, include_key=False, fill_cache=False):
            if sha256(b"\0" + block).digest() != next(hashes):
                raise AssertionError("hash mismatch")
            count += 1
        read = time.perf_counter() - start
        assert count == len(blocks)
        store.close()
    return {"append": append, "read": read}


MEMORY_CHILD = """
import json, os, resource, sys, tempfile, tracemalloc, trio
from hyperfs import open_core
blocks, size, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
pool = os.urandom(1 << 22)
anon = []
def rss_anon():  # heap and LevelDB buffers; RssFile (mmapped table files) is page cache
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            anon.append(int(line.split()[1]) * 1024)
async def main():
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        async with open_core(tmp) as core:
            tracemalloc.start()
            async with core.create_write_stream() as stream:
                for i in range(blocks):
                    at = i * 4099 % ((1 << 22) - size)
                    await stream.write(i.to_bytes(8, "big") + pool[at:at + size - 8])
            rss_anon()
            count = 0
            async for block in core.create_read_stream(stream.id):
                count += 1
            assert count == blocks
            rss_anon()
            traced = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"traced_peak": traced, "max_rss": rss, "rss_anon": max(anon)}))
trio.run(main)
"""


def memory(blocks: int, size: int, workdir: Path) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(blocks), str(size), str(workdir), str(ROOT)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)


def med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the databases go (a disk, not tmpfs, for 'on disk')")
    parser.add_argument("--no-js", action="store_true", help="skip the JS reference")
    parser.add_argument("--quick", action="store_true", help="10x fewer blocks")
    parser.add_argument("--memory-blocks", type=int, default=100_000,
                        help="N for the memory check (N and 10 N blocks of 1 KiB)")
    args = parser.parse_args()
    js_bench_core = None
    if not args.no_js:
        from hyperfs.testing.jsref import JS_AVAILABLE, js_bench_core  # type: ignore[no-redef]

        if not JS_AVAILABLE:
            print("(JS reference not installed: scripts/setup.sh; running without it)")
            js_bench_core = None
    summary = {}
    for count, size in CASES:
        if args.quick:
            count //= 10
        blocks = make_blocks(count, size)
        ours, phys, js = [], [], []
        for _ in range(args.runs):
            ours.append(trio.run(run_hyperfs, blocks, args.dir))
            phys.append(run_physical(blocks, args.dir))
            if js_bench_core is not None:
                result = js_bench_core(count, size)
                js.append({"append": result["append_seconds"], "read": result["read_seconds"]})
        mb = count * size / 1e6
        label = f"{count} x {size // 1024} KiB"
        print(f"\n== {label} ({mb:.0f} MB), medians of {args.runs} runs, on disk in {args.dir}")
        print(f"{'':12}{'append+finalize':>30}{'read back':>30}")
        rows = [("hyperfs", ours), ("physical", phys)] + ([("JS 1.8.0", js)] if js else [])
        for name, runs in rows:
            a, r = med(runs, "append"), med(runs, "read")
            print(f"{name:12}{count / a:>12,.0f} blk/s {mb / a:>8.0f} MB/s"
                  f"{count / r:>12,.0f} blk/s {mb / r:>8.0f} MB/s")
        a, r = med(ours, "append"), med(ours, "read")
        line = (f"hyperfs/physical: append {med(phys, 'append') / a:.0%}, "
                f"read {med(phys, 'read') / r:.0%}")
        if js:
            line += (f"; hyperfs/JS: append {med(js, 'append') / a:.2f}x, "
                     f"read {med(js, 'read') / r:.2f}x")
        print(line)
        summary[label] = {"hyperfs": ours, "physical": phys, "js": js}
    n = args.memory_blocks // (10 if args.quick else 1)
    small, large = memory(n, 1024, args.dir), memory(10 * n, 1024, args.dir)
    print("\n== memory, 1 KiB blocks (append + read back)")
    for blocks, m in ((n, small), (10 * n, large)):
        print(f"{blocks:>9} blocks: traced peak {m['traced_peak'] / 2**20:6.1f} MiB, "
              f"RssAnon {m['rss_anon'] / 2**20:6.1f} MiB, max RSS {m['max_rss'] / 2**20:6.1f} MiB")
    print("(max RSS counts LevelDB's mmapped table files, i.e. page cache: see RssAnon)")


if __name__ == "__main__":
    main()
