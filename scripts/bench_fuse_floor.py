#!/usr/bin/env python3
"""What any pyfuse3 filesystem costs per small file: the floor under hyperfs's `tar -x`.

Side by side in one run, ``tar -x`` of 2,000 files of 4 KiB (bench_fs.py's tar and
flags) into:

* a plain folder on the same disk (the kernel alone);
* a *memory* filesystem: pyfuse3 and trio with handlers that keep names and bytes in
  dicts and do nothing else (defined here, mounted in a child process with hyperfs's
  mount options) — what the FUSE round trips alone cost, for any filesystem written
  with pyfuse3;
* a hyperfs mount.

It prints the FUSE requests tar caused per file (counted by the memory filesystem), the
microseconds each took, and the ratios: memory / plain is the best any pyfuse3
filesystem can reach on this machine; hyperfs / memory is how close hyperfs comes to it.

    .venv/bin/python scripts/bench_fuse_floor.py [--runs 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyfuse3
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fs import EXTRACT, SMALL_FILES, Mount, small_tar, timed

from hyperfs.fs.mount import mount_options


class MemoryOps(pyfuse3.Operations):
    """One directory of files held in dicts: every request answered at once."""

    def __init__(self) -> None:
        super().__init__()
        self.inodes: dict[bytes, int] = {}
        self.data: dict[int, bytearray] = {pyfuse3.ROOT_INODE: bytearray()}
        self.requests: collections.Counter[str] = collections.Counter()

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        root = inode == pyfuse3.ROOT_INODE
        attr.st_mode = (stat.S_IFDIR | 0o755) if root else (stat.S_IFREG | 0o644)
        attr.st_nlink = 2 if root else 1
        attr.st_size = len(self.data[inode])
        attr.st_uid, attr.st_gid = os.getuid(), os.getgid()
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = time.time_ns()
        attr.attr_timeout = attr.entry_timeout = 300
        return attr

    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self.requests["lookup"] += 1
        inode = self.inodes.get(name)
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(inode)

    async def getattr(self, inode: int,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self.requests["getattr"] += 1
        return self._attr(inode)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo,
                                                           pyfuse3.EntryAttributes]:
        self.requests["create"] += 1
        inode = self.inodes[name] = len(self.data) + pyfuse3.ROOT_INODE
        self.data[inode] = bytearray()
        return pyfuse3.FileInfo(fh=inode), self._attr(inode)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self.requests["write"] += 1
        self.data[fh][off:off + len(buf)] = buf
        return len(buf)

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self.requests["setattr"] += 1
        if fields.update_size:
            del self.data[inode][attr.st_size:]
        return self._attr(inode)

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        self.requests["getxattr"] += 1
        raise pyfuse3.FUSEError(errno.ENODATA)

    async def flush(self, fh: int) -> None:
        self.requests["flush"] += 1

    async def release(self, fh: int) -> None:
        self.requests["release"] += 1


def serve_memory(mountpoint: str) -> None:
    """The child: mount MemoryOps until unmounted, then print its request counts."""
    ops = MemoryOps()
    options = mount_options(allow_other=False) - {"fsname=hyperfs", "subtype=hyperfs"}
    pyfuse3.init(ops, mountpoint, options | {"fsname=floor"})
    print("mounted", flush=True)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
    print(json.dumps(ops.requests), flush=True)


def tar_into_memory(tar: Path, mountpoint: Path) -> tuple[float, dict[str, int]]:
    """tar -x into a fresh memory filesystem: seconds, and the requests it caused."""
    mountpoint.mkdir()
    child = subprocess.Popen([sys.executable, __file__, "--serve", str(mountpoint)],
                             stdout=subprocess.PIPE)
    assert child.stdout is not None
    try:
        if child.stdout.readline() != b"mounted\n":
            raise RuntimeError("the memory filesystem did not mount")
        seconds = timed(f"{EXTRACT} {tar} -C {mountpoint}")
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        out, _ = child.communicate(timeout=30)
    return seconds, json.loads(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_memory(args.serve)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench_floor.", dir=args.dir))
    times: dict[str, list[float]] = {"plain": [], "memory": [], "hyperfs": []}
    requests: dict[str, int] = {}
    try:
        tar = work / "small.tar"
        small_tar(tar, tree=False)
        for run in range(args.runs):  # what is extracted stays: see bench_fs.bench_small
            plain = work / f"plain{run}"
            plain.mkdir()
            times["plain"].append(timed(f"{EXTRACT} {tar} -C {plain}"))
            seconds, requests = tar_into_memory(tar, work / f"memory{run}")
            times["memory"].append(seconds)
            with Mount(work / f"db{run}", work / f"mnt{run}") as mount:
                times["hyperfs"].append(timed(f"{EXTRACT} {tar} -C {mount.mnt}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {key: statistics.median(values) for key, values in times.items()}
    per_file = sum(requests.values()) / SMALL_FILES
    print(f"tar -x of {SMALL_FILES} x 4 KiB, median of {args.runs} runs:")
    for key, values in times.items():
        runs = ", ".join(f"{value:.3f}" for value in values)
        print(f"  {key:8} {median[key]:7.3f} s  {SMALL_FILES / median[key]:8.0f} files/s  "
              f"({runs})")
    print(f"  FUSE requests per file (memory filesystem): {per_file:.2f} "
          f"({', '.join(f'{k} {v / SMALL_FILES:.2f}' for k, v in sorted(requests.items()))})")
    print(f"  memory filesystem: {median['memory'] / SMALL_FILES / per_file * 1e6:.0f} us "
          f"a request; {median['plain'] / median['memory']:.0%} of the plain folder's "
          "speed (the ceiling for a pyfuse3 filesystem here)")
    print(f"  hyperfs: {median['plain'] / median['hyperfs']:.0%} of the plain folder's "
          f"speed, {median['memory'] / median['hyperfs']:.0%} of the memory filesystem's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
