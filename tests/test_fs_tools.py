"""Everyday tools on a real mount: names behave like files (issue 10, docs/SEMANTICS.md).

Real ``hyperfs mount`` processes and the real rsync, cp, tar, unzip, install, gio, touch,
mv and Python's shutil. Every copy is compared byte for byte with its source (and mode
and mtime where the tool keeps them), and again after a remount. tests/test_fs_names.py
checks the same at the level of system calls.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import secrets
import signal
import stat
import sys
import zipfile
from pathlib import Path

from hyperfs.testing.mounts import HYPERFS, Mounted, Mounts, feed_dirs, run
from hyperfs.testing.requirements import FUSE, fuse_available, require
from hyperfs.testing.syscalls import SECOND, XATTR_EMPTY, XATTR_ID, fails

require(fuse_available(), FUSE)

BLOCK = 64 * 1024


def _tree(base: Path) -> Path:
    """A source tree: files of several sizes (one of many blocks, an empty one, an odd
    name), subdirectories two deep, distinct modes and times set to the nanosecond."""
    files = {"top.bin": 3 * BLOCK + 17, "small.txt": 12, "empty": 0,
             "sub/inner.bin": BLOCK, "sub/deeper/leaf.dat": 5000,
             "sub/deeper/odd name \u00e9.txt": 7, "other/one": 1}
    for index, (name, size) in enumerate(sorted(files.items())):
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(secrets.token_bytes(size))
        path.chmod(0o600 if index % 2 else 0o644)
        os.utime(path, ns=(1_600_000_000 * SECOND + index, 1_600_000_123 * SECOND + index))
    (base / "sub" / "deeper").chmod(0o700)
    for directory in (base / "sub" / "deeper", base / "sub", base / "other"):
        os.utime(directory, ns=(1_500_000_000 * SECOND, 1_500_000_007 * SECOND + 5))
    return base


def _check(src: Path, dst: Path, *, modes: bool = True, mtime: int | None = 1) -> None:
    """``dst`` holds exactly ``src``'s tree: the same names, bytes, and (when asked) the
    same modes and mtimes to ``mtime`` ns (None: times not compared)."""
    src_names = sorted(path.relative_to(src) for path in src.rglob("*"))
    dst_names = sorted(path.relative_to(dst) for path in dst.rglob("*"))
    assert dst_names == src_names
    for relative in src_names:
        source, copy = os.lstat(src / relative), os.lstat(dst / relative)
        assert stat.S_IFMT(copy.st_mode) == stat.S_IFMT(source.st_mode), relative
        if stat.S_ISLNK(source.st_mode):
            assert os.readlink(dst / relative) == os.readlink(src / relative), relative
        if stat.S_ISREG(source.st_mode):
            assert (dst / relative).read_bytes() == (src / relative).read_bytes(), relative
            assert copy.st_size == source.st_size, relative
        if modes:
            assert stat.S_IMODE(copy.st_mode) == stat.S_IMODE(source.st_mode), relative
        if mtime is not None:
            assert copy.st_mtime_ns // mtime == source.st_mtime_ns // mtime, dst / relative


def _remount(mounts: Mounts, m: Mounted) -> Mounted:
    assert m.stop() == 0
    return mounts.start(m.db, m.mnt)


def test_rsync_of_a_tree_and_of_single_files(mounts: Mounts, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    m = mounts.start()
    run("rsync", "-a", f"{src}/", f"{m.mnt}/tree/")  # temp files, chmod, utime, rename
    _check(src, m.mnt / "tree")
    run("rsync", src / "top.bin", src / "small.txt", m.mnt)  # plain: temp file + rename
    assert (m.mnt / "top.bin").read_bytes() == (src / "top.bin").read_bytes()
    # A changed source: rsync -a writes a new temp file and renames it over the old name.
    (src / "sub" / "inner.bin").write_bytes(secrets.token_bytes(2 * BLOCK + 3))
    old_id = os.getxattr(m.mnt / "tree" / "sub" / "inner.bin", XATTR_ID)
    run("rsync", "-a", f"{src}/", f"{m.mnt}/tree/")
    _check(src, m.mnt / "tree")
    assert os.getxattr(m.mnt / "tree" / "sub" / "inner.bin", XATTR_ID) != old_id
    assert old_id.decode() in os.listdir(m.mnt)  # the old feed stays, under its id
    os.setxattr(m.mnt / "tree" / "top.bin", "user.tag", b"kept")
    run("cp", "-a", m.mnt / "tree", m.mnt / "copied")  # from the mount into the mount
    run("rsync", "-aX", "--filter=-x user.hyperfs.*", f"{m.mnt}/tree/", f"{m.mnt}/synced/")
    for copy in ("copied", "synced"):
        _check(src, m.mnt / copy)
        assert os.getxattr(m.mnt / copy / "top.bin", "user.tag") == b"kept"
    run("rsync", "-a", f"{src}/sub/", f"{m.mnt}/")  # into the root (its times: not kept)
    _check(src / "sub" / "deeper", m.mnt / "deeper")
    assert (m.mnt / "inner.bin").read_bytes() == (src / "sub" / "inner.bin").read_bytes()
    again = _remount(mounts, m)
    _check(src, again.mnt / "tree")
    assert (again.mnt / "small.txt").read_bytes() == (src / "small.txt").read_bytes()
    _check(src / "sub" / "deeper", again.mnt / "deeper")


def test_cp_tar_unzip_and_install(mounts: Mounts, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    run("tar", "-cf", tmp_path / "tree.tar", "-C", src, ".")
    with zipfile.ZipFile(tmp_path / "tree.zip", "w") as archive:
        for path in sorted(src.rglob("*")):
            archive.write(path, path.relative_to(src))
    m = mounts.start()
    run("cp", "-r", src, m.mnt / "cp-r")
    run("cp", "-a", src, m.mnt / "cp-a")
    os.mkdir(m.mnt / "tar")
    run("tar", "-xf", tmp_path / "tree.tar", "-C", m.mnt / "tar")
    os.mkdir(m.mnt / "unzip")
    run("unzip", "-q", tmp_path / "tree.zip", "-d", m.mnt / "unzip")
    run("install", "-m", "644", src / "sub" / "deeper" / "leaf.dat", m.mnt / "installed")
    run("install", "-m", "600", "-D", src / "small.txt", m.mnt / "made" / "by" / "install")

    def check_all(mnt: Path) -> None:
        _check(src, mnt / "cp-r", mtime=None)
        _check(src, mnt / "cp-a")  # modes and mtimes to the nanosecond
        _check(src, mnt / "tar", mtime=SECOND)  # tar keeps whole seconds
        _check(src, mnt / "unzip", modes=False, mtime=None)  # zip: no ns, modes optional
        assert (mnt / "installed").read_bytes() == (src / "sub/deeper/leaf.dat").read_bytes()
        assert stat.S_IMODE(os.stat(mnt / "installed").st_mode) == 0o644
        made = mnt / "made" / "by" / "install"
        assert made.read_bytes() == (src / "small.txt").read_bytes()
        assert stat.S_IMODE(os.stat(made).st_mode) == 0o600

    check_all(m.mnt)
    check_all(_remount(mounts, m).mnt)


def _linked_tree(base: Path) -> Path:
    """:func:`_tree` with symbolic links in it: to a file beside it, up and down the tree,
    to a directory, absolute, dangling, and one with a long odd target."""
    _tree(base)
    links = {"to-small": "small.txt", "sub/up": "../top.bin", "to-sub": "sub",
             "sub/deeper/abs": "/etc/hostname", "other/dangling": "nowhere/at all",
             "long": "x/" * 900 + "\u00e9"}
    for index, (name, target) in enumerate(sorted(links.items())):
        os.symlink(target, base / name)
        os.utime(base / name, ns=(1_400_000_000 * SECOND, 1_400_000_000 * SECOND + index),
                 follow_symlinks=False)
    for directory in (base / "sub" / "deeper", base / "sub", base / "other"):
        # Times of their own again, far from now: rsync leaves alone a directory whose
        # time is within the second of the copy's (on a local disk too).
        os.utime(directory, ns=(1_500_000_000 * SECOND, 1_500_000_009 * SECOND))
    return base


def test_symbolic_links_are_copied_as_links(mounts: Mounts, tmp_path: Path) -> None:
    src = _linked_tree(tmp_path / "src")
    run("tar", "-cf", tmp_path / "tree.tar", "-C", src, ".")
    m = mounts.start()
    run("rsync", "-a", f"{src}/", f"{m.mnt}/rsync/")
    run("cp", "-a", src, m.mnt / "cp-a")
    run("cp", "-r", src, m.mnt / "cp-r")  # -r copies links as links too
    os.mkdir(m.mnt / "tar")
    run("tar", "-xf", tmp_path / "tree.tar", "-C", m.mnt / "tar")
    run(sys.executable, "-c", "import shutil, sys; shutil.copytree(*sys.argv[1:], symlinks=True)",
        src, m.mnt / "copytree")

    def check_all(mnt: Path) -> None:
        for copy, mtime in (("rsync", 1), ("cp-a", 1), ("cp-r", None), ("tar", SECOND),
                            ("copytree", 1)):
            _check(src, mnt / copy, mtime=mtime)
        link = os.lstat(mnt / "rsync" / "long")
        assert (stat.S_IMODE(link.st_mode), link.st_size, link.st_blocks) == (0o777, 1802, 0)
        # The kernel follows them: through the mount, and out of it.
        assert (mnt / "rsync" / "sub" / "up").read_bytes() == (src / "top.bin").read_bytes()
        assert sorted(os.listdir(mnt / "rsync" / "to-sub")) == sorted(os.listdir(src / "sub"))
        assert (mnt / "rsync" / "sub" / "deeper" / "abs").read_bytes() == \
            Path("/etc/hostname").read_bytes()
        fails(errno.ENOENT, os.stat, mnt / "rsync" / "other" / "dangling")

    check_all(m.mnt)
    again = _remount(mounts, m)
    check_all(again.mnt)
    assert again.stop() == 0
    assert b"ok" in run(HYPERFS, "--db", m.db, "fsck").stdout


def test_links_follow_the_rules_of_names(mounts: Mounts, tmp_path: Path) -> None:
    """ln -s, ln -sf, mv, rm, touch -h, chown -h and readlink behave as on a local disk;
    a feed's directory still takes none."""
    m = mounts.start()
    (tmp_path / "f").write_bytes(b"bytes")
    run("cp", tmp_path / "f", m.mnt / "file")
    os.mkdir(m.mnt / "dir")
    run("ln", "-s", "file", m.mnt / "link")
    assert (m.mnt / "link").read_bytes() == b"bytes"
    fails(errno.EEXIST, os.symlink, "x", m.mnt / "file")
    run("ln", "-sfn", "dir", m.mnt / "link")  # replaced: an unlink and a new link
    assert os.readlink(m.mnt / "link") == "dir"
    fails(errno.EISDIR, os.rename, m.mnt / "link", m.mnt / "dir")
    fails(errno.ENOTDIR, os.rename, m.mnt / "dir", m.mnt / "link")
    os.rename(m.mnt / "link", m.mnt / "dir" / "moved")
    run("touch", "-h", "-d", "@1000000000", m.mnt / "dir" / "moved")
    os.chown(m.mnt / "dir" / "moved", 1234, 5678, follow_symlinks=False)
    moved = os.lstat(m.mnt / "dir" / "moved")
    assert (moved.st_mtime, moved.st_uid, moved.st_gid) == (1_000_000_000, 1234, 5678)
    assert os.stat(m.mnt / "dir").st_uid == os.getuid()  # what it points to is untouched
    fails(errno.EINVAL, os.readlink, m.mnt / "file")
    fails(errno.EPERM, functools.partial(os.setxattr, follow_symlinks=False),
          m.mnt / "dir" / "moved", "user.x", b"1")  # as on ext4: user.* on files, dirs only
    feed = os.getxattr(m.mnt / "file", XATTR_ID).decode()
    fails(errno.EPERM, os.symlink, "x", m.mnt / feed / "link")
    fails(errno.EEXIST, os.symlink, "x", m.mnt / ("ab" * 32))
    os.unlink(m.mnt / "dir" / "moved")
    assert os.listdir(m.mnt / "dir") == []
    assert (m.mnt / "file").read_bytes() == b"bytes"


def test_hard_links_are_kept_as_names_of_the_same_feed(mounts: Mounts, tmp_path: Path) -> None:
    """cp -a, tar -x and rsync -H of a tree with hard links: each link is another name of
    the same feed (no byte copied); from then on the names are independent."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(secrets.token_bytes(2 * BLOCK + 1))
    os.link(src / "a", src / "sub" / "b")
    os.link(src / "a", src / "c")
    run("tar", "-cf", tmp_path / "tree.tar", "-C", src, ".")
    m = mounts.start()
    run("cp", "-a", src, m.mnt / "cp-a")
    os.mkdir(m.mnt / "tar")
    run("tar", "-xf", tmp_path / "tree.tar", "-C", m.mnt / "tar")
    run("rsync", "-aH", f"{src}/", f"{m.mnt}/rsync/")
    for copy in ("cp-a", "tar", "rsync"):
        _check(src, m.mnt / copy, mtime=SECOND)
        ids = {os.getxattr(m.mnt / copy / name, XATTR_ID) for name in ("a", "sub/b", "c")}
        assert len(ids) == 1, copy
    assert len(feed_dirs(m.mnt)) == 1
    os.link(m.mnt / "cp-a" / "a", m.mnt / "linked")
    (tmp_path / "other").write_bytes(b"other")
    run("cp", tmp_path / "other", m.mnt / "linked")  # overwriting one name leaves the rest
    assert (m.mnt / "cp-a" / "a").read_bytes() == (src / "a").read_bytes()
    fails(errno.EEXIST, os.link, m.mnt / "linked", m.mnt / "cp-a" / "a")
    fd = os.open(m.mnt / "busy", os.O_WRONLY | os.O_CREAT)
    try:
        fails(errno.ETXTBSY, os.link, m.mnt / "busy", m.mnt / "busy2")
    finally:
        os.close(fd)
    again = _remount(mounts, m)
    _check(src, again.mnt / "tar", mtime=SECOND)


def test_shutil_copy2_and_copytree(mounts: Mounts, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    m = mounts.start()
    code = ("import shutil, sys; shutil.copy2(sys.argv[1], sys.argv[2]); "
            "shutil.copytree(sys.argv[3], sys.argv[4])")
    run(sys.executable, "-c", code, src / "top.bin", m.mnt / "copy2.bin", src, m.mnt / "tree")
    _check(src, m.mnt / "tree")  # copytree uses copy2: modes and ns mtimes, dirs too
    copied, source = os.stat(m.mnt / "copy2.bin"), os.stat(src / "top.bin")
    assert (copied.st_mode, copied.st_mtime_ns) == (source.st_mode, source.st_mtime_ns)
    again = _remount(mounts, m)
    _check(src, again.mnt / "tree")
    assert (again.mnt / "copy2.bin").read_bytes() == (src / "top.bin").read_bytes()
    assert os.stat(again.mnt / "copy2.bin").st_mtime_ns == source.st_mtime_ns


def test_touch_and_truncation_give_empty_names(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start()
    run("touch", m.mnt / "new")
    run("sh", "-c", f": > '{m.mnt}/colon'")
    (tmp_path / "data").write_bytes(b"some bytes")
    run("cp", tmp_path / "data", m.mnt / "emptied")
    feed_id = os.getxattr(m.mnt / "emptied", XATTR_ID).decode()
    run("sh", "-c", f": > '{m.mnt}/emptied'")  # O_TRUNC of a name bound to a feed
    run("cp", tmp_path / "data", m.mnt / "truncated")
    os.truncate(m.mnt / "truncated", 0)
    os.utime(m.mnt / "new", ns=(5 * SECOND, 6 * SECOND))
    run("touch", "-c", m.mnt / "colon")  # an existing name: only its times change

    def check(mnt: Path) -> None:
        for name in ("new", "colon", "emptied", "truncated"):
            assert (mnt / name).read_bytes() == b"", name
            assert os.stat(mnt / name).st_size == 0
            assert os.listxattr(mnt / name) == [XATTR_EMPTY]
            assert os.getxattr(mnt / name, XATTR_EMPTY) == b"1"
            fails(errno.ENODATA, os.getxattr, mnt / name, XATTR_ID)
        assert os.stat(mnt / "new").st_mtime_ns == 6 * SECOND
        assert (mnt / feed_id / ".feed").read_bytes() == b"some bytes"  # kept, under its id

    check(m.mnt)
    check(_remount(mounts, m).mnt)


def _renameat2(old: Path, new: Path, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, os.fsencode(old), at_fdcwd, os.fsencode(new), flags):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(old))


RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2


def test_mv_of_names_and_directories(mounts: Mounts, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    m = mounts.start()
    run("cp", "-a", src, m.mnt / "tree")
    with open(m.mnt / "tree" / "top.bin", "rb") as reader:
        before = os.fstat(reader.fileno()).st_ino
        head = reader.read(1000)
        run("mv", m.mnt / "tree", m.mnt / "moved")  # a directory, with a file open in it
        run("mv", m.mnt / "moved" / "top.bin", m.mnt / "moved" / "sub" / "renamed.bin")
        assert os.fstat(reader.fileno()).st_ino == before  # the inode stays
        assert os.stat(m.mnt / "moved" / "sub" / "renamed.bin").st_ino == before
        assert head + reader.read() == (src / "top.bin").read_bytes()
    os.rename(m.mnt / "moved" / "sub" / "renamed.bin", m.mnt / "moved" / "top.bin")
    _check(src, m.mnt / "moved")
    assert not (m.mnt / "tree").exists()
    # Replacing, refusing to replace, exchanging.
    run("cp", src / "small.txt", m.mnt / "a")
    run("cp", src / "other" / "one", m.mnt / "b")
    fails(errno.EEXIST, _renameat2, m.mnt / "a", m.mnt / "b", RENAME_NOREPLACE)
    _renameat2(m.mnt / "a", m.mnt / "b", RENAME_EXCHANGE)
    assert (m.mnt / "a").read_bytes() == (src / "other" / "one").read_bytes()
    assert (m.mnt / "b").read_bytes() == (src / "small.txt").read_bytes()
    _renameat2(m.mnt / "moved" / "other", m.mnt / "moved" / "sub", RENAME_EXCHANGE)
    assert sorted(os.listdir(m.mnt / "moved" / "other")) == ["deeper", "inner.bin"]
    _renameat2(m.mnt / "moved" / "other", m.mnt / "moved" / "sub", RENAME_EXCHANGE)
    os.rename(m.mnt / "a", m.mnt / "b")  # over an existing name
    names = [entry for entry in os.listdir(m.mnt) if len(entry) != 64]  # not feeds' dirs
    assert sorted(names) == [".status", "b", "moved"]
    # What rename(2) refuses.
    os.mkdir(m.mnt / "emptydir")
    fails(errno.EINVAL, os.rename, m.mnt / "moved", m.mnt / "moved" / "sub" / "inside")
    fails(errno.ENOTEMPTY, os.rename, m.mnt / "emptydir", m.mnt / "moved")
    fails(errno.EISDIR, os.rename, m.mnt / "b", m.mnt / "emptydir")
    fails(errno.ENOTDIR, os.rename, m.mnt / "emptydir", m.mnt / "b")
    fails(errno.EISDIR, os.rename, m.mnt / "b", m.mnt / ("ab" * 32))  # a feed's directory
    fails(errno.EEXIST, os.rename, m.mnt / "b", m.mnt / ("AB" * 32))  # its place
    fails(errno.EEXIST, os.rename, m.mnt / "b", m.mnt / ".status")
    fails(errno.EPERM, os.rename, m.mnt / ".status", m.mnt / "status")
    again = _remount(mounts, m)
    _check(src, again.mnt / "moved")
    assert (again.mnt / "b").read_bytes() == (src / "other" / "one").read_bytes()


def test_cp_over_a_name_binds_it_once_written(mounts: Mounts, tmp_path: Path) -> None:
    first, second = secrets.token_bytes(3 * BLOCK), secrets.token_bytes(2 * BLOCK + 9)
    (tmp_path / "first").write_bytes(first)
    (tmp_path / "second").write_bytes(second)
    m = mounts.start()
    name = m.mnt / "doc"
    run("cp", tmp_path / "first", name)
    os.chmod(name, 0o640)
    os.setxattr(name, "user.note", b"kept")
    old_id = os.getxattr(name, XATTR_ID).decode()
    with open(name, "rb") as early:
        fd = os.open(name, os.O_WRONLY | os.O_TRUNC)  # as `cp` opens an existing target
        try:
            os.write(fd, second[:BLOCK])
            assert name.read_bytes() == first  # readers see the old feed until it is done
            os.write(fd, second[BLOCK:])
        finally:
            os.close(fd)
        assert early.read() == first  # an open reader keeps its feed
    assert name.read_bytes() == second
    second_id = os.getxattr(name, XATTR_ID).decode()  # out now: it outlives its name
    assert os.getxattr(name, "user.note") == b"kept"  # O_TRUNC keeps the inode's metadata
    assert stat.S_IMODE(os.stat(name).st_mode) == 0o640
    run("cp", tmp_path / "first", name)
    assert name.read_bytes() == first
    new_id = os.getxattr(name, XATTR_ID).decode()
    assert new_id == old_id  # the same bytes: the same feed
    assert sorted(feed_dirs(m.mnt)) == sorted([old_id, second_id])  # the replaced feed
    assert (m.mnt / second_id / ".feed").read_bytes() == second  # stays under its id
    run("rm", "-r", m.mnt / second_id)  # until removed by id
    assert sorted(os.listdir(m.mnt)) == sorted([".status", "doc", old_id])
    again = _remount(mounts, m)
    assert (again.mnt / "doc").read_bytes() == first
    assert os.getxattr(again.mnt / "doc", "user.note") == b"kept"


def test_gio_copy_and_writers_that_truncate_late(mounts: Mounts, tmp_path: Path) -> None:
    """GIO (Nautilus) opens an existing target without O_TRUNC, writes a temporary file
    and renames it over the target before closing it."""
    src = _tree(tmp_path / "src")
    m = mounts.start()
    run("gio", "copy", src / "top.bin", m.mnt / "g")
    run("gio", "copy", src / "small.txt", m.mnt / "g")  # over it
    assert (m.mnt / "g").read_bytes() == (src / "small.txt").read_bytes()
    run("gio", "copy", "--preserve", src / "top.bin", m.mnt / "g")
    copied, source = os.stat(m.mnt / "g"), os.stat(src / "top.bin")
    assert (copied.st_mode, copied.st_mtime_ns // SECOND) == (
        source.st_mode, source.st_mtime_ns // SECOND)
    assert (m.mnt / "g").read_bytes() == (src / "top.bin").read_bytes()
    assert not [name for name in os.listdir(m.mnt) if name.startswith(".goutputstream")]
    # Opened without O_TRUNC: a write changes a copy, which the name holds once closed.
    top = (src / "top.bin").read_bytes()
    fd = os.open(m.mnt / "g", os.O_RDWR)
    try:
        os.write(fd, b"x")
        os.fchmod(fd, 0o604)
        assert (m.mnt / "g").read_bytes() == top  # not yet
    finally:
        os.close(fd)
    changed = b"x" + top[1:]
    assert (m.mnt / "g").read_bytes() == changed
    assert stat.S_IMODE(os.stat(m.mnt / "g").st_mode) == 0o604
    fd = os.open(m.mnt / "g", os.O_WRONLY)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, b"new")
        assert (m.mnt / "g").read_bytes() == changed  # not yet
    finally:
        os.close(fd)
    assert (m.mnt / "g").read_bytes() == b"new"
    # A new file renamed while still being written is bound where it went.
    fd = os.open(m.mnt / ".tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        os.write(fd, b"moved")
        os.rename(m.mnt / ".tmp", m.mnt / "g")
        assert (m.mnt / "g").read_bytes() == b"new"  # until it is complete
        os.write(fd, b" while written")
    finally:
        os.close(fd)
    assert sorted(name for name in os.listdir(m.mnt) if len(name) != 64) == [".status", "g"]
    again = _remount(mounts, m)
    assert (again.mnt / "g").read_bytes() == b"moved while written"


def test_tar_of_many_small_files_then_unmount_or_kill(mounts: Mounts, tmp_path: Path) -> None:
    """`tar -x` of 150 small files reads back byte for byte; at the end nothing stays
    stored but the files: each upload took the write stream made ready at the last (its
    data file created in the background), and the one made ready for a file that never
    came goes at unmount, and at the next open after a kill -9. Closed files survive the
    kill (they reach the disk at the next commit; the page cache holds them until then)."""
    src = tmp_path / "many"
    src.mkdir()
    for number in range(150):
        (src / f"f{number:03}").write_bytes(secrets.token_bytes(1 + number * 37))
    run("tar", "-cf", tmp_path / "many.tar", "-C", src, ".")
    m = mounts.start()
    os.mkdir(m.mnt / "many")
    run("tar", "-xf", tmp_path / "many.tar", "-C", m.mnt / "many")
    _check(src, m.mnt / "many", mtime=SECOND)
    assert m.stop() == 0
    fsck = [HYPERFS, "--db", m.db, "fsck"]
    assert run(*fsck).stdout == b"150 feeds, 150 blocks: ok\n"
    assert len(os.listdir(m.db / "data")) == 150  # one data file a feed, no spare
    again = mounts.start(m.db)
    late = {f"late{number}": secrets.token_bytes(100) for number in range(2)}
    for name, data in late.items():
        (again.mnt / name).write_bytes(data)
    assert again.stop(signal.SIGKILL) == -signal.SIGKILL
    assert run(*fsck).stdout == b"152 feeds, 152 blocks: ok\n"
    assert len(os.listdir(m.db / "data")) == 152
    last = mounts.start(m.db)
    _check(src, last.mnt / "many", mtime=SECOND)
    assert {name: (last.mnt / name).read_bytes() for name in late} == late
