"""Names as files at the level of system calls (issue 10, docs/SEMANTICS.md): what a
file being written keeps, every errno a user can cause, listings that race removals.

Real ``hyperfs mount`` processes, real syscalls; tests/test_fs_tools.py runs the tools.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from pathlib import Path

import pytest

from hyperfs.testing.mounts import Mounted, Mounts, run
from hyperfs.testing.requirements import FUSE, fuse_available, require
from hyperfs.testing.syscalls import SECOND, XATTR_EMPTY, XATTR_ID, fails

require(fuse_available(), FUSE)

BLOCK = 64 * 1024


def _remount(mounts: Mounts, m: Mounted) -> Mounted:
    assert m.stop() == 0
    return mounts.start(m.db, m.mnt)


def test_attributes_set_while_writing_are_kept(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start()
    path = m.mnt / "written"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"x" * (BLOCK + 1))
        os.fsync(fd)
        os.fdatasync(fd)
        os.fchmod(fd, 0o751)
        os.utime(fd, ns=(7 * SECOND, 8 * SECOND))
        os.fchown(fd, os.getuid(), os.getgid())
        os.setxattr(fd, "user.origin", b"test")
        fails(errno.ENOTSUP, os.setxattr, fd, "trusted.origin", b"test")
        fails(errno.EOPNOTSUPP, _fallocate, fd)
        os.write(fd, b"y")
    finally:
        os.close(fd)

    def check(mnt: Path) -> None:
        info = os.stat(mnt / "written")
        assert (stat.S_IMODE(info.st_mode), info.st_mtime_ns) == (0o751, 8 * SECOND)
        assert (info.st_uid, info.st_gid, info.st_size) == (os.getuid(), os.getgid(),
                                                            BLOCK + 2)
        assert (mnt / "written").read_bytes() == b"x" * (BLOCK + 1) + b"y"
        assert os.getxattr(mnt / "written", "user.origin") == b"test"

    check(m.mnt)
    os.chown(path, os.getuid(), os.getgid())  # chown to self
    fails(errno.EINVAL, os.utime, path, (-SECOND, -SECOND))  # before 1970: not kept
    assert os.stat(path).st_mtime_ns == 8 * SECOND
    os.removexattr(path, "user.origin")
    fails(errno.ENODATA, os.getxattr, path, "user.origin")
    os.setxattr(path, "user.origin", b"test")
    check(_remount(mounts, m).mnt)


def _fallocate(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if libc.fallocate(fd, 0, 0, 4096):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def test_what_names_refuse(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start()
    (tmp_path / "f").write_bytes(b"bytes")
    run("cp", tmp_path / "f", m.mnt / "f")
    feed_dir = m.mnt / os.getxattr(m.mnt / "f", XATTR_ID).decode()
    os.mkdir(m.mnt / "d")
    run("cp", tmp_path / "f", m.mnt / "d" / "g")
    fails(errno.EEXIST, os.mkdir, m.mnt / ("cd" * 32))  # a feed id's place
    fails(errno.EEXIST, os.mkdir, m.mnt / ("CD" * 32))
    os.mkdir(m.mnt / "d" / ("cd" * 32))  # only at the top
    fails(errno.EEXIST, os.mkdir, m.mnt / "d")
    fails(errno.EEXIST, os.mkdir, m.mnt / "f")
    fails(errno.EEXIST, os.mkdir, m.mnt / ".status")
    fails(errno.ENAMETOOLONG, os.mkdir, m.mnt / ("n" * 256))
    fails(errno.EPERM, os.mkdir, feed_dir / "x")
    fails(errno.ENOTEMPTY, os.rmdir, m.mnt / "d")
    fails(errno.ENOTDIR, os.rmdir, m.mnt / "f")
    fails(errno.EISDIR, os.unlink, m.mnt / "d")
    fails(errno.ENOENT, os.unlink, m.mnt / "d" / "missing")
    fails(errno.EEXIST, os.link, m.mnt / "f", m.mnt / "d")  # (a free name may be linked)
    fails(errno.EEXIST, os.symlink, "d", m.mnt / "f")  # (links are names: see test_fs_tools)
    fails(errno.EROFS, os.open, m.mnt / "f", os.O_WRONLY | os.O_APPEND)
    fails(errno.EROFS, os.open, feed_dir / "0", os.O_WRONLY | os.O_TRUNC)
    fails(errno.EROFS, os.truncate, feed_dir / ".feed", 0)
    fails(errno.EPERM, os.open, feed_dir / "new", os.O_WRONLY | os.O_CREAT)
    fails(errno.ENOTSUP, os.setxattr, feed_dir, "user.x", b"1")
    fails(errno.ENOTSUP, os.setxattr, m.mnt / "d", "security.x", b"1")
    fails(errno.ENOTSUP, os.setxattr, m.mnt / "d", XATTR_EMPTY, b"1")
    fails(errno.ENOSPC, os.setxattr, m.mnt / "d", "user.big", b"x" * (64 * 1024))
    fd = os.open(m.mnt / "d" / "h", os.O_WRONLY | os.O_CREAT)
    try:
        fails(errno.EBUSY, os.rename, m.mnt / "f", m.mnt / "d" / "h")  # being written
        fails(errno.EBUSY, os.unlink, m.mnt / "d" / "h")
        fails(errno.ENOTEMPTY, os.rmdir, m.mnt / "d")
        os.write(fd, b"h")
    finally:
        os.close(fd)
    os.rmdir(m.mnt / "d" / ("cd" * 32))
    for name in ("g", "h"):
        os.unlink(m.mnt / "d" / name)
    os.rmdir(m.mnt / "d")
    os.setxattr(m.mnt / "f", "user.x", b"1")
    with open(m.mnt / "f", "rb") as reader:
        os.fsync(reader.fileno())
    dir_fd = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    assert sorted(name for name in os.listdir(m.mnt) if len(name) != 64) == [".status", "f"]
    assert feed_dir.name in os.listdir(m.mnt)  # `rm` of names leaves their feeds
    assert m.proc.poll() is None and "Traceback" not in m.errors()  # no handler raised


GETDENTS64 = {"x86_64": 217, "aarch64": 61}.get(os.uname().machine)


def _read_entries(fd: int, buffer: ctypes.Array[ctypes.c_char]) -> list[str]:
    """One getdents64(2) call into a small buffer: the entries of one FUSE readdir."""
    assert GETDENTS64 is not None
    size = ctypes.CDLL(None, use_errno=True).syscall(GETDENTS64, fd, buffer, len(buffer))
    if size < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    names, pos, raw = [], 0, buffer.raw
    while pos < size:
        length = int.from_bytes(raw[pos + 16 : pos + 18], "little")
        names.append(raw[pos + 19 : pos + length].split(b"\0")[0].decode())
        pos += length
    return names


def test_a_listing_goes_on_past_names_removed_since(mounts: Mounts) -> None:
    """A directory is read a few dozen entries per request: names removed after the first
    (as ``rm -r`` and ``rsync --delete`` do) are skipped, not an error."""
    if GETDENTS64 is None:
        pytest.skip("getdents64's number is known here for x86_64 and aarch64 only")
    m = mounts.start()
    listed = m.mnt / "listed"
    listed.mkdir()
    run("touch", *(listed / f"{i:04d}" for i in range(2000)))
    fd = os.open(listed, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buffer = ctypes.create_string_buffer(1024)
        names = _read_entries(fd, buffer)
        assert 0 < len(names) < 1000
        for i in range(1000, 2000):
            os.unlink(listed / f"{i:04d}")
        while batch := _read_entries(fd, buffer):
            names += batch
    finally:
        os.close(fd)
    assert names == [f"{i:04d}" for i in range(1000)]
    found = run("find", m.mnt, "-type", "f").stdout.decode().split()
    assert len(found) == 1000 + 1  # and .status
    run("rm", "-r", listed)
    assert sorted(os.listdir(m.mnt)) == [".status"]
