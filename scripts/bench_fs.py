#!/usr/bin/env python3
"""Benchmark the FUSE mount against its baselines, side by side in one run.

* read:  ``cat MNT/<id>/.feed > /dev/null`` of a local feed vs ``cat FILE > /dev/null`` of
  the same file on the underlying disk (page-cached). Target: >= 1,000 MB/s.
* write: ``cp FILE MNT/`` into a fresh mount vs ``hyperfs add FILE`` into a fresh
  database. Target: cp >= 70 % of add.
* remote: a ``hyperfs serve`` holds the feed; ``cat MNT/<id>/.feed`` through a fresh
  mount connected to it (``--peer``) vs ``hyperfs cat <id> --peer`` into a fresh database.
  Target: the mount at >= 80 % of direct replication.
* first byte: through a fresh mount connected to the seeder, the time from open() to
  the first byte of a block that is not local (the first read also learns the feed;
  then single blocks at random places). Target: within 20 ms.

Every hyperfs process runs with discovery off and HYPERFS_LOCAL_ONLY=1: peers are
named by address on 127.0.0.1 only.

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
LOCAL = ["--no-dht", "--no-mdns"]
os.environ["HYPERFS_LOCAL_ONLY"] = "1"  # inherited by every hyperfs started here


def timed(cmd: str) -> float:
    began = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True)
    return time.perf_counter() - began


class Mount:
    """A `hyperfs mount` subprocess, ready when it says so; always unmounted on exit."""

    def __init__(self, db: Path, mnt: Path, *args: str) -> None:
        mnt.mkdir(parents=True, exist_ok=True)
        self.mnt = mnt
        self.proc = subprocess.Popen([HYPERFS, "--db", str(db), "mount", str(mnt), *LOCAL,
                                      *args], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"hyperfs: mounted"):
                return
        self.close()
        raise RuntimeError("mount failed (see its error above)")

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


class Seeder:
    """`hyperfs serve` of a database on 127.0.0.1, ready once it prints its address."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen([HYPERFS, "--db", str(db), "serve", "--listen",
                                      "127.0.0.1:0", *LOCAL], stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on "):
            self.close()
            raise RuntimeError(f"serve failed: {line!r}")
        self.address = line.split()[-1]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def first_bytes(mnt: Path, feed_id: str, blocks: int, count: int = 6) -> list[float]:
    """Seconds from open() to the first byte of blocks not yet local: block 0, then
    blocks spread over the feed (none next to another, so no read-ahead helps)."""
    indexes = [0] + [blocks * k // count + 1 for k in range(1, count)]
    times = []
    for index in indexes:
        began = time.perf_counter()
        with open(mnt / feed_id / str(index), "rb", buffering=0) as block:
            assert block.read(1)
        times.append(time.perf_counter() - began)
    return times


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
        results: dict[str, list[float]] = {"add": [], "cp": [], "cat_disk": [], "cat_mnt": [],
                                           "cat_remote": [], "cat_mnt_remote": []}
        firsts: list[float] = []
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
            seeder = Seeder(db)
            try:
                peer = ["--peer", seeder.address]
                results["cat_remote"].append(timed(
                    f"{HYPERFS} --db {work}/cat{run} cat {feed_id} {' '.join(peer + LOCAL)}"
                    " > /dev/null"))
                with Mount(work / f"remote{run}", work / f"rmnt{run}", *peer) as remote:
                    results["cat_mnt_remote"].append(
                        timed(f"cat {remote.mnt}/{feed_id}/.feed > /dev/null"))
                with Mount(work / f"first{run}", work / f"fmnt{run}", *peer) as remote:
                    firsts += first_bytes(remote.mnt, feed_id, size // (64 << 10))
            finally:
                seeder.close()
            for done in (db, work / f"cat{run}", work / f"remote{run}", work / f"first{run}"):
                shutil.rmtree(done)
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
        print(f"  remote read through the mount: {speeds['cat_mnt_remote']:.0f} MB/s, "
              f"{speeds['cat_mnt_remote'] / speeds['cat_remote']:.0%} of hyperfs cat "
              "(target >= 80 %)")
        print(f"  first byte of a remote block: median {statistics.median(firsts) * 1e3:.1f}"
              f" ms, max {max(firsts) * 1e3:.1f} ms over {len(firsts)} reads (target 20 ms)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
