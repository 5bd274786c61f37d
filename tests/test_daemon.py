"""A mount's lifecycle outside a terminal: `mount --daemon`, `umount`, systemd's notify.

Real `hyperfs` processes and real FUSE mounts. A daemon outlives the command that started
it, so the fixture finds it by its arguments (which name the test's own temporary
directory), after unmounting every mount point, and ends it by PID.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hyperfs.testing.mounts import HYPERFS, Mounts, run
from hyperfs.testing.procs import end_pid, has_ended, pids_mentioning
from hyperfs.testing.requirements import FUSE, fuse_available, require

require(fuse_available(), FUSE)

LOCAL = ("--no-dht", "--no-mdns")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own XDG state directory, where its mounts keep their logs and pid files
    (every hyperfs the test starts inherits it)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "hyperfs"


@pytest.fixture
def mounts(tmp_path: Path, state: Path) -> Iterator[Mounts]:
    started = Mounts(tmp_path)
    try:
        yield started
    finally:
        started.cleanup()
        for pid in pids_mentioning(str(tmp_path)):
            end_pid(pid)


def _daemon(mounts: Mounts, db: Path, mnt: Path) -> tuple[int, Path]:
    """`hyperfs mount --daemon`, which must succeed: the daemon's pid and its log."""
    mounts.points.add(mnt)
    result = run(HYPERFS, "--db", db, "mount", "--daemon", mnt, *LOCAL)
    said = re.fullmatch(rb"hyperfs: mounted at (.+) \(pid (\d+)\); log: (.+)\n", result.stdout)
    assert said is not None and said[1] == os.fsencode(mnt), result.stdout
    return int(said[2]), Path(os.fsdecode(said[3]))


def _mountinfo(mnt: Path) -> tuple[str, str] | None:
    """(type, source) of the mount at ``mnt``, read straight from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo", "rb") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            if fields[4] == os.fsencode(mnt):
                after = fields[fields.index(b"-") + 1:]
                return after[0].decode(), after[1].decode()
    return None


def _fails(*args: str | Path) -> str:
    """Run a hyperfs command that must fail with exit status 1 and one line on stderr."""
    result = run(HYPERFS, *args, check=False)
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result
    assert lines[0].startswith("hyperfs: ") and result.stdout == b"", result
    return lines[0]


def test_daemon_mounts_serves_and_umount_waits_for_it(mounts: Mounts, tmp_path: Path,
                                                      state: Path) -> None:
    db, mnt = tmp_path / "db", tmp_path / "mnt"
    mnt.mkdir()
    source = tmp_path / "photo.jpg"
    source.write_bytes(secrets.token_bytes(300_000))
    pid, log = _daemon(mounts, db, mnt)
    # Ready when the command returns: mounted, by a process in its own session, logging
    # to one file per mount point under the state directory.
    assert os.path.ismount(mnt) and not has_ended(pid) and os.getsid(pid) == pid
    assert log.parent == state and log.name.startswith("mnt-") and log.suffix == ".log"
    assert _mountinfo(mnt) == ("fuse.hyperfs", "hyperfs")
    assert run("df", "--output=source,fstype", mnt).stdout.split()[-2:] == [
        b"hyperfs", b"fuse.hyperfs"]
    run("cp", source, mnt)
    run("cmp", source, mnt / "photo.jpg")
    feed_id = run(HYPERFS, "id", mnt / "photo.jpg").stdout.strip()
    status = json.loads(run(HYPERFS, "--db", db, "status", "--json").stdout)
    assert status["pid"] == pid
    assert log.with_suffix(".pid").read_text().split()[0] == str(pid)

    assert run(HYPERFS, "umount", mnt).stdout == b""
    assert has_ended(pid) and _mountinfo(mnt) is None  # gone when umount returned
    assert not log.with_suffix(".pid").exists()
    assert f"hyperfs: unmounted {mnt}" in log.read_text()
    assert feed_id in run(HYPERFS, "--db", db, "ls").stdout  # the database is free again

    again, same_log = _daemon(mounts, db, mnt)  # the same mount point: the same log
    assert same_log == log and log.read_text().count("\n--- ") == 1
    run("cmp", source, mnt / "photo.jpg")
    run(HYPERFS, "umount", mnt)
    assert has_ended(again)


def test_daemon_that_cannot_mount_fails_fast_and_leaves_nothing(
        mounts: Mounts, tmp_path: Path, state: Path) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "file").write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    holder = mounts.start(tmp_path / "held")  # holds the lock of its database
    for db, mnt, error in [(tmp_path / "db", full, "is not empty"),
                           (tmp_path / "db", tmp_path / "nope", "does not exist"),
                           (holder.db, empty, "is in use by another process")]:
        started = time.monotonic()
        line = _fails("--db", db, "mount", "--daemon", mnt, *LOCAL)
        # Ended by the child's error, not by the parent's 60 s wait for readiness.
        assert time.monotonic() - started < 30
        assert error in line
        assert _mountinfo(mnt) is None
        assert pids_mentioning(str(mnt)) == []  # the child has ended too
        (log,) = state.glob(f"{mnt.name}-*.log")
        assert line in log.read_text()
    assert os.path.ismount(holder.mnt)


def test_umount_errors_say_what_to_do(mounts: Mounts, tmp_path: Path, state: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert _fails("umount", plain) == f"hyperfs: {plain} is not mounted"
    assert _fails("umount", "/proc") == "hyperfs: /proc is not a hyperfs mount (it is proc)"

    m = mounts.start()
    held = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        busy = _fails("umount", m.mnt)
        assert "busy" in busy and f"fusermount3 -uz {m.mnt}" in busy
        assert os.path.ismount(m.mnt) and m.proc.poll() is None
    finally:
        os.close(held)
    run(HYPERFS, "umount", m.mnt)
    # A foreground mount is waited for too: it has exited (not reaped yet) on return.
    assert os.waitid(os.P_PID, m.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    assert m.proc.wait() == 0
    assert _fails("umount", m.mnt) == f"hyperfs: {m.mnt} is not mounted"

    stale = mounts.start()  # killed: "Transport endpoint is not connected"
    stale.proc.kill()
    stale.proc.wait(5)
    run(HYPERFS, "umount", stale.mnt)
    assert _mountinfo(stale.mnt) is None and os.listdir(stale.mnt) == []


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_systemd_notify_ready_and_stopping(mounts: Mounts, tmp_path: Path, state: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           abstract: bool) -> None:
    name = f"hyperfs-test-{os.getpid()}-{secrets.token_hex(4)}"
    address = f"\0{name}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        systemd.bind(address)
        systemd.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}" if abstract else address)
        m = mounts.start(expect_ready=False)  # in the foreground, as the unit runs it
        assert systemd.recv(4096) == b"READY=1"
        assert _mountinfo(m.mnt) == ("fuse.hyperfs", "hyperfs")  # ready means mounted
        run(HYPERFS, "umount", m.mnt)
        assert systemd.recv(4096) == b"STOPPING=1"
        assert m.proc.wait(10) == 0
