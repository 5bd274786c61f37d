"""Disks for tests and benchmarks: a small tmpfs of the test's own (a full disk), and
how much block data a database holds on disk (a capped cache)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from hyperfs.testing.requirements import missing


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (made if need be; mounting needs root:
    skipped elsewhere, failed in CI), unmounted at the end."""
    path.mkdir(exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, check=False)
    if result.returncode != 0:
        missing(f"a tmpfs mount (root): {result.stderr.decode().strip()}")
    try:
        yield path
    finally:
        # Lazily if still busy (a test that failed with a mount's files open on it).
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to its last byte with one file (returned: unlink it to free it)."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as file:
        while True:
            file.write(bytes(4096))
    return filler


def data_bytes(db: Path) -> int:
    """Disk the block data of the database ``db`` takes (``st_blocks``: holes take none)."""
    directory = db / "data"
    if not directory.exists():
        return 0
    total = 0
    for entry in os.scandir(directory):
        with contextlib.suppress(FileNotFoundError):  # a feed deleted meanwhile
            total += entry.stat().st_blocks * 512
    return total


def resident(path: Path) -> int:
    """Bytes of the file at ``path`` that the page cache holds (util-linux's ``fincore``;
    a test without it is skipped)."""
    try:
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES",
                              str(path)], capture_output=True, text=True, check=True).stdout
    except FileNotFoundError:
        missing("util-linux's fincore")
    return int(out.strip())


class DataPeak:
    """The most block data ``db`` held while the ``with`` ran, sampled every 20 ms in a
    thread (for benchmarks of a capped cache: it bounds the disk used, not just the end)."""

    def __init__(self, db: Path, interval: float = 0.02) -> None:
        self.db, self.interval, self.peak = db, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, data_bytes(self.db))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> DataPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, data_bytes(self.db))
