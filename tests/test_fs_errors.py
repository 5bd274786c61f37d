"""What docs/FILESYSTEM.md promises a mount refuses, and what its rm and rmdir remove.

Real ``hyperfs mount`` processes (hyperfs.testing.mounts), real syscalls and tools: every
refusal is checked for its exact errno, every survivor byte for byte.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from hyperfs.testing.mounts import HYPERFS, Mounts, run
from hyperfs.testing.requirements import FUSE, fuse_available, require

require(fuse_available(), FUSE)

BLOCK = 64 * 1024
ID = "user.hyperfs.id"
LOCAL = "user.hyperfs.local"


def _fails(code: int, call: Callable[..., object], *args: object) -> None:
    """``call(*args)`` must fail with exactly errno ``code``."""
    with pytest.raises(OSError) as failed:
        call(*args)
    got = failed.value.errno
    assert got == code, f"{call.__name__}{args}: {errno.errorcode.get(got or 0, got)}"


def _stored(mnt: Path, tmp_path: Path, name: str, size: int) -> tuple[Path, bytes]:
    """``cp`` a file of ``size`` random bytes into the mount as ``name``: (its feed
    directory, the bytes)."""
    data = secrets.token_bytes(size)
    (tmp_path / name).write_bytes(data)
    run("cp", tmp_path / name, mnt)
    return mnt / os.getxattr(mnt / name, ID).decode(), data


def test_a_name_being_written_is_busy(mounts: Mounts) -> None:
    m = mounts.start()
    name = m.mnt / "busy"
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        os.write(fd, b"first part")
        _fails(errno.ETXTBSY, os.open, name, os.O_RDONLY)
        _fails(errno.ETXTBSY, os.open, name, os.O_WRONLY | os.O_CREAT)  # as `cp` opens it
        _fails(errno.EEXIST, os.open, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        status = json.loads((m.mnt / ".status").read_bytes())
        assert status["uploads"] == [{"name": "busy", "bytes": 10}]
        os.write(fd, b", second")
    finally:
        os.close(fd)
    assert name.read_bytes() == b"first part, second"  # readable once its writer closed it
    assert json.loads((m.mnt / ".status").read_bytes())["uploads"] == []


def test_xattrs_cannot_be_removed(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start()
    feed_dir, _ = _stored(m.mnt, tmp_path, "named", 2 * BLOCK)
    paths = [feed_dir, feed_dir / ".feed", feed_dir / "0", m.mnt / "named"]
    for path in paths:
        for attr in (ID, LOCAL):
            _fails(errno.ENOTSUP, os.removexattr, path, attr)
        _fails(errno.ENOTSUP, os.setxattr, path, ID, b"0" * 64)
    for path in paths[:3]:  # a feed's own files keep no xattrs of their own
        _fails(errno.ENOTSUP, os.removexattr, path, "user.other")
        _fails(errno.ENOTSUP, os.setxattr, path, "user.other", b"1")
    # (Since issue 10) a name keeps user. xattrs of its own: there is no user.other yet.
    _fails(errno.ENODATA, os.removexattr, paths[3], "user.other")
    _fails(errno.ENOTSUP, os.setxattr, paths[3], "trusted.other", b"1")
    assert [os.getxattr(path, ID) for path in paths] == [feed_dir.name.encode()] * 4
    assert run("setfattr", "-x", ID, paths[0], check=False).returncode == 1


def test_metadata_and_links_are_refused(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start()
    feed_dir, data = _stored(m.mnt, tmp_path, "named", 2 * BLOCK + 5)
    files = [feed_dir / "0", feed_dir / ".feed", m.mnt / ".status"]
    for path in files:
        _fails(errno.EROFS, os.chmod, path, 0o644)
        _fails(errno.EROFS, os.utime, path)  # touch
        _fails(errno.EROFS, os.utime, path, (0, 0))
    for where in (m.mnt, feed_dir):
        _fails(errno.EPERM, os.chmod, where, 0o700)
    os.chmod(m.mnt / "named", 0o600)  # (since issue 10) a name's mode and times are its own
    os.utime(m.mnt / "named", ns=(1, 2))
    for target, link in [(feed_dir / "0", m.mnt / "link"), (feed_dir, m.mnt / "link"),
                         (m.mnt / "named", feed_dir / "link")]:  # (names can be linked)
        _fails(errno.EPERM, os.link, target, link)
    for where in (m.mnt, feed_dir):
        for kind in (stat.S_IFIFO, stat.S_IFREG, stat.S_IFSOCK):
            _fails(errno.EPERM, os.mknod, where / "node", kind | 0o644)
    assert sorted(os.listdir(m.mnt)) == sorted([".status", "named", feed_dir.name])
    assert [os.stat(path).st_mode & 0o777 for path in files] == [0o444] * 3
    named = os.stat(m.mnt / "named")
    assert (named.st_mode & 0o777, named.st_atime_ns, named.st_mtime_ns) == (0o600, 1, 2)
    assert (m.mnt / "named").read_bytes() == data


def test_rm_of_the_whole_feed_drops_every_local_block(mounts: Mounts, tmp_path: Path) -> None:
    seeder = mounts.start(None, None, "--listen", "127.0.0.1:0")
    seeded, data = _stored(seeder.mnt, tmp_path, "named", 5 * BLOCK + 99)
    assert seeder.address is not None
    m = mounts.start(None, None, "--peer", seeder.address, "--timeout", "30")
    feed_dir = m.mnt / seeded.name
    assert (feed_dir / ".feed").read_bytes() == data  # fetched
    assert os.getxattr(feed_dir, LOCAL) == b"6"
    os.unlink(feed_dir / ".feed")
    blocks = [feed_dir / str(i) for i in range(6)]
    assert [os.getxattr(path, LOCAL) for path in [feed_dir, *blocks]] == [b"0"] * 7
    assert os.stat(feed_dir / ".feed").st_blocks == 0
    assert sorted(os.listdir(feed_dir)) == sorted([".feed", *map(str, range(6))])  # still listed
    assert os.getxattr(seeded, LOCAL) == b"6"  # only this mount's copy went
    assert b"".join(path.read_bytes() for path in blocks) == data  # fetched again
    assert os.getxattr(feed_dir, LOCAL) == b"6"
    assert m.stop() == 0
    assert run(HYPERFS, "--db", m.db, "fsck").stdout == b"1 feeds, 6 blocks: ok\n"


def test_rmdir_deletes_the_feed_and_every_name_of_it(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start()
    feed_dir, _ = _stored(m.mnt, tmp_path, "first", 3 * BLOCK)
    run("cp", tmp_path / "first", m.mnt / "second")  # the same bytes: the same feed
    assert os.getxattr(m.mnt / "second", ID) == feed_dir.name.encode()
    other_dir, other = _stored(m.mnt, tmp_path, "other", BLOCK + 1)
    os.rmdir(feed_dir)
    assert sorted(os.listdir(m.mnt)) == sorted([".status", "other", other_dir.name])
    for name in ("first", "second"):  # (a stat may still answer from the kernel's cache)
        _fails(errno.ENOENT, os.open, m.mnt / name, os.O_RDONLY)
    assert m.stop() == 0
    listed = run(HYPERFS, "--db", m.db, "ls").stdout.decode()
    assert listed == f"{other_dir.name}           2 blocks           2 local  static\n"
    again = mounts.start(m.db, m.mnt)
    assert sorted(os.listdir(again.mnt)) == sorted([".status", "other", other_dir.name])
    assert (again.mnt / "other").read_bytes() == other
