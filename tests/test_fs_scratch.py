"""Writers that go back over what they wrote (hyperfs.fs.scratch): zip, a linker, SQLite,
``dd conv=notrunc``, ``truncate``; real mounts, real tools, and the ids they give checked
against ``cp`` of the same bytes.
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from hyperfs.testing.mounts import HYPERFS, Mounts, feed_dirs, run
from hyperfs.testing.requirements import FUSE, fuse_available, require
from hyperfs.testing.syscalls import XATTR_ID, fails

require(fuse_available(), FUSE)

BLOCK = 64 * 1024


def _id(path: Path) -> str:
    return os.getxattr(path, XATTR_ID).decode()


def test_writes_anywhere_in_a_new_file(mounts: Mounts, tmp_path: Path) -> None:
    """Holes, rewrites and writes behind the end; the bytes read back through the same
    handle (O_RDWR) and, once closed, the feed is the one ``cp`` makes of those bytes."""
    m = mounts.start()
    fd = os.open(m.mnt / "random", os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        assert os.write(fd, b"abc") == 3
        assert os.pwrite(fd, b"x", 10) == 1  # a hole
        assert os.pwrite(fd, b"x", 0) == 1  # a rewrite
        os.lseek(fd, 1, os.SEEK_SET)
        assert os.write(fd, b"x") == 1
        assert os.pread(fd, 100, 0) == b"xxc" + bytes(7) + b"x"
        os.ftruncate(fd, 6)
        os.lseek(fd, 3, os.SEEK_SET)
        assert os.write(fd, b"def") == 3
        assert os.fstat(fd).st_size == 6
    finally:
        os.close(fd)
    assert (m.mnt / "random").read_bytes() == b"xxcdef"
    (tmp_path / "same").write_bytes(b"xxcdef")
    run("cp", tmp_path / "same", m.mnt / "copied")
    assert _id(m.mnt / "random") == _id(m.mnt / "copied")


def test_a_big_file_whose_header_is_written_last(mounts: Mounts, tmp_path: Path) -> None:
    """As ffmpeg writes an mp4: 20 MiB front to back (past the size where the bytes go
    straight to the data file, hashed behind), then its first bytes again."""
    data = bytearray(secrets.token_bytes(20 << 20))
    m = mounts.start()
    with open(m.mnt / "movie", "wb") as out:
        out.write(data)
        out.seek(0)
        out.write(b"HEAD")
    data[:4] = b"HEAD"
    (tmp_path / "movie").write_bytes(data)
    run("cp", tmp_path / "movie", m.mnt / "copied")
    assert (m.mnt / "movie").read_bytes() == data
    assert _id(m.mnt / "movie") == _id(m.mnt / "copied")
    assert len(feed_dirs(m.mnt)) == 1  # the stream given up for the scratch file left nothing
    assert m.stop() == 0
    assert run(HYPERFS, "--db", m.db, "fsck").stdout.endswith(b": ok\n")


def test_zip_and_a_linker_write_into_the_mount(mounts: Mounts, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name, size in (("a.bin", 3 * BLOCK + 1), ("sub/b.txt", 100), ("c", 0)):
        (src / name).write_bytes(secrets.token_bytes(size))
    (tmp_path / "hello.c").write_text('#include <stdio.h>\nint main(void) '
                                      '{ puts("hello from the mount"); return 0; }\n')
    m = mounts.start()
    # zip goes back to fill in each entry's sizes: the same archive as one made outside.
    run("sh", "-c", f"cd {src} && zip -q -X -r {m.mnt}/out.zip . && zip -q -X -r "
        f"{tmp_path}/out.zip .")
    assert (m.mnt / "out.zip").read_bytes() == (tmp_path / "out.zip").read_bytes()
    run("unzip", "-q", m.mnt / "out.zip", "-d", tmp_path / "unzipped")
    assert (tmp_path / "unzipped" / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
    run("cc", "-o", m.mnt / "hello", tmp_path / "hello.c")  # ld seeks back too
    assert run(m.mnt / "hello").stdout == b"hello from the mount\n"
    repo = m.mnt / "repo"  # git: lock files, renames, its index rewritten in place
    git = ["git", "-C", repo, "-c", "user.name=t", "-c", "user.email=t@t"]
    run("git", "init", "-q", repo)
    run("cp", "-r", src / "sub", tmp_path / "hello.c", repo)
    run(*git, "add", ".")
    run(*git, "commit", "-q", "-m", "first")
    (repo / "hello.c").write_text("changed\n")
    run(*git, "commit", "-q", "-am", "second")
    assert run(*git, "log", "--format=%s").stdout == b"second\nfirst\n"
    assert run(*git, "status", "--porcelain").stdout == b""
    run(*git, "fsck", "--strict")


def _sql(db: Path, statement: str) -> str:
    return run("sqlite3", db, statement).stdout.decode().strip()


def test_sqlite_keeps_a_database_in_the_mount(mounts: Mounts) -> None:
    """Made, then changed in later sessions (each reads the pages it wrote, and the old
    bytes of the name it opened), across a remount."""
    m = mounts.start()
    db = m.mnt / "notes.db"
    _sql(db, "create table t(x); insert into t values (1);")
    for _ in range(6):
        _sql(db, "insert into t select x + (select max(x) from t) from t;")
    assert _sql(db, "select count(*), sum(x) from t;") == "64|2080"
    assert _sql(db, "pragma integrity_check;") == "ok"
    again = mounts.start(m.db) if m.stop() == 0 else None
    assert again is not None
    assert _sql(again.mnt / "notes.db", "delete from t where x > 10; select sum(x) from t;") \
        == "55"
    assert not [name for name in os.listdir(again.mnt) if "journal" in name]


def test_a_name_changed_in_place_becomes_a_new_feed(mounts: Mounts, tmp_path: Path) -> None:
    """dd conv=notrunc and truncate(1) of an existing name: copy on write, the old feed
    stays under its id; a read-only session through O_RDWR makes no new feed."""
    m = mounts.start()
    original = secrets.token_bytes(2 * BLOCK + 7)
    (tmp_path / "f").write_bytes(original)
    run("cp", tmp_path / "f", m.mnt / "f")
    old_id = _id(m.mnt / "f")
    with open(m.mnt / "f", "r+b") as both:
        assert both.read() == original
    assert _id(m.mnt / "f") == old_id and feed_dirs(m.mnt) == [old_id]
    run("dd", "of=" + str(m.mnt / "f"), "conv=notrunc", "bs=1", "seek=3", "status=none",
        input=b"XYZ")
    changed = original[:3] + b"XYZ" + original[6:]
    assert (m.mnt / "f").read_bytes() == changed
    assert (m.mnt / old_id / ".feed").read_bytes() == original  # still there, by id
    run("truncate", "-s", "10", m.mnt / "f")
    assert (m.mnt / "f").read_bytes() == changed[:10]
    run("truncate", "-s", "12", m.mnt / "f")
    assert (m.mnt / "f").read_bytes() == changed[:10] + bytes(2)
    # rsync --inplace: the delta's blocks written over the old bytes, grown, then shrunk.
    run("cp", tmp_path / "f", m.mnt / "r")
    newer = bytearray(original + secrets.token_bytes(BLOCK))
    newer[BLOCK : BLOCK + 100] = secrets.token_bytes(100)
    for version in (bytes(newer), bytes(newer[: len(original) - 9])):
        (tmp_path / "newer").write_bytes(version)
        run("rsync", "--inplace", "--no-whole-file", "-I", tmp_path / "newer", m.mnt / "r")
        assert (m.mnt / "r").read_bytes() == version


def test_a_new_file_mapped_shared_and_written(mounts: Mounts) -> None:
    """A new name opened O_RDWR goes through the page cache, so it can be mapped and
    written (its dirty pages reach the scratch file before the close stores it)."""
    m = mounts.start()
    code = ("import mmap, sys\n"
            "with open(sys.argv[1], 'w+b') as f:\n"
            "    f.truncate(3 * 65536 + 5)\n"
            "    with mmap.mmap(f.fileno(), 0) as m:\n"
            "        m[0:5] = b'hello'; m[70000:70005] = b'world'; m[-5:] = b'tail!'\n")
    run(sys.executable, "-c", code, m.mnt / "mapped")
    data = (m.mnt / "mapped").read_bytes()
    assert (len(data), data[:5], data[70000:70005], data[-5:]) == (
        3 * 65536 + 5, b"hello", b"world", b"tail!")
    assert data.count(0) == len(data) - 15
    db = m.mnt / "mapped.db"
    run("sqlite3", db, "pragma mmap_size=1000000; create table t(x); insert into t values (7);")
    assert run("sqlite3", db, "select x from t;").stdout == b"7\n"
    fd = os.open(m.mnt / "mapped", os.O_RDWR)  # an existing name: direct I/O, its old
    try:  # bytes' pages stay its readers': a shared writable map is refused
        fails(errno.ENODEV, mmap.mmap, fd, 0)
    finally:
        os.close(fd)


def test_a_live_feed_is_still_only_appended_to(mounts: Mounts) -> None:
    m = mounts.start()
    with open(m.mnt / "log", "ab") as log:  # a new name opened O_APPEND: a live feed
        log.write(b"first\n")
    fd = os.open(m.mnt / "log", os.O_RDWR)
    try:
        fails(errno.EROFS, os.pwrite, fd, b"x", 0)  # a live feed grows by appends only
        fails(errno.EBADF, os.pread, fd, 10, 0)  # no copy of it is made: read it read-only
    finally:
        os.close(fd)  # and the refusals did not fail the close
    assert (m.mnt / "log").read_bytes() == b"first\n"


def test_a_kill_during_a_scratch_upload_leaves_nothing(mounts: Mounts) -> None:
    """The scratch file is anonymous: a kill -9 of the mount while a writer holds one
    leaves no name, no feed and no file behind."""
    m = mounts.start()
    writer = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "os.write(fd, os.urandom(3 << 20)); os.pwrite(fd, b'header', 0)\n"
         "print('ready', flush=True); sys.stdin.read()", str(m.mnt / "half")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
        assert m.stop(signal.SIGKILL) == -signal.SIGKILL
    finally:
        writer.kill()
        writer.wait()
    again = mounts.start(m.db)
    assert not (again.mnt / "half").exists() and not feed_dirs(again.mnt)
    assert again.stop() == 0
    assert os.listdir(m.db / "data") == []  # no data file left, and O_TMPFILE has no name
    assert run(HYPERFS, "--db", m.db, "fsck").stdout == b"0 feeds, 0 blocks: ok\n"
