"""A big file copied into the mount takes the data-file path (hyperfs.feeds.filestream):
its bytes written straight to the feed's data file, hashed by a worker process. The feed
must be the one `hyperfs add` makes of the same bytes; a fsync half way, an upload given
up and an unmount during a copy must leave no worker and no half feed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from pathlib import Path

import pytest

from hyperfs.feeds.ingest import MIN_BYTES
from hyperfs.testing.mounts import HYPERFS, Mounts, run
from hyperfs.testing.workers import hash_workers, wait_ended

SIZE = MIN_BYTES + 5 * 65536 + 4321  # past the switch, with a partial last block


def test_a_big_cp_is_the_feed_hyperfs_add_makes(mounts: Mounts, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(secrets.token_bytes(SIZE))
    added = run(HYPERFS, "--db", tmp_path / "added", "add", source).stdout.decode().strip()
    m = mounts.start()
    run("cp", source, m.mnt)
    assert os.getxattr(m.mnt / "big.bin", "user.hyperfs.id").decode() == added
    run("cmp", source, m.mnt / "big.bin")
    run("cmp", source, m.mnt / added / ".feed")
    # fsync half way: what is written goes to the index, the rest follows
    data = source.read_bytes()
    with open(m.mnt / "synced.bin", "wb") as out:
        out.write(data[: MIN_BYTES + 3 * 65536 + 100])
        out.flush()
        os.fsync(out.fileno())
        out.write(data[MIN_BYTES + 3 * 65536 + 100 :])
    assert os.getxattr(m.mnt / "synced.bin", "user.hyperfs.id").decode() == added
    assert hash_workers(tmp_path) == []
    assert m.stop() == 0
    assert run(HYPERFS, "--db", m.db, "fsck").returncode == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_unmount_or_kill_during_a_big_copy_leaves_no_worker_and_no_feed(
        mounts: Mounts, tmp_path: Path, sig: int) -> None:
    m = mounts.start()
    out = open(m.mnt / "partial.bin", "wb")  # noqa: SIM115  (left open across the end)
    out.write(secrets.token_bytes(MIN_BYTES + 65536))
    out.flush()
    os.fsync(out.fileno())  # every byte at the mount (past the switch), the worker alive
    workers = hash_workers(tmp_path)
    assert len(workers) == 1
    assert m.stop(sig) == (0 if sig == signal.SIGINT else -signal.SIGKILL)
    wait_ended(workers, timeout=10)
    with contextlib.suppress(OSError):  # the mount is gone
        out.close()
    if sig == signal.SIGKILL:
        mounts.cleanup()  # the dead mount's mount point
    assert run(HYPERFS, "--db", m.db, "ls").stdout == b""
    assert run(HYPERFS, "--db", m.db, "fsck").returncode == 0
