"""Names as a tree of files and directories (hyperfs.feeds.names), on a real LevelDB."""

from __future__ import annotations

import os
from pathlib import Path

import plyvel
import pytest

from hyperfs import open_core
from hyperfs.base.errors import (
    CorruptDatabase,
    DirectoryNotEmpty,
    InvalidName,
    IsADirectory,
    NameTaken,
    NoSuchName,
    NotADirectory,
)
from hyperfs.feeds.names import Names, XattrTooLarge, new_entry
from hyperfs.store.entry import MAX_XATTRS_SIZE, PATH_MAX, Entry, Kind, decode, encode
from hyperfs.store.migrate import open_store
from hyperfs.store.store import Store


@pytest.fixture
def store(tmp_path: Path):
    store = Store(tmp_path / "db")
    yield store
    store.close()


def tree(names: Names, directory: bytes = b"") -> dict[bytes, object]:
    """The whole tree under ``directory``: files map to their feed id, directories to
    their own tree."""
    return {name: tree(names, (directory + b"/" if directory else b"") + name)
            if entry.is_dir else entry.feed_id
            for name, entry in names.children(directory)}


def make(names: Names, *paths: bytes) -> None:
    """Directories end with b"/"; files are bound to a feed id made of their path."""
    for path in paths:
        if path.endswith(b"/"):
            names.add(path[:-1], new_entry(Kind.DIR, 0o755))
        else:
            names.add(path, new_entry(Kind.FILE, 0o644, path.ljust(32, b".")[:32]))


def test_entry_round_trips_every_field() -> None:
    entry = Entry(Kind.FILE, 0o4755, 1000, 100, 1, 2**63, 3, b"\x01" * 32,
                  ((b"user.a", b""), (b"user.b", b"\xff" * 300)))
    assert decode(encode(entry)) == entry
    empty = Entry(Kind.DIR, 0o700, 0, 0, 0, 0, 0)
    assert decode(encode(empty)) == empty
    link = Entry(Kind.LINK, 0o777, 5, 6, 7, 8, 9, None, ((b"user.c", b"v"),), b"../t\xff" * 800)
    assert decode(encode(link)) == link


def test_a_damaged_link_record_is_reported_as_such() -> None:
    record = encode(Entry(Kind.LINK, 0o777, 0, 0, 0, 0, 0, target=b"target"))
    with pytest.raises(CorruptDatabase, match="link target"):
        decode(record[:-1])


def test_symlinks_are_names_with_a_target(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    names = Names(store)
    make(names, b"d/", b"f")
    made = names.symlink(b"d/up", b"../f")
    assert (made.kind, made.mode, made.target) == (Kind.LINK, 0o777, b"../f")
    names.symlink(b"dangling", b"/nowhere/at all", uid=7, gid=8)
    for bad in (b"", b"a\0b", b"x" * PATH_MAX):
        with pytest.raises(InvalidName):
            names.symlink(b"bad", bad)
    with pytest.raises(NameTaken):
        names.symlink(b"f", b"x")
    with pytest.raises(IsADirectory):  # a link cannot replace a directory, nor the reverse
        names.rename(b"dangling", b"d")
    with pytest.raises(NotADirectory):
        names.rename(b"d", b"dangling")
    names.rename(b"d/up", b"f")  # over a file, as `mv` does
    assert names.files() == {}  # a link is bound to no feed
    store.close()
    store = Store(tmp_path / "db")
    again = Names(store)
    assert (again.require(b"f").target, again.require(b"dangling").uid) == (b"../f", 7)
    assert again.unlink(b"f").is_link
    store.close()


def test_children_lists_one_level_and_skips_subtrees(store: Store) -> None:
    names = Names(store)
    make(names, b"a/", b"a/x", b"a/sub/", b"a/sub/deep", b"a/sub-2", b"b", b"a0")
    assert [name for name, _ in names.children(b"")] == [b"a", b"a0", b"b"]
    assert [name for name, _ in names.children(b"a")] == [b"sub", b"sub-2", b"x"]
    assert tree(names) == {b"a": {b"sub": {b"deep": b"a/sub/deep".ljust(32, b".")},
                                  b"sub-2": b"a/sub-2".ljust(32, b"."),
                                  b"x": b"a/x".ljust(32, b".")},
                           b"a0": b"a0".ljust(32, b"."), b"b": b"b".ljust(32, b".")}


@pytest.mark.parametrize(("path", "error"), [
    (b"", InvalidName), (b".", InvalidName), (b"..", InvalidName), (b"a\0b", InvalidName),
    (b"x" * 256, InvalidName), (b"ab" * 32, NameTaken), (b"missing/f", NoSuchName),
    (b"file/f", NotADirectory), (b"file", NameTaken), (b"dir", NameTaken),
])
def test_new_names_are_checked(store: Store, path: bytes, error: type[Exception]) -> None:
    names = Names(store)
    make(names, b"file", b"dir/")
    with pytest.raises(error):
        names.add(path, new_entry(Kind.FILE, 0o644))
    assert tree(names) == {b"dir": {}, b"file": b"file".ljust(32, b".")}


def test_hex_is_only_reserved_at_the_top(store: Store) -> None:
    names = Names(store)
    make(names, b"dir/", b"dir/" + b"ab" * 32)
    assert names.feed_of(b"dir/" + b"ab" * 32) is not None


def test_unlink_and_rmdir_follow_posix(store: Store) -> None:
    names = Names(store)
    make(names, b"d/", b"d/f", b"e/")
    with pytest.raises(IsADirectory):
        names.unlink(b"d")
    with pytest.raises(NotADirectory):
        names.rmdir(b"d/f")
    with pytest.raises(DirectoryNotEmpty):
        names.rmdir(b"d")
    with pytest.raises(NoSuchName):
        names.unlink(b"nope")
    assert names.unlink(b"d/f").feed_id == b"d/f".ljust(32, b".")
    names.rmdir(b"d")
    names.rmdir(b"e")
    assert tree(names) == {}


def test_rename_moves_a_whole_directory_at_once(store: Store) -> None:
    names = Names(store)
    make(names, b"src/", b"src/a", b"src/in/", b"src/in/b", b"src-x", b"dst/")
    names.rename(b"src", b"dst/moved")
    assert tree(names) == {b"dst": {b"moved": {b"a": b"src/a".ljust(32, b"."),
                                              b"in": {b"b": b"src/in/b".ljust(32, b".")}}},
                           b"src-x": b"src-x".ljust(32, b".")}


def test_rename_replacing_and_its_errors(store: Store) -> None:
    names = Names(store)
    make(names, b"f", b"g", b"d/", b"d/inner", b"empty/", b"e2/")
    with pytest.raises(NameTaken):
        names.rename(b"f", b"g", noreplace=True)
    with pytest.raises(IsADirectory):
        names.rename(b"f", b"empty")
    with pytest.raises(NotADirectory):
        names.rename(b"empty", b"f")
    with pytest.raises(DirectoryNotEmpty):
        names.rename(b"e2", b"d")
    with pytest.raises(InvalidName):
        names.rename(b"d", b"d/inside")
    with pytest.raises(NoSuchName):
        names.rename(b"nope", b"x")
    with pytest.raises(NoSuchName):
        names.rename(b"f", b"nodir/x")
    names.rename(b"f", b"g")  # over a file: the old binding of g is gone
    names.rename(b"e2", b"empty")  # over an empty directory
    assert tree(names) == {b"d": {b"inner": b"d/inner".ljust(32, b".")}, b"empty": {},
                           b"g": b"f".ljust(32, b".")}
    names.rename(b"g", b"g")  # the same name: nothing happens
    assert names.feed_of(b"g") == b"f".ljust(32, b".")


def test_rename_exchange_swaps_files_and_directories(store: Store) -> None:
    names = Names(store)
    make(names, b"a/", b"a/x", b"b", b"c/", b"c/y/", b"c/y/z")
    names.rename(b"a", b"b", exchange=True)
    assert tree(names) == {b"a": b"b".ljust(32, b"."), b"b": {b"x": b"a/x".ljust(32, b".")},
                           b"c": {b"y": {b"z": b"c/y/z".ljust(32, b".")}}}
    names.rename(b"b", b"c", exchange=True)
    assert tree(names)[b"b"] == {b"y": {b"z": b"c/y/z".ljust(32, b".")}}
    with pytest.raises(NoSuchName):
        names.rename(b"a", b"nothing", exchange=True)
    with pytest.raises(InvalidName):
        names.rename(b"b", b"b/y", exchange=True)


def test_attributes_and_xattrs_persist(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    names = Names(store)
    make(names, b"f")
    names.set_attrs(b"f", mode=0o100600, uid=7, gid=8, atime_ns=5, mtime_ns=6)
    names.set_xattr(b"f", b"user.tag", b"v1")
    names.set_xattr(b"f", b"user.tag", b"v2")
    names.set_xattr(b"f", b"user.other", b"")
    assert names.remove_xattr(b"f", b"user.other")
    assert not names.remove_xattr(b"f", b"user.other")
    with pytest.raises(XattrTooLarge):
        names.set_xattr(b"f", b"user.big", bytes(MAX_XATTRS_SIZE))
    store.close()
    entry = Names(store := Store(tmp_path / "db")).require(b"f")
    store.close()
    assert (entry.mode, entry.uid, entry.gid, entry.atime_ns, entry.mtime_ns) == (
        0o600, 7, 8, 5, 6)
    assert entry.xattrs == ((b"user.tag", b"v2"),)


def test_set_file_makes_and_empties_files_but_never_replaces_a_directory(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    names = Names(store)
    make(names, b"f", b"dir/")
    empty = new_entry(Kind.FILE, 0o600)
    names.set_file(b"new", empty, replace=False)
    with pytest.raises(NameTaken):
        names.set_file(b"f", empty, replace=False)
    names.set_file(b"f", empty, replace=True)  # `: > f`: the name now holds no feed
    with pytest.raises(IsADirectory):
        names.set_file(b"dir", empty, replace=True)
    with pytest.raises(NoSuchName):
        names.set_file(b"missing/f", empty, replace=True)
    store.committer()()
    store.close()
    names = Names(store := Store(tmp_path / "db"))
    assert tree(names) == {b"dir": {}, b"f": None, b"new": None}
    assert names.require(b"new").mode == 0o600
    store.close()


async def test_finalize_binds_a_path_and_replaces_only_when_asked(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        core.names.add(b"dir", new_entry(Kind.DIR, 0o755))
        first = core.add()
        await first.append(b"one")
        await first.finalize(b"dir/f")
        second = core.add()
        await second.append(b"two")
        with pytest.raises(NameTaken):
            await second.finalize(b"dir/f")
        assert second.id is None and core.names.feed_of(b"dir/f") == first.id
        await second.finalize(b"dir/f", replace=True)
        assert core.names.feed_of(b"dir/f") == second.id
        assert core.stored(first.id)  # the replaced feed stays, under its id
        assert core.check().ok


def test_names_from_before_records_are_migrated(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path), create_if_missing=True)
    db.put(b"!format", b"hyperfs 1")
    db.put(b"nold.bin", b"\x07" * 32)
    db.close()
    store, _moved = open_store(tmp_path)
    try:
        entry = Names(store).require(b"old.bin")
        assert (entry.kind, entry.feed_id, entry.mode, entry.uid) == (
            Kind.FILE, b"\x07" * 32, 0o644, os.getuid())
        assert list(store.db.iterator(prefix=b"n")) == []
    finally:
        store.close()
