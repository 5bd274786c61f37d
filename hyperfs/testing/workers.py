"""Finding and waiting for the hash worker processes (:mod:`hyperfs.feeds.hashworker`)
that an add or an upload started, for tests that kill them or check none is left."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from hyperfs.feeds import hashworker
from hyperfs.testing.procs import has_ended, pids_mentioning


def hash_workers(under: str | os.PathLike[str]) -> list[int]:
    """The pids of the hash workers hashing a file under ``under`` (a test's own
    temporary directory: exactly the workers that test's adds started)."""
    mine = set(pids_mentioning(hashworker.__file__))
    return [pid for pid in pids_mentioning(str(under)) if pid in mine and not has_ended(pid)]


def wait_ended(pids: Iterable[int], timeout: float) -> None:
    """Wait until every process of ``pids`` has exited (on pidfds: no polling);
    AssertionError naming those still running after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            while not has_ended(pid):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"process {pid} still runs after {timeout} s")
                select.select([pidfd], [], [], left)
        finally:
            os.close(pidfd)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Check ``condition`` every 10 ms until it holds (state another process makes,
    with nothing to wait on); AssertionError saying ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.01)


def data_files(db: Path) -> list[Path]:
    """The data files of the database at ``db`` (none if it has no data directory)."""
    data = db / "data"
    return sorted(data.iterdir()) if data.is_dir() else []
