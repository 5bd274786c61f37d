"""The FUSE filesystem through real mounts, real hyperfs processes and real tools.

Every test mounts with ``hyperfs --db DB mount MNT`` in a temporary directory and talks
to it with cp, cat, cmp, getfattr, ls or a Python reader subprocess; the ``mounts``
fixture always unmounts and ends the processes it started (by PID).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from hyperfs.testing.mounts import HYPERFS, Mounts, feed_dirs, run
from hyperfs.testing.requirements import FUSE, fuse_available, require

require(fuse_available(), FUSE)

BLOCK = 64 * 1024


def _data(tmp_path: Path, size: int, name: str = "photo.jpg") -> Path:
    path = tmp_path / name
    path.write_bytes(secrets.token_bytes(size))
    return path


def _errno(fn: Callable[..., object], *args: object) -> int:
    try:
        fn(*args)
    except OSError as exc:
        assert exc.errno is not None, exc
        return exc.errno
    raise AssertionError(f"{fn}{args} did not fail")


def test_cp_in_then_read_back_every_way(mounts: Mounts, tmp_path: Path) -> None:
    source = _data(tmp_path, 5 * BLOCK + 12345)
    m = mounts.start()
    run("cp", source, m.mnt)
    named = m.mnt / "photo.jpg"
    run("cmp", source, named)
    feed_id = run("getfattr", "--only-values", "-n", "user.hyperfs.id", named).stdout.decode()
    assert run(HYPERFS, "id", named).stdout.decode().strip() == feed_id
    assert feed_dirs(m.mnt) == [feed_id]
    feed_dir = m.mnt / feed_id
    run("cmp", source, feed_dir / ".feed")
    assert run("ls", "-v", feed_dir).stdout.decode().split() == [str(i) for i in range(6)]
    blocks = b"".join(run("cat", feed_dir / str(i)).stdout for i in range(6))
    assert blocks == source.read_bytes()
    assert os.stat(named).st_size == os.stat(source).st_size
    assert os.stat(feed_dir / "5").st_size == 12345
    assert os.getxattr(feed_dir, "user.hyperfs.blocks") == b"6"
    assert os.getxattr(named, "user.hyperfs.local") == b"6"
    status = json.loads((m.mnt / ".status").read_bytes())
    assert status["feeds"][0]["id"] == feed_id and status["feeds"][0]["local"] == 6
    # A shell redirect opens, dups and closes before writing: still one whole feed.
    run("sh", "-c", f"cat {source} > {m.mnt}/redirected")
    run("cmp", source, m.mnt / "redirected")
    # The same id as `hyperfs add` of the same file (in another database).
    added = run(HYPERFS, "--db", tmp_path / "other", "add", source).stdout.decode().strip()
    assert added == feed_id


def test_names_persist_across_remounts(mounts: Mounts, tmp_path: Path) -> None:
    source = _data(tmp_path, 3 * BLOCK, "odd \xe9 name.bin")
    db = tmp_path / "db"
    m = mounts.start(db)
    run("cp", source, m.mnt)
    assert m.stop() == 0
    assert not os.path.ismount(m.mnt)
    again = mounts.start(db, m.mnt)
    run("cmp", source, again.mnt / source.name)


def test_read_only_everywhere_else(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start()
    run("cp", _data(tmp_path, 1000), m.mnt)
    feed_dir = m.mnt / feed_dirs(m.mnt)[0]
    block = feed_dir / "0"
    assert _errno(os.open, block, os.O_WRONLY) == errno.EROFS
    original = (m.mnt / "photo.jpg").read_bytes()
    fd = os.open(m.mnt / "photo.jpg", os.O_RDWR)  # (since issue 10: GIO opens so)
    try:
        os.write(fd, b"x")  # a copy on write: the name gets a new feed at close,
    finally:
        os.close(fd)
    assert (feed_dir / ".feed").read_bytes() == original  # a feed's bytes stay as they are
    assert (m.mnt / "photo.jpg").read_bytes() == b"x" + original[1:]
    assert _errno(os.open, m.mnt / "photo.jpg", os.O_WRONLY | os.O_APPEND) == errno.EROFS
    assert _errno(os.truncate, block, 0) == errno.EROFS
    assert _errno(os.truncate, m.mnt / "photo.jpg", 10) == errno.EROFS  # not in place
    assert _errno(os.mkdir, feed_dir / "dir") == errno.EPERM
    assert _errno(os.rename, feed_dir, m.mnt / "other") == errno.EPERM
    assert _errno(os.rename, feed_dir / "0", m.mnt / "other") == errno.EPERM
    assert _errno(os.rename, m.mnt / "photo.jpg", feed_dir / "x") == errno.EPERM
    assert _errno(os.open, feed_dir / "new", os.O_WRONLY | os.O_CREAT) == errno.EPERM
    assert _errno(os.symlink, "x", feed_dir / "link") == errno.EPERM  # (names may have them)
    assert _errno(os.setxattr, block, "user.x", b"1") == errno.ENOTSUP
    # Names are local labels: (since issue 10) they can be made, moved and replaced.
    os.mkdir(m.mnt / "dir")
    os.rename(m.mnt / "photo.jpg", m.mnt / "dir" / "other")
    os.rename(m.mnt / "dir" / "other", m.mnt / "photo.jpg")
    replacement = _data(tmp_path, 10, "replacement")
    run("cp", replacement, m.mnt / "photo.jpg")
    run("cmp", replacement, m.mnt / "photo.jpg")
    excl = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    assert _errno(os.open, m.mnt / "photo.jpg", excl) == errno.EEXIST
    assert _errno(os.open, m.mnt / ".status", excl) == errno.EEXIST
    assert _errno(os.open, m.mnt / ("ab" * 32), excl) == errno.EEXIST


def test_bad_names_fail_fast(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start()
    run("cp", _data(tmp_path, 2 * BLOCK), m.mnt)
    feed_dir = m.mnt / feed_dirs(m.mnt)[0]
    for name in ["zz", "ab" * 31, "ab" * 33, "AB" * 32, "g" * 64, "..." , "a/../b"]:
        assert _errno(os.stat, m.mnt / name) == errno.ENOENT, name
    for name in ["2", "01", "-1", "1.0", "10" * 15, str(2**64), "9" * 40, ".", "x"]:
        if name == ".":
            continue
        assert _errno(os.stat, feed_dir / name) == errno.ENOENT, name
    assert _errno(os.stat, m.mnt / ("n" * 300)) == errno.ENOENT
    assert _errno(os.stat, m.mnt / ("n" * 5000)) == errno.ENAMETOOLONG
    assert _errno(os.open, m.mnt / ("n" * 300), os.O_WRONLY | os.O_CREAT) == errno.ENAMETOOLONG
    assert _errno(os.stat, m.mnt / "photo.jpg" / "0") == errno.ENOTDIR
    odd = os.fsencode(m.mnt) + b"/\xff\xfe odd"
    with open(odd, "wb") as out:
        out.write(b"odd bytes")
    with open(odd, "rb") as back:
        assert back.read() == b"odd bytes"
    assert os.path.ismount(m.mnt) and m.proc.poll() is None


def test_an_empty_file_is_a_name_bound_to_no_feed(mounts: Mounts, tmp_path: Path) -> None:
    """(Until issue 10 an empty copy failed with ENODATA: a feed cannot be empty.)"""
    m = mounts.start()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    run("cp", empty, m.mnt)
    assert os.listdir(m.mnt) == [".status", "empty"]  # no feed was made
    assert (m.mnt / "empty").read_bytes() == b""
    assert os.listxattr(m.mnt / "empty") == ["user.hyperfs.empty"]
    assert _errno(os.getxattr, m.mnt / "empty", "user.hyperfs.id") == errno.ENODATA


def test_missing_block_times_out(mounts: Mounts) -> None:
    m = mounts.start(None, None, "--timeout", "1")
    feed_dir = m.mnt / secrets.token_hex(32)
    for path in (feed_dir / ".feed", feed_dir / "0"):
        began = time.monotonic()
        assert _errno(Path.read_bytes, path) == errno.ETIMEDOUT
        # It waited its --timeout, not less; the upper bound only catches a read that
        # never ends (30 times the timeout: a loaded machine is slow, not that slow).
        assert 0.9 < time.monotonic() - began < 30
    assert os.stat(feed_dir / "0").st_size == 0  # stat never waits
    assert feed_dirs(m.mnt) == [feed_dir.name]  # looked up: it appears


def test_interrupted_reader_ends_promptly(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start()
    feed_id = secrets.token_hex(32)
    # The reader takes Python's own SIGINT handler even where it was started with SIGINT
    # ignored (a background job of a non-interactive shell: then the signal never comes).
    code = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"f = open({str(m.mnt / feed_id / '0')!r}, 'rb'); print('open', flush=True); "
            "f.read()")
    for sig in (signal.SIGINT, signal.SIGTERM):
        reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL)
        try:
            assert reader.stdout is not None and reader.stdout.readline() == b"open\n"
            deadline = time.monotonic() + 10
            while _waiting(m.mnt, feed_id) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)  # polling a condition, not synchronizing on time
            assert _waiting(m.mnt, feed_id) == 1
            reader.send_signal(sig)
            # The mount's --timeout is the default 60 s: a reader that ends well before
            # that was ended by its signal (the wait polls every 0.1 s), not by the timeout.
            reader.wait(30)
            assert reader.returncode == -sig
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
            if reader.stdout is not None:
                reader.stdout.close()
        assert _waiting(m.mnt, feed_id) == 0  # the want was withdrawn
    run("cp", _data(tmp_path, 100), m.mnt)  # and the mount still works
    run("cmp", tmp_path / "photo.jpg", m.mnt / "photo.jpg")


def _waiting(mnt: Path, feed_id: str) -> int:
    status = json.loads((mnt / ".status").read_bytes())
    return sum(feed["waiting"] for feed in status["feeds"] if feed["id"] == feed_id)


def test_rm_drops_blocks_names_and_feeds(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start()
    source = _data(tmp_path, 3 * BLOCK)
    run("cp", source, m.mnt)
    feed_id = feed_dirs(m.mnt)[0]
    feed_dir = m.mnt / feed_id
    run("rm", feed_dir / "1")
    assert os.getxattr(feed_dir / "1", "user.hyperfs.local") == b"0"
    assert os.getxattr(feed_dir, "user.hyperfs.local") == b"2"
    assert os.stat(feed_dir / "1").st_blocks == 0
    run("rm", m.mnt / "photo.jpg")
    assert sorted(os.listdir(m.mnt)) == [".status", feed_id]
    run("rm", "-r", feed_dir)
    assert os.listdir(m.mnt) == [".status"]
    assert m.stop() == 0
    assert run(HYPERFS, "--db", m.db, "ls").stdout == b""


def test_stale_mount_after_kill_recovers(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start()
    run("cp", _data(tmp_path, 1000), m.mnt)
    m.proc.kill()
    m.proc.wait(5)
    assert _errno(os.stat, m.mnt) == errno.ENOTCONN
    again = mounts.start(m.db, m.mnt)
    run("cmp", tmp_path / "photo.jpg", again.mnt / "photo.jpg")


def test_mount_errors_are_clear(mounts: Mounts, tmp_path: Path) -> None:
    missing = run(HYPERFS, "--db", tmp_path / "db", "mount", tmp_path / "nope", check=False)
    assert missing.returncode == 1 and b"does not exist" in missing.stderr
    full = tmp_path / "full"
    full.mkdir()
    (full / "file").write_text("x")
    busy = run(HYPERFS, "--db", tmp_path / "db", "mount", full, check=False)
    assert busy.returncode == 1 and b"not empty" in busy.stderr
    m = mounts.start()
    live = run(HYPERFS, "--db", tmp_path / "db2", "mount", m.mnt, check=False)
    assert live.returncode == 1 and b"already a live hyperfs mount" in live.stderr
    assert b"fuse.hyperfs" in run("cat", "/proc/self/mounts").stdout


def test_ls_of_a_huge_feed_lists_every_block(mounts: Mounts, tmp_path: Path) -> None:
    """`ls -l` of 100,000 block files (how fast: scripts/bench_fs.py, not a test)."""
    blocks = 100_000
    source = _data(tmp_path, blocks * 16 - 5, "many")
    db = tmp_path / "db"
    feed_id = run(HYPERFS, "--db", db, "add", "--block-size", "16", source).stdout.decode()
    m = mounts.start(db)
    feed_dir = m.mnt / feed_id.strip()
    listing = run("ls", "-l", feed_dir).stdout.decode().splitlines()
    assert len(listing) == blocks + 1  # the "total" line
    assert listing[-1].split()[4] in ("16", "11")
    run("cmp", source, feed_dir / ".feed")


def test_read_through_a_mount_fetches_from_another_mount(mounts: Mounts,
                                                          tmp_path: Path) -> None:
    source = _data(tmp_path, 40 * BLOCK + 777)
    seeder = mounts.start(None, None, "--listen", "127.0.0.1:0")
    run("cp", source, seeder.mnt)
    feed_id = os.getxattr(seeder.mnt / source.name, "user.hyperfs.id").decode()
    assert seeder.address is not None
    reader = mounts.start(None, None, "--peer", seeder.address, "--timeout", "20")
    feed_dir = reader.mnt / feed_id
    assert run("cat", feed_dir / "3").stdout == source.read_bytes()[3 * BLOCK : 4 * BLOCK]
    assert os.getxattr(feed_dir, "user.hyperfs.blocks") == b"41"
    run("cmp", source, feed_dir / ".feed")
    blocks = b"".join(run("cat", feed_dir / str(i)).stdout for i in range(41))
    assert blocks == source.read_bytes()
    assert os.getxattr(feed_dir, "user.hyperfs.local") == b"41"


NETWORK_WAIT = 60
"""--timeout of the mount below: a stat that waited on the network would take this long."""
PROMPT = 20.0
"""Bound on every stat/getfattr/ls below together: a third of NETWORK_WAIT, so a single
network wait fails it, and ten times the 2 s a listing of an unknown feed may wait, for a
loaded 2-core machine."""


def test_stat_getfattr_and_ls_never_wait_on_the_network(mounts: Mounts,
                                                        tmp_path: Path) -> None:
    """With the only seeder stopped (SIGSTOP: connected, never answering), stat, getfattr
    and ls of a remote feed's files answer at once from what is known, and ask for nothing."""
    source = _data(tmp_path, 40 * BLOCK + 777)
    seeder = mounts.start(None, None, "--listen", "127.0.0.1:0")
    run("cp", source, seeder.mnt)
    feed_id = os.getxattr(seeder.mnt / source.name, "user.hyperfs.id").decode()
    assert seeder.address is not None
    reader = mounts.start(None, None, "--peer", seeder.address,
                          "--timeout", str(NETWORK_WAIT))
    feed_dir = reader.mnt / feed_id
    # The last block (not sequential, so nothing is prefetched): the length becomes known.
    assert (feed_dir / "40").read_bytes() == source.read_bytes()[40 * BLOCK :]
    os.kill(seeder.proc.pid, signal.SIGSTOP)
    try:
        began = time.monotonic()
        files = [feed_dir, feed_dir / ".feed", *(feed_dir / str(i) for i in range(41))]
        sizes = [os.stat(path).st_size for path in files]
        dumped = run("getfattr", "--absolute-names", "-d", "-m", "-", *files).stdout
        listing = run("ls", "-la", feed_dir).stdout.decode().splitlines()
        root = run("ls", "-la", reader.mnt).stdout.decode()
        elapsed = time.monotonic() - began
        status = json.loads((reader.mnt / ".status").read_bytes())
    finally:
        os.kill(seeder.proc.pid, signal.SIGCONT)
    assert elapsed < PROMPT, f"stat/getfattr/ls took {elapsed:.1f} s"
    assert sizes[1] == 0 and sizes[-1] == 777  # .feed: unknown without a full block
    assert dumped.decode() == "".join(
        f"# file: {path}\nuser.hyperfs.blocks=\"41\"\nuser.hyperfs.id=\"{feed_id}\"\n"
        f"user.hyperfs.local=\"{local}\"\n\n"
        for path, local in zip(files, ["1", "1", *["0"] * 40, "1"], strict=True))
    names = [".feed", *map(str, range(41))]  # (the listing has no "." or "..")
    assert sorted(line.split()[-1] for line in listing[1:]) == sorted(names)
    assert feed_id in root.split()
    [feed] = status["feeds"]
    assert (feed["blocks"], feed["local"], feed["waiting"]) == (41, 1, 0)  # nothing moved
    assert [f["inflight"] for f in status["network"]["feeds"]] == [0]  # nothing asked


def test_read_through_a_mount_from_the_js_reference(mounts: Mounts, tmp_path: Path,
                                                    requires_js: None) -> None:
    from hyperfs.testing import jsref

    source = _data(tmp_path, 10 * 5000 + 11)
    _peer, feed_id, port = jsref.start_js_seeder(source, 5000)
    m = mounts.start(None, None, "--peer", f"127.0.0.1:{port}", "--timeout", "20")
    run("cmp", source, m.mnt / feed_id / ".feed")
    assert run("cat", m.mnt / feed_id / "10").stdout == source.read_bytes()[50000:]
