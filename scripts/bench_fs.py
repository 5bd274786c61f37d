#!/usr/bin/env python3
"""Benchmark the FUSE mount against its baselines, side by side in one run.

* read:  ``cat MNT/<id>/.feed > /dev/null`` of a local feed vs ``cat FILE > /dev/null`` of
  the same file on the underlying disk (page-cached). Target: >= 1,000 MB/s.
* write: ``cp FILE MNT/`` into a fresh mount vs ``hyperfs add FILE`` into a fresh
  database. Target: cp >= 70 % of add.

Each figure is the median of --runs runs; every run of a write uses a fresh database so
no run pays for deduplicating the previous one. Usage::

    .venv/bin/python scripts/bench_fs.py [--size-mib 1024] [--runs 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HYPERFS = str(Path(sys.executable).with_name("hyperfs"))


def timed(cmd: str) -> float:
    began = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True)
    return time.perf_counter() - began


class Mount:
    """A `hyperfs mount` subprocess, ready when it says so; always unmounted on exit."""

    def __init__(self, db: Path, mnt: Path) -> None:
        mnt.mkdir(parents=True, exist_ok=True)
        self.mnt = mnt
        self.proc = subprocess.Popen([HYPERFS, "--db", str(db), "mount", str(mnt)],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(b"hyperfs: mounted"):
            self.close()
            raise RuntimeError(f"mount failed: {line!r}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-uz", str(self.mnt)], check=False)

    def __enter__(self) -> Mount:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_fs.", dir=args.dir))
    size = args.size_mib << 20
    mb = size / 1e6
    try:
        source = work / "source.bin"
        with open(source, "wb") as out:
            for _ in range(args.size_mib):
                out.write(os.urandom(1 << 20))
        results: dict[str, list[float]] = {"add": [], "cp": [], "cat_disk": [], "cat_mnt": []}
        feed_id = ""
        for run in range(args.runs):
            results["add"].append(timed(f"{HYPERFS} --db {work}/add{run} add {source}"
                                        " > /dev/null"))
            shutil.rmtree(work / f"add{run}")
            db = work / f"db{run}"
            with Mount(db, work / f"mnt{run}") as mount:
                results["cp"].append(timed(f"cp {source} {mount.mnt}/copy.bin"))
                feed_id = os.getxattr(mount.mnt / "copy.bin", "user.hyperfs.id").decode()
                results["cat_disk"].append(timed(f"cat {source} > /dev/null"))
                results["cat_mnt"].append(
                    timed(f"cat {mount.mnt}/{feed_id}/.feed > /dev/null"))
            shutil.rmtree(db)
        speeds = {key: mb / statistics.median(times) for key, times in results.items()}
        print(f"{args.size_mib} MiB, median of {args.runs} runs (MB/s):")
        for key, times in results.items():
            runs = ", ".join(f"{mb / t:.0f}" for t in times)
            print(f"  {key:9} {speeds[key]:8.0f}   ({runs})")
        print(f"  read through the mount: {speeds['cat_mnt']:.0f} MB/s "
              f"({speeds['cat_mnt'] / speeds['cat_disk']:.0%} of the disk file; "
              "target >= 1,000 MB/s)")
        print(f"  cp into the mount: {speeds['cp'] / speeds['add']:.0%} of hyperfs add "
              "(target >= 70 %)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
