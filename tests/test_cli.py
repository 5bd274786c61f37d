"""The README's commands as a user runs them: `add -`, `rm`, `fsck --repair` and `status`.

Real ``hyperfs`` processes over real databases; damage is done to a block's bytes in its
data file while nothing runs (hyperfs.testing.damage).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hyperfs.cli.status import default_status_file
from hyperfs.replication.secure import NODE_KEY_FILE
from hyperfs.testing.damage import damage_block
from hyperfs.testing.mounts import HYPERFS, Mounts, run
from hyperfs.testing.network import HyperfsProcess, start_serve

STATUS_WAIT = 20.0
"""Bound on waiting for a node's status file to show something (it is rewritten every
2 s): a broken node fails within it, a loaded machine has ample room."""
LOCAL = ("--no-dht", "--no-mdns")
"""Peers by address only: tests stay on this machine (HYPERFS_LOCAL_ONLY insists)."""


def _add(db: Path, *args: str | Path, stdin: bytes | None = None) -> str:
    return run(HYPERFS, "--db", db, "add", *args, input=stdin).stdout.decode().strip()


def test_add_from_standard_input(tmp_path: Path) -> None:
    data = secrets.token_bytes(100_037)
    (tmp_path / "file").write_bytes(data)
    piped = _add(tmp_path / "db", "-", "--block-size", "1000", stdin=data)
    assert piped == _add(tmp_path / "other", tmp_path / "file", "--block-size", "1000")
    assert piped == _add(tmp_path / "synced", tmp_path / "file", "--block-size", "1000",
                         "--fsync")
    assert run(HYPERFS, "--db", tmp_path / "db", "cat", piped, *LOCAL).stdout == data
    empty = run(HYPERFS, "--db", tmp_path / "empty", "add", "-", input=b"", check=False)
    assert (empty.returncode, empty.stdout) == (1, b"")
    assert empty.stderr == b"hyperfs: cannot finalize a feed with no blocks\n"
    assert run(HYPERFS, "--db", tmp_path / "empty", "ls").stdout == b""


def test_rm_deletes_feeds_and_their_names(mounts: Mounts, tmp_path: Path) -> None:
    """`hyperfs rm ID...`: the feeds and their names go; an id not stored is reported and
    the others still go (rm(1)'s rule); a bad id deletes nothing; a running mount holds
    the database: refused with one line."""
    m = mounts.start()
    (m.mnt / "kept").write_bytes(b"kept")
    (m.mnt / "named").write_bytes(b"named")
    kept, named = (run(HYPERFS, "id", m.mnt / name).stdout.decode().strip()
                   for name in ("kept", "named"))
    busy = run(HYPERFS, "--db", m.db, "rm", named, check=False)
    assert busy.returncode == 1 and b"in use by another process" in busy.stderr
    assert m.stop() == 0
    bad = run(HYPERFS, "--db", m.db, "rm", named, "zz", check=False)
    assert bad.returncode == 1 and b"not 'zz'" in bad.stderr
    absent = "ab" * 32
    gone = run(HYPERFS, "--db", m.db, "rm", absent, named, check=False)
    assert gone.returncode == 1
    assert gone.stderr.decode() == f"hyperfs rm: no feed {absent} in {m.db}\n"
    listed = run(HYPERFS, "--db", m.db, "ls").stdout.decode().split()
    assert kept in listed and named not in listed
    again = mounts.start(m.db)
    assert sorted(os.listdir(again.mnt)) == sorted([".status", "kept", kept])


def test_fsck_repair_from_the_command_line(tmp_path: Path) -> None:
    db = tmp_path / "db"
    data = secrets.token_bytes(10_500)
    feed_id = _add(db, "-", "--block-size", "1000", stdin=data)
    shutil.copytree(db, tmp_path / "seed")  # an undamaged copy, to fetch from
    # a real block, in the wrong place
    damage_block(db, bytes.fromhex(feed_id), 3, lambda _old: data[4000:5000])

    def fsck(*args: str) -> tuple[int, str]:
        result = run(HYPERFS, "--db", db, "fsck", *args, check=False)
        return result.returncode, result.stdout.decode()

    assert fsck() == (1, f"hyperfs fsck: feed {feed_id[:16]}: block 3 does not match its "
                         "crc32c\n1 feeds, 11 blocks: 1 problem(s)\n")
    assert fsck("--repair") == (0, "1 feeds, 11 blocks: ok, 1 repaired (damaged blocks marked "
                                   "missing, orphan files deleted)\n")
    assert fsck() == (0, "1 feeds, 10 blocks: ok\n")
    # Marked missing, the block is fetched again from a peer that has it.
    seeder, port = start_serve(tmp_path / "seed")
    with seeder:
        fetched = run(HYPERFS, "--db", db, "cat", feed_id, "--peer", f"127.0.0.1:{port}",
                      *LOCAL, "--timeout", "30")
    assert fetched.stdout == data
    assert fsck() == (0, "1 feeds, 11 blocks: ok\n")


def _status_when(db: Path, ready: Callable[[dict[str, Any]], bool]) -> None:
    """Wait (polling, bounded) until the status file of the node running on ``db`` shows
    ``ready(status)``; the node rewrites it every 2 s, whole (an atomic rename)."""
    path = default_status_file(db)
    deadline = time.monotonic() + STATUS_WAIT
    while not (path.exists() and ready(json.loads(path.read_bytes()))):
        assert time.monotonic() < deadline, f"{path} never showed what was wanted"
        time.sleep(0.05)  # polling a condition, not standing in for it


def _status(db: Path) -> tuple[str, dict[str, Any]]:
    """`hyperfs status` and `hyperfs status --json` of the node running on ``db``."""
    text = run(HYPERFS, "--db", db, "status").stdout.decode()
    return text, json.loads(run(HYPERFS, "--db", db, "status", "--json").stdout)


def _no_node(db: Path) -> None:
    result = run(HYPERFS, "--db", db, "status", check=False)
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode() == (
        f"hyperfs: no node is running on {db} (no live {default_status_file(db)})\n")


def test_status_of_a_running_mount(mounts: Mounts) -> None:
    m = mounts.start(None, None, "--listen", "127.0.0.1:0")
    _status_when(m.db, lambda status: True)
    text, status = _status(m.db)
    assert text == f"pid {m.proc.pid}, listening on {m.address}, 0 peers\ndiscovery: off\n"
    assert (status["pid"], status["listening"], status["peers"]) == (m.proc.pid, m.address, [])
    assert m.stop() == 0
    _no_node(m.db)


def test_status_of_a_running_cat(tmp_path: Path) -> None:
    """A cat waiting for a feed its peer does not have shows that peer and that feed."""
    serve, port = start_serve(tmp_path / "serve")
    feed_id = secrets.token_hex(32)
    db = tmp_path / "db"
    with serve, HyperfsProcess(["--db", str(db), "cat", feed_id, "--peer", f"127.0.0.1:{port}",
                                "--timeout", "60"]) as cat:
        _status_when(db, lambda status: [f["peers"] for f in status["feeds"]] == [1])
        text, status = _status(db)
        # The peer is a hyperfs node: encrypted, authenticated by its database's node key.
        serve_key = (tmp_path / "serve" / NODE_KEY_FILE).read_bytes()[32:].hex()
        assert text == (f"pid {cat.pid}, listening on nothing, 1 peers\n"
                        f"  peer 127.0.0.1:{port}: encrypted, node key {serve_key}\n"
                        "discovery: off\n")
        assert (status["pid"], status["listening"]) == (cat.pid, None)
        assert [peer["address"] for peer in status["peers"]] == [f"127.0.0.1:{port}"]
        assert [(peer["encrypted"], peer["node_key"]) for peer in status["peers"]] == [
            (True, serve_key)]
        assert status["node_key"] == (db / NODE_KEY_FILE).read_bytes()[32:].hex()
        assert status["feeds"] == [{"id": feed_id, "blocks": None, "local": 0, "peers": 1,
                                    "inflight": 0, "private": False}]
    _no_node(db)
