#!/usr/bin/env python3
"""Benchmark of the feed core: appends, read-back and `hyperfs add` of big files, on disk.

Side by side, in one run (the machine is shared: read the ratios, not the MB/s):

* blocks (``--cases 1K,64K``): ``Core.create_write_stream`` (one write per block, then
  finalize), then ``Core.create_read_stream`` over the whole feed, for hyperfs as it is
  in both durabilities (``durable=False``, as JS, which never fsyncs; and the default,
  whose finalize fdatasyncs) and, with ``--before DIR``, the hyperfs source tree in DIR
  (e.g. ``git archive`` of an older commit); the JS reference, hypercore 1.8.0 on memdb
  (``tests/js/bench_core.js``); and SHA-256 alone of the same blocks, the bound that
  reads no longer pay;
* big files (``--big``, e.g. 256M,4G): `hyperfs add` and `hyperfs add --fsync` of a file
  of random bytes (the whole command, start-up included) against `cp` of it to the same
  disk (an in-kernel copy_file_range), `dd bs=4M conv=fdatasync` (a synced copy through
  user space: the fair baseline for `add --fsync`) and `openssl dgst -sha256` of it, then
  a full read-back of the feed (timed inside the reading process), with each command's
  peak RSS (memory must stay flat as the file grows);
* memory of the block path: a child appending N and 10 N blocks, which must stay flat.

Every hyperfs figure comes from a child process (so ``--before`` runs the same code path
with the older tree first on sys.path); medians of ``--runs`` runs, with ratios; each run
takes the commands in a rotated order (see :func:`bench_big` for why).

    .venv/bin/python scripts/bench_core.py [--runs 3] [--quick] [--no-js]
        [--cases 1K,64K] [--before /tmp/hyperfs-before] [--big 256M,4G] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
CASES = {"1K": (100_000, 1024), "64K": (2_000, 64 * 1024)}

BLOCKS_CHILD = """
import json, os, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
import trio
from hyperfs import open_core
count, size, workdir = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
options = {} if sys.argv[5] == "durable" else {"durable": False}  # (older trees: no option)
data = os.urandom(count * size)
blocks = [data[i * size:(i + 1) * size] for i in range(count)]
async def main():
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        async with open_core(tmp, **options) as core:
            start = time.perf_counter()
            async with core.create_write_stream() as stream:
                for block in blocks:
                    await stream.write(block)
            append = time.perf_counter() - start
            start, count = time.perf_counter(), 0
            async for block in core.create_read_stream(stream.id):
                if block != blocks[count]:
                    raise AssertionError(f"block {count} differs")
                count += 1
            read = time.perf_counter() - start
            assert count == len(blocks)
    print(json.dumps({"append": append, "read": read}))
trio.run(main)
"""

READ_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import trio
from hyperfs import open_core
async def main():
    async with open_core(sys.argv[2]) as core:
        start, total = time.perf_counter(), 0
        async for block in core.create_read_stream(sys.argv[3]):
            total += len(block)
        print(json.dumps({"seconds": time.perf_counter() - start, "bytes": total}))
trio.run(main)
"""

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


class Timed(NamedTuple):
    """A command run to its end: wall seconds, CPU seconds (user and system, its children
    waited for included: an add's hash workers), peak RSS in bytes, its stdout."""

    seconds: float
    cpu: float
    rss: int
    out: str


def timed(cmd: list[str], env: dict[str, str] | None = None) -> Timed:
    """Run ``cmd`` to its end (:class:`Timed`).

    Under /usr/bin/time, whose own small RSS is what the command starts from (a child
    forked from this process would start from ours). It runs in / so that ``python -m``
    imports hyperfs from PYTHONPATH, not from the current folder."""
    with tempfile.NamedTemporaryFile() as rss:
        start = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", rss.name, *cmd],
                              env=env, cwd="/", stdout=subprocess.PIPE, check=True)
        seconds = time.perf_counter() - start
        user, system, kib = Path(rss.name).read_text().split()[-3:]
        return Timed(seconds, float(user) + float(system), int(kib) * 1024,
                     done.stdout.decode())


def hyperfs_env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree)}


def med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def bench_blocks(args: argparse.Namespace, trees: dict[str, Path]) -> None:
    from hyperfs.testing import jsref

    use_js = not args.no_js and jsref.JS_AVAILABLE
    if not args.no_js and not use_js:
        print("(JS reference not installed: scripts/setup.sh; running without it)")
    for case in args.cases.split(","):
        count, size = CASES[case]
        count //= 10 if args.quick else 1
        modes = {f"{name}{label}": (tree, mode) for name, tree in trees.items()
                 for label, mode in (("", "not durable"), (" durable", "durable"))}
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in modes}
        rows["SHA-256 only"], rows["JS 1.8.0"] = [], []
        sample = os.urandom(count * size)
        for run in range(args.runs):
            names = list(modes)  # in rotated order, as in bench_big (why: see there)
            for name in names[run % len(names):] + names[: run % len(names)]:
                tree, mode = modes[name]
                out = subprocess.run([sys.executable, "-c", BLOCKS_CHILD, str(tree), str(count),
                                      str(size), str(args.dir), mode], capture_output=True,
                                     text=True, check=True)
                rows[name].append(json.loads(out.stdout))
            start = time.perf_counter()
            for at in range(0, len(sample), size):
                hashlib.sha256(b"\0" + sample[at:at + size]).digest()
            seconds = time.perf_counter() - start
            rows["SHA-256 only"].append({"append": seconds, "read": seconds})
            if use_js:
                result = jsref.js_bench_core(count, size)
                rows["JS 1.8.0"].append({"append": result["append_seconds"],
                                         "read": result["read_seconds"]})
        mb = count * size / 1e6
        print(f"\n== {count} x {size // 1024} KiB ({mb:.0f} MB), medians of {args.runs} runs, "
              f"on disk in {args.dir}")
        print("(hyperfs: durable=False, the durability of JS, which never fsyncs; "
              "hyperfs durable: each finalize fdatasyncs)")
        print(f"{'':18}{'append+finalize':>30}{'read back':>30}")
        for name, runs in rows.items():
            if runs:
                a, r = med(runs, "append"), med(runs, "read")
                print(f"{name:18}{count / a:>12,.0f} blk/s {mb / a:>8.0f} MB/s"
                      f"{count / r:>12,.0f} blk/s {mb / r:>8.0f} MB/s")
        pairs = [(mine, other) for mine in modes if mine.startswith("hyperfs")
                 for other in rows if other not in modes or other == f"before{mine[7:]}"]
        for mine, other in pairs:
            if rows[other]:
                ours, theirs = rows[mine], rows[other]
                print(f"{mine} / {other}: append "
                      f"{med(theirs, 'append') / med(ours, 'append'):.2f}x, "
                      f"read {med(theirs, 'read') / med(ours, 'read'):.2f}x")


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].isalpha() else int(text)


def make_file(path: Path, size: int) -> None:
    """``size`` incompressible bytes (64 MiB of random bytes, each copy made different)."""
    chunk = os.urandom(64 << 20)
    with open(path, "wb") as out:
        for at in range(0, size, len(chunk)):
            out.write(at.to_bytes(8, "big") + chunk[8 : min(len(chunk), size - at)])


def cache(path: Path) -> None:
    """Read ``path`` through, so that all of it is in the page cache (`hyperfs add` drops
    the source's pages behind its copy: a command after it would otherwise read it from
    the disk)."""
    buffer = bytearray(16 << 20)
    with open(path, "rb", buffering=0) as file:
        while file.readinto(buffer):
            pass


def bench_big(args: argparse.Namespace, trees: dict[str, Path], size_text: str) -> None:
    """`hyperfs add` (and `add --fsync`) of one big file, against cp, dd and openssl on
    the same bytes; then the feed's full read-back, against SHA-256 (openssl) of them.

    Each run takes the commands in another order (rotated): a command that follows the
    deletion of a big file gets its freed page cache, one that follows openssl does not,
    and on a VM that returns free memory to its host that is worth up to 2x. Every
    command starts after a ``sync`` with the previous one's output deleted: this VM
    throttles writers past ~4 GB of dirty pages (vm.dirty_ratio 20), so a command that
    follows another's 4 GiB of unwritten pages measures the disk, not its own work. And
    every command finds the whole source in the page cache (:func:`cache`)."""
    size = parse_size(size_text)
    mb = size / 1e6
    rows: dict[str, list[Timed]] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        source, db, copy = Path(tmp) / "source", Path(tmp) / "db", Path(tmp) / "copy"
        make_file(source, size)
        os.sync()  # the source's pages clean: no step pays for their writeback

        def add(name: str, tree: Path, *fsync: str) -> None:
            command = [sys.executable, "-m", "hyperfs.cli", "--db", str(db), "add", *fsync,
                       str(source)]
            cache(source)
            os.sync()
            added = timed(command, env=hyperfs_env(tree))
            rows.setdefault(" ".join([f"{name} add", *fsync]), []).append(added)
            if not fsync:
                read = [sys.executable, "-c", READ_CHILD, str(tree), str(db), added.out.strip()]
                reader = timed(read, env=hyperfs_env(tree))
                result = json.loads(reader.out)
                assert result["bytes"] == size
                rows.setdefault(f"{name} read back", []).append(
                    reader._replace(seconds=result["seconds"]))
            shutil.rmtree(db)
            os.sync()

        def baseline(name: str, *command: str) -> None:
            cache(source)
            os.sync()
            rows.setdefault(name, []).append(timed(list(command)))
            copy.unlink(missing_ok=True)
            os.sync()

        steps = [step for name, tree in trees.items() for step in (
            lambda name=name, tree=tree: add(name, tree),
            lambda name=name, tree=tree: add(name, tree, "--fsync"))] + [
            lambda: baseline("cp", "cp", str(source), str(copy)),
            lambda: baseline("dd bs=4M fdatasync", "dd", f"if={source}", f"of={copy}",
                             "bs=4M", "conv=fdatasync", "status=none"),
            lambda: baseline("openssl sha256", "openssl", "dgst", "-sha256", str(source))]
        for run in range(args.runs):
            for step in steps[run % len(steps):] + steps[: run % len(steps)]:
                step()
    print(f"\n== a {size_text} file ({mb:.0f} MB), medians of {args.runs} runs, in {args.dir}")
    medians = {name: statistics.median(run.seconds for run in runs)
               for name, runs in rows.items()}
    print(f"{'':24}{'median':>13}{'peak RSS':>13}   each run: wall s (CPU s)")
    for name, runs in sorted(rows.items()):
        each = ", ".join(f"{run.seconds:.2f} ({run.cpu:.2f})" for run in runs)
        print(f"{name:24}{mb / medians[name]:>8.0f} MB/s"
              f"{max(run.rss for run in runs) / 2**20:>9.0f} MiB   {each}")
    bound = max(medians["cp"], medians["openssl sha256"])
    for name in trees:
        add_time, fsync_time = medians[f"{name} add"], medians[f"{name} add --fsync"]
        print(f"{name}: add {bound / add_time:.0%} of the slower of cp and SHA-256; "
              f"add --fsync {medians['dd bs=4M fdatasync'] / fsync_time:.0%} of dd "
              f"conv=fdatasync; read back "
              f"{medians['openssl sha256'] / medians[f'{name} read back']:.2f}x SHA-256 of the "
              "same bytes")


def memory(blocks: int, size: int, workdir: Path) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(blocks), str(size), str(workdir)],
        capture_output=True, text=True, check=True, env=hyperfs_env(ROOT),
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the databases go (a disk, not tmpfs, for 'on disk')")
    parser.add_argument("--before", type=Path, default=None,
                        help="a hyperfs source tree to compare with (its hyperfs/ inside; "
                             "one that knows `add --fsync`, for --big)")
    parser.add_argument("--big", default="", help="file sizes for `hyperfs add`, e.g. 256M,4G")
    parser.add_argument("--no-js", action="store_true", help="skip the JS reference")
    parser.add_argument("--no-blocks", action="store_true", help="skip the block cases")
    parser.add_argument("--quick", action="store_true", help="10x fewer blocks")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"block cases to run, of {', '.join(CASES)} (default all)")
    parser.add_argument("--memory-blocks", type=int, default=100_000,
                        help="N for the memory check (N and 10 N blocks of 1 KiB)")
    args = parser.parse_args()
    trees = {"hyperfs": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    if not args.no_blocks:
        bench_blocks(args, trees)
    for size_text in filter(None, args.big.split(",")):
        bench_big(args, trees, size_text)
    n = args.memory_blocks // (10 if args.quick else 1)
    small, large = memory(n, 1024, args.dir), memory(10 * n, 1024, args.dir)
    print("\n== memory, 1 KiB blocks (append + read back)")
    for blocks, m in ((n, small), (10 * n, large)):
        print(f"{blocks:>9} blocks: traced peak {m['traced_peak'] / 2**20:6.1f} MiB, "
              f"RssAnon {m['rss_anon'] / 2**20:6.1f} MiB, max RSS {m['max_rss'] / 2**20:6.1f} MiB")
    print("(max RSS counts LevelDB's mmapped table files, i.e. page cache: see RssAnon)")


if __name__ == "__main__":
    main()
