"""What every stress case shares: the result row, the run's sizes, and small bounded
helpers over :mod:`hyperfs.testing` (processes, mounts, feeds) that speak in the terms
of a case: seconds, checksums, fsck verdicts."""

from __future__ import annotations

import functools
import hashlib
import random
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import trio

from hyperfs.feeds.core import Core
from hyperfs.testing import mounts, network
from hyperfs.testing.mounts import Mounted, Mounts
from hyperfs.testing.network import HyperfsProcess, arun_hyperfs, run_hyperfs, store_feed
from hyperfs.testing.procs import memory

HOST = "127.0.0.1"
MiB = 1 << 20
BLOCK = 64 * 1024
"""Block size of the feeds a case stores unless it says otherwise (that of `cp` in)."""


@dataclass
class Result:
    """One row of the table."""

    case: str
    tried: int
    held: int
    figure: str
    notes: list[str] = field(default_factory=list)
    group: str = ""  # the case group that made it (set by the runner)

    @property
    def ok(self) -> bool:
        return self.tried > 0 and self.held == self.tried


def crashed(name: str, exc: BaseException) -> Result:
    """The row of a case group that raised instead of reporting: it did not hold."""
    return Result(f"{name}: crashed", 1, 0, f"{type(exc).__name__}: {exc}"[:300])


@dataclass
class Config:
    """Sizes of one run: --quick keeps every case but makes it small."""

    quick: bool
    attacks: int  # repetitions of each hostile-peer attack
    kills: int  # SIGKILL rounds
    fuzz_examples: int
    load_leechers: int
    load_bytes: int
    many_feeds: int
    readers: int
    reader_bytes: int
    handshake_timeout: float = 2.0
    message_timeout: float = 3.0
    request_timeout: float = 2.0
    vanish_timeout: float = 2.0
    vanish_reps: int = 1
    mounts: Mounts = field(default_factory=lambda: Mounts(Path("/nonexistent")))
    """Every FUSE mount of the run, unmounted at its end whatever happened (the runner
    gives it the work directory)."""

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(True, attacks=3, kills=4, fuzz_examples=600, load_leechers=10,
                       load_bytes=8 * MiB, many_feeds=1000, readers=16, reader_bytes=2 * MiB)
        return cls(False, attacks=20, kills=100, fuzz_examples=10000, load_leechers=50,
                   load_bytes=256 * MiB, many_feeds=10_000, readers=16,
                   reader_bytes=32 * MiB, vanish_timeout=10.0, vanish_reps=3)


# ----------------------------------------------------------------------- processes


class Sampler:
    """Peak RssAnon of a process, sampled every 50 ms while ``run`` runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = memory(pid).get("RssAnon", 0)

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, memory(self.pid).get("RssAnon", 0))
            await trio.sleep(0.05)


async def serve(db: Path, *extra: object) -> tuple[HyperfsProcess, int]:
    """``hyperfs serve`` of ``db`` on an ephemeral loopback port, once it listens."""
    words = [str(word) for word in extra]
    return await trio.to_thread.run_sync(functools.partial(network.start_serve, db, *words))


async def mount(into: Mounts, db: Path, mnt: Path, *extra: object) -> Mounted:
    """``hyperfs mount`` (peers from --peer only), once it says it is mounted."""
    words = [str(word) for word in extra]
    return await trio.to_thread.run_sync(functools.partial(into.start, db, mnt, *words))


async def stop(proc: HyperfsProcess | Mounted, sig: int | None = None) -> int:
    """Stop a serving or mounted hyperfs (Ctrl-C unless ``sig``) and wait for its end."""
    return await trio.to_thread.run_sync(proc.stop, *(() if sig is None else (sig,)))


async def hyperfs(*args: object, timeout: float = 120,
                  stdout: int | IO[bytes] = subprocess.PIPE
                  ) -> subprocess.CompletedProcess[bytes]:
    """A ``hyperfs`` command to its end (cat and serve with discovery off)."""
    return await arun_hyperfs(*args, timeout=timeout, stdout=stdout)


async def command(*cmd: str | Path, check: bool = False, timeout: float = 120
                  ) -> subprocess.CompletedProcess[bytes]:
    """Any other command (cp, cat, ls, mount ...) to its end, in a worker thread."""
    return await trio.to_thread.run_sync(
        functools.partial(mounts.run, *cmd, check=check, timeout=timeout))


def fsck(db: Path) -> tuple[bool, str]:
    """``hyperfs fsck`` of a (closed) database: (passed, its last line)."""
    result = run_hyperfs("--db", db, "fsck", timeout=300)
    lines = result.stdout.decode(errors="replace").strip().splitlines()
    if result.returncode == 0:
        return True, lines[-1]
    return False, " / ".join(lines[-5:]) if lines else result.stderr.decode()[-300:]


async def afsck(db: Path) -> tuple[bool, str]:
    return await trio.to_thread.run_sync(fsck, db)


def ls_feeds(db: Path) -> list[tuple[str, int | None, int]]:
    """``hyperfs ls``: (id, blocks or None, local) per stored feed."""
    result = run_hyperfs("--db", db, "ls")
    if result.returncode != 0:
        raise RuntimeError(f"hyperfs ls: {result.stderr.decode(errors='replace')}")
    feeds = []
    for line in result.stdout.decode().splitlines():
        words = line.split()
        feeds.append((words[0], None if words[1] == "?" else int(words[1]), int(words[3])))
    return feeds


async def als_feeds(db: Path) -> list[tuple[str, int | None, int]]:
    return await trio.to_thread.run_sync(ls_feeds, db)


# ----------------------------------------------------------------------- data


def make_data(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(rng.randbytes(min(16 * MiB, size - at)) for at in range(0, size, 16 * MiB))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def blocks_of(data: bytes, block_size: int = BLOCK) -> list[bytes]:
    return [data[i:i + block_size] for i in range(0, len(data), block_size)]


async def store(db: Path | Core, data: bytes, block_size: int = BLOCK) -> bytes:
    """``data`` as a new feed of ``block_size`` blocks; returns its id."""
    return await store_feed(db, blocks_of(data, block_size))
