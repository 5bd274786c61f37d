#!/usr/bin/env python3
"""What any pyfuse3 filesystem costs: the floor under hyperfs's `tar -x` and `cp` in.

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

``--big MIB`` measures big copies instead: ``cp`` of one MIB file (page-cached) to a
plain folder, into a *store* filesystem (the memory filesystem with each file's bytes
``pwrite`` to a backing file on the same disk, opened ``direct_io`` as hyperfs opens an
upload: the least a pyfuse3 filesystem that keeps the bytes does), into the store
filesystem while ``openssl dgst -sha256`` reads the same file beside it (the least such a
filesystem that also hashes the bytes can cost on these cores), and into a hyperfs mount;
with SHA-256 alone, the issue's other baseline. Every side starts after a ``sync``, the
copy before it deleted (bench_fs.bench_cp says why).

    .venv/bin/python scripts/bench_fuse_floor.py [--runs 5] [--dir /tmp] [--big MIB]
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
        attr.st_size = self._size(inode)
        attr.st_uid, attr.st_gid = os.getuid(), os.getgid()
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = time.time_ns()
        attr.attr_timeout = attr.entry_timeout = 300
        return attr

    def _size(self, inode: int) -> int:
        return len(self.data[inode])

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


class StoreOps(MemoryOps):
    """MemoryOps whose files' bytes are written to backing files in ``store`` (one each,
    by ``pwrite``), opened ``direct_io`` like a hyperfs upload: what keeping the bytes
    costs a pyfuse3 filesystem, with no hashing and no index."""

    def __init__(self, store: Path) -> None:
        super().__init__()
        self.store = store
        self.fds: dict[int, int] = {}
        self.sizes: dict[int, int] = {}

    def _size(self, inode: int) -> int:
        return self.sizes.get(inode, 0)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo,
                                                           pyfuse3.EntryAttributes]:
        info, attr = await super().create(parent_inode, name, mode, flags, ctx)
        self.fds[info.fh] = os.open(self.store / str(info.fh), os.O_WRONLY | os.O_CREAT, 0o644)
        return pyfuse3.FileInfo(fh=info.fh, direct_io=True), attr

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self.requests["write"] += 1
        done = os.pwrite(self.fds[fh], buf, off)
        self.sizes[fh] = max(self._size(fh), off + done)
        return done

    async def release(self, fh: int) -> None:
        await super().release(fh)
        os.close(self.fds.pop(fh))


def serve_memory(mountpoint: str, store: str | None) -> None:
    """The child: mount MemoryOps (StoreOps with a ``store``) until unmounted, then print
    its request counts."""
    ops = MemoryOps() if store is None else StoreOps(Path(store))
    options = mount_options(allow_other=False) - {"fsname=hyperfs", "subtype=hyperfs"}
    pyfuse3.init(ops, mountpoint, options | {"fsname=floor"})
    print("mounted", flush=True)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
    print(json.dumps(ops.requests), flush=True)


def timed_in_floor(cmd: str, mountpoint: Path,
                   store: Path | None = None) -> tuple[float, dict[str, int]]:
    """``cmd`` (which writes into ``mountpoint``) run in a fresh memory filesystem there
    (a store filesystem, with ``store``): seconds, and the requests it caused."""
    mountpoint.mkdir()
    serve = ["--serve", str(mountpoint)] + ([] if store is None else ["--store", str(store)])
    child = subprocess.Popen([sys.executable, __file__, *serve], stdout=subprocess.PIPE)
    assert child.stdout is not None
    try:
        if child.stdout.readline() != b"mounted\n":
            raise RuntimeError("the memory filesystem did not mount")
        seconds = timed(cmd)
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        out, _ = child.communicate(timeout=30)
    return seconds, json.loads(out)


def bench_small(work: Path, runs: int) -> None:
    """tar -x of small files: plain, memory filesystem, hyperfs (the module docstring)."""
    times: dict[str, list[float]] = {"plain": [], "memory": [], "hyperfs": []}
    tar = work / "small.tar"
    small_tar(tar, tree=False)
    requests: dict[str, int] = {}
    for run in range(runs):  # what is extracted stays: see bench_fs.bench_small
        plain = work / f"plain{run}"
        plain.mkdir()
        times["plain"].append(timed(f"{EXTRACT} {tar} -C {plain}"))
        memory = work / f"memory{run}"
        seconds, requests = timed_in_floor(f"{EXTRACT} {tar} -C {memory}", memory)
        times["memory"].append(seconds)
        with Mount(work / f"db{run}", work / f"mnt{run}") as mount:
            times["hyperfs"].append(timed(f"{EXTRACT} {tar} -C {mount.mnt}"))
    median = {key: statistics.median(values) for key, values in times.items()}
    per_file = sum(requests.values()) / SMALL_FILES
    print(f"tar -x of {SMALL_FILES} x 4 KiB, median of {runs} runs:")
    for key, values in times.items():
        print(f"  {key:8} {median[key]:7.3f} s  {SMALL_FILES / median[key]:8.0f} files/s  "
              f"({', '.join(f'{value:.3f}' for value in values)})")
    print(f"  FUSE requests per file (memory filesystem): {per_file:.2f} "
          f"({', '.join(f'{k} {v / SMALL_FILES:.2f}' for k, v in sorted(requests.items()))})")
    print(f"  memory filesystem: {median['memory'] / SMALL_FILES / per_file * 1e6:.0f} us "
          f"a request; {median['plain'] / median['memory']:.0%} of the plain folder's "
          "speed (the ceiling for a pyfuse3 filesystem here)")
    print(f"  hyperfs: {median['plain'] / median['hyperfs']:.0%} of the plain folder's "
          f"speed, {median['memory'] / median['hyperfs']:.0%} of the memory filesystem's")


def bench_big(work: Path, runs: int, mib: int) -> None:
    """cp of one big file: plain, store filesystem (alone and with SHA-256 beside it),
    hyperfs, and SHA-256 alone (the module docstring)."""
    source = work / "source.bin"
    with open(source, "wb") as out:
        for _ in range(mib):
            out.write(os.urandom(1 << 20))
    os.sync()
    timed(f"cat {source} > /dev/null")  # page-cached, as for every side
    sha = f"openssl dgst -sha256 {source} > /dev/null"
    times: dict[str, list[float]] = {
        "plain": [], "sha256": [], "store": [], "store+sha256": [], "hyperfs": []}
    for run in range(runs):
        plain = work / f"plain{run}"
        plain.mkdir()
        os.sync()
        times["plain"].append(timed(f"cp {source} {plain}/copy.bin"))
        shutil.rmtree(plain)
        os.sync()
        times["sha256"].append(timed(sha))
        for key, beside in (("store", ""), ("store+sha256", f"{sha} & ")):
            mountpoint, store = work / f"floor{run}{key}", work / f"data{run}{key}"
            store.mkdir()
            os.sync()
            cmd = f"{beside}cp {source} {mountpoint}/copy.bin; wait"
            times[key].append(timed_in_floor(cmd, mountpoint, store)[0])
            shutil.rmtree(store)
        os.sync()
        with Mount(work / f"db{run}", work / f"mnt{run}") as mount:
            times["hyperfs"].append(timed(f"cp {source} {mount.mnt}/copy.bin"))
        shutil.rmtree(work / f"db{run}")
    median = {key: statistics.median(values) for key, values in times.items()}
    slower = max(median["plain"], median["sha256"])
    print(f"cp of {mib} MiB, median of {runs} runs (MB/s; of the slower of plain and "
          "SHA-256; of the store filesystem with SHA-256 beside it):")
    for key, values in times.items():
        rate = mib * (1 << 20) / 1e6 / median[key]
        print(f"  {key:12} {rate:7.0f} MB/s  {slower / median[key]:5.0%}  "
              f"{median['store+sha256'] / median[key]:5.0%}  "
              f"({', '.join(f'{value:.2f}' for value in values)} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--big", type=int, metavar="MIB",
                        help="measure cp of one MIB file instead of tar -x of small ones")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_memory(args.serve, args.store)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench_floor.", dir=args.dir))
    try:
        if args.big:
            bench_big(work, args.runs, args.big)
        else:
            bench_small(work, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
