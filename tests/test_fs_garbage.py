"""Feeds no one else can know of go with their last name (hyperfs.fs.garbage): SQLite's
journals, files saved over, on real mounts; and every way an id gets out keeps its feed.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from hyperfs.fs.garbage import SWEEP_SHARE
from hyperfs.testing.mounts import HYPERFS, Mounted, Mounts, feed_dirs, run
from hyperfs.testing.requirements import FUSE, fuse_available, require
from hyperfs.testing.syscalls import XATTR_ID
from hyperfs.testing.workers import wait_until

require(fuse_available(), FUSE)

BLOCK = 64 * 1024


def _stored(m: Mounted) -> list[str]:
    """The ids stored in ``m``'s database, once it is unmounted (`hyperfs ls`)."""
    assert m.stop() == 0
    listing = run(HYPERFS, "--db", m.db, "ls").stdout.decode().split("\n")
    return sorted(line.split()[0] for line in listing if line)


def _fsck_clean(m: Mounted) -> None:
    run(HYPERFS, "--db", m.db, "fsck")


def test_sqlite_and_saves_over_leave_one_feed(mounts: Mounts, tmp_path: Path) -> None:
    """Twenty SQLite sessions (each a journal, a new version of the database) and an
    editor's save (a temporary file renamed over the old) leave one feed per name."""
    m = mounts.start()
    db = m.mnt / "notes.db"
    run("sqlite3", db, "pragma journal_mode=delete; create table t(x);")
    for x in range(20):
        run("sqlite3", db, f"insert into t values ({x});")
    assert run("sqlite3", db, "select sum(x) from t;").stdout == b"190\n"
    text = m.mnt / "text"
    for version in range(5):
        (m.mnt / ".text.swp").write_bytes(secrets.token_bytes(BLOCK + version))
        os.rename(m.mnt / ".text.swp", text)
    copy = tmp_path / "copy"
    copy.write_bytes(text.read_bytes())
    ids = {os.getxattr(path, XATTR_ID).decode() for path in (db, text)}
    assert sorted(feed_dirs(m.mnt)) == sorted(ids)
    assert _stored(m) == sorted(ids)
    _fsck_clean(m)
    again = mounts.start(m.db)
    assert run("sqlite3", again.mnt / "notes.db", "select count(*) from t;").stdout == b"20\n"
    assert (again.mnt / "text").read_bytes() == copy.read_bytes()


def test_an_open_reader_keeps_the_bytes_until_its_close(mounts: Mounts) -> None:
    """POSIX: an unlinked file stays readable through what is open; the feed goes at the
    last close."""
    m = mounts.start()
    data = secrets.token_bytes(5 * BLOCK + 3)
    (m.mnt / "f").write_bytes(data)
    with open(m.mnt / "f", "rb", buffering=0) as reader:
        head = reader.read(BLOCK)
        os.unlink(m.mnt / "f")
        assert len(feed_dirs(m.mnt)) == 1  # still open
        assert head + reader.read() == data
    wait_until(lambda: feed_dirs(m.mnt) == [], 10, "the unnamed feed deleted at its close")
    assert _stored(m) == []
    _fsck_clean(m)


def test_rm_r_of_many_new_files_leaves_no_feed(mounts: Mounts) -> None:
    """Past SWEEP_SHARE names the feeds that lost theirs are swept in batches (one scan of
    the names for many), and what is left at unmount goes then."""
    m = mounts.start()
    (m.mnt / "keep").write_bytes(b"kept")
    tree = m.mnt / "build"
    tree.mkdir()
    for i in range(2 * SWEEP_SHARE + 40):
        (tree / f"{i}.o").write_bytes(b"%d" % i)
    assert len(feed_dirs(m.mnt)) == 2 * SWEEP_SHARE + 41
    shutil.rmtree(tree)
    assert len(feed_dirs(m.mnt)) < 2 * SWEEP_SHARE  # swept on the way
    kept = os.getxattr(m.mnt / "keep", XATTR_ID).decode()
    assert _stored(m) == [kept]
    _fsck_clean(m)


def test_feeds_whose_id_got_out_stay(mounts: Mounts, tmp_path: Path) -> None:
    """Its id read (`hyperfs id`, getfattr), its directory used, pinned, served to a
    peer, or its bytes stored before this mount: the feed outlives its last name."""
    kept = {}
    source = tmp_path / "before"
    source.write_bytes(secrets.token_bytes(2 * BLOCK))
    first = mounts.start(None, None, "--listen", "127.0.0.1:0")
    run("cp", source, first.mnt / "before")
    kept["before"] = os.getxattr(first.mnt / "before", XATTR_ID).decode()
    assert first.stop() == 0
    m = mounts.start(first.db, None, "--listen", "127.0.0.1:0")
    run("cp", source, m.mnt / "again")  # the same bytes, stored in the session before
    for name in ("id", "dir", "pinned", "served", "gone"):
        (m.mnt / name).write_bytes(secrets.token_bytes(BLOCK + len(name)))
    kept["id"] = run(HYPERFS, "id", m.mnt / "id").stdout.decode().split()[0]
    feeds = set(feed_dirs(m.mnt))
    kept["dir"] = _learn_id(tmp_path, m.mnt / "dir")
    assert (m.mnt / kept["dir"] / "1").stat().st_size == 3
    os.setxattr(m.mnt / "pinned", "user.hyperfs.pinned", b"1")
    kept["pinned"] = _learn_id(tmp_path, m.mnt / "pinned")
    kept["served"] = _learn_id(tmp_path, m.mnt / "served")
    assert m.address is not None
    reader = mounts.start(None, None, "--peer", m.address, "--timeout", "20")
    assert (reader.mnt / kept["served"] / ".feed").read_bytes() \
        == (m.mnt / "served").read_bytes()
    gone = _learn_id(tmp_path, m.mnt / "gone")
    assert feeds == {*kept.values(), gone}
    for name in ("before", "again", "id", "dir", "pinned", "served", "gone"):
        os.unlink(m.mnt / name)
    left = set(feed_dirs(m.mnt))
    assert {k for k, v in kept.items() if v not in left} == set()
    assert sorted(left) == sorted(set(kept.values()))
    assert _stored(m) == sorted(set(kept.values()))


def _learn_id(tmp_path: Path, name: Path) -> str:
    """The id of the feed at ``name``, found as a peer would (`hyperfs add` of the same
    bytes elsewhere), without asking the mount."""
    copy = tmp_path / f"{name.name}.copy"
    copy.write_bytes(name.read_bytes())
    out = run(HYPERFS, "--db", tmp_path / f"{name.name}.db", "add", copy).stdout.decode()
    return out.split()[0]
