"""A mount's life: reads that wait forever (--timeout 0), signals that unmount it, and the
errors that refuse to mount (docs/FILESYSTEM.md, "Waiting" and "Lifecycle").

Real ``hyperfs mount`` processes; readers are separate processes calling read(2) through
ctypes, so the errno the filesystem answers is seen as is (Python itself retries EINTR).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hyperfs.testing.mounts import HYPERFS, Mounted, Mounts, run
from hyperfs.testing.requirements import FUSE, fuse_available, require

require(fuse_available(), FUSE)

READER = r"""
import ctypes, errno, os, signal, sys
signal.signal(signal.SIGINT, lambda *_: None)  # survive Ctrl-C, to report read's errno
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY)
print("open", flush=True)
buf = ctypes.create_string_buffer(1 << 16)
got = libc.read(fd, buf, len(buf))
print(errno.errorcode[ctypes.get_errno()] if got < 0 else buf.raw[:got].hex(), flush=True)
"""
STILL = 3.0
"""How long a --timeout 0 read must go on waiting: three times what --timeout 1 takes to
fail (tests/test_fs.py::test_missing_block_times_out), so any finite short wait shows."""


class Reader:
    """A process blocked in read(2) of a missing block, until the filesystem answers."""

    def __init__(self, m: Mounted, feed_id: str, index: int) -> None:
        self.m, self.feed_id = m, feed_id
        self.proc = subprocess.Popen([sys.executable, "-c", READER,
                                      str(m.mnt / feed_id / str(index))],
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"open\n"
        deadline = time.monotonic() + 20  # bounds a broken mount, not the wait itself
        while self.waiting() == 0:
            assert self.proc.poll() is None, "the read ended instead of waiting"
            assert time.monotonic() < deadline, "the read never showed in .status"
            time.sleep(0.02)  # polling the filesystem's own count, not standing in for it

    def waiting(self) -> int:
        status = json.loads((self.m.mnt / ".status").read_bytes())
        return sum(f["waiting"] for f in status["feeds"] if f["id"] == self.feed_id)

    def result(self) -> bytes:
        """What read(2) ended with: an errno name, or the bytes in hex."""
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        assert self.proc.wait(10) == 0
        self.proc.stdout.close()
        return out

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_timeout_zero_waits_until_the_reader_gives_up(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start(None, None, "--timeout", "0")
    feed_id = secrets.token_hex(32)
    reader = Reader(m, feed_id, 0)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            reader.proc.wait(STILL)
        assert reader.waiting() == 1
        reader.proc.send_signal(signal.SIGINT)
        assert reader.result() == b"EINTR\n"
    finally:
        reader.end()
    assert reader.waiting() == 0  # the want was withdrawn
    (tmp_path / "after").write_bytes(b"still mounted")
    run("cp", tmp_path / "after", m.mnt)
    assert (m.mnt / "after").read_bytes() == b"still mounted"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_unmounts_even_while_a_read_waits(mounts: Mounts, tmp_path: Path,
                                                 sig: signal.Signals) -> None:
    data = secrets.token_bytes(100_000)
    (tmp_path / "kept").write_bytes(data)
    m = mounts.start()
    run("cp", tmp_path / "kept", m.mnt)
    reader = Reader(m, secrets.token_hex(32), 0)
    try:
        assert m.stop(sig) == 0
        assert reader.result() == b"ECONNABORTED\n"  # the kernel's answer once we are gone
    finally:
        reader.end()
    assert m.proc.stdout is not None
    assert m.proc.stdout.read() == f"hyperfs: unmounted {m.mnt}\n".encode()
    assert not os.path.ismount(m.mnt)
    assert os.fsencode(m.mnt) not in Path("/proc/self/mounts").read_bytes()
    again = mounts.start(m.db, m.mnt)
    assert (again.mnt / "kept").read_bytes() == data


def _refused(db: Path, mnt: Path) -> str:
    """``hyperfs mount`` must exit 1 with one line on stderr and nothing mounted: that line."""
    result = run(HYPERFS, "--db", db, "mount", mnt, "--no-dht", "--no-mdns", check=False)
    assert result.returncode == 1 and result.stdout == b"", result
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_mount_point_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    line = _refused(tmp_path / "db", tmp_path / "file")
    assert line == f"hyperfs: mount point {tmp_path / 'file'} is not a directory"


def test_mount_point_with_a_foreign_mount(tmp_path: Path) -> None:
    point = tmp_path / "tmpfs"
    point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(point)]).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        line = _refused(tmp_path / "db", point)
        assert line == f"hyperfs: something (tmpfs) is already mounted at {point}"
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_fuse_missing(tmp_path: Path) -> None:
    """/dev/fuse is hidden by an empty /dev in a mount namespace of the command's own."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -m (a private mount namespace) needs root")
    (tmp_path / "mnt").mkdir()
    script = 'mount -t tmpfs none /dev && exec "$@"'
    result = run("unshare", "-m", "sh", "-c", script, "sh", HYPERFS, "--db", tmp_path / "db",
                 "mount", tmp_path / "mnt", "--no-dht", "--no-mdns", check=False)
    assert (result.returncode, result.stdout) == (1, b"")
    assert result.stderr.decode() == (
        "hyperfs: FUSE is unavailable: /dev/fuse is missing (load the fuse module, or give "
        "the container --device /dev/fuse)\n")


def test_database_held_by_another_process(mounts: Mounts, tmp_path: Path) -> None:
    holder = mounts.start()
    other = tmp_path / "other"
    other.mkdir()
    line = _refused(holder.db, other)
    prefix = (f"hyperfs: database {holder.db} is in use by another process "
              f"(pid {holder.proc.pid}: ")
    assert line.startswith(prefix) and line.endswith("; close it first"), line
    assert f" mount {holder.mnt} " in line  # the holder's command line
    assert not os.path.ismount(other) and os.listdir(other) == []
