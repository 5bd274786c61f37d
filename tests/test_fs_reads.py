"""Reading through a real mount the way programs do: mmap, SQLite, re-reads from the
kernel's page cache, remote feeds, metadata storms that must move no block, statfs.

Files whose size is exact are read through the page cache (keep_cache for a feed's
files), others with direct I/O (hyperfs.fs.reads.file_info); ``fincore`` (util-linux)
shows which pages the kernel holds, so a test can tell a cached read from a direct one.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from hyperfs.fs.mount import READ_AHEAD_KB
from hyperfs.testing.damage import damage_block, flip_a_byte
from hyperfs.testing.mounts import Mounted, Mounts, run
from hyperfs.testing.network import store_feed
from hyperfs.testing.requirements import FUSE, fuse_available, require
from hyperfs.testing.storms import store_remote_feeds

require(fuse_available(), FUSE)

BLOCK = 64 * 1024
CONNECT_WAIT = 20.0


def _stored(m: Mounted, tmp_path: Path, size: int, name: str = "data.bin") -> tuple[bytes, str]:
    """A random file of ``size`` bytes cp'ed into the mount: its bytes and feed id."""
    source = tmp_path / name
    source.write_bytes(secrets.token_bytes(size))
    run("cp", source, m.mnt / name)
    return source.read_bytes(), os.getxattr(m.mnt / name, "user.hyperfs.id").decode()


def _mapped(path: Path) -> bytes:
    """The whole file through a shared read-only mmap (what ENODEV refused before)."""
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as view:
        assert len(view) == os.fstat(file.fileno()).st_size
        slices = [view[i : i + 7777] for i in range(0, len(view), 7777)]
        assert b"".join(slices) == view[:]
        return view[:]


def _cached_pages(path: Path) -> int:
    """How many of the file's pages the kernel's page cache holds (fincore)."""
    return int(run("fincore", "--bytes", "--noheadings", "--output", "PAGES",
                   path).stdout.split()[0])


def test_mmap_of_a_stored_file(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start()
    data, feed_id = _stored(m, tmp_path, 5 * BLOCK + 12345)
    feed_dir = m.mnt / feed_id
    for _ in range(2):  # the second time after a remount: the sizes are learned afresh
        assert _mapped(m.mnt / "data.bin") == data
        assert _mapped(feed_dir / ".feed") == data
        assert _mapped(feed_dir / "5") == data[5 * BLOCK :]
        with open(feed_dir / ".feed", "rb") as file, \
                mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ) as view:
            assert view[3 * BLOCK - 10 : 3 * BLOCK + 10] == data[3 * BLOCK - 10 : 3 * BLOCK + 10]
            assert view[-1:] == data[-1:]
        assert m.stop() == 0
        m = mounts.start(m.db, m.mnt)


def test_sqlite_opens_a_database_from_the_mount(mounts: Mounts, tmp_path: Path) -> None:
    source = tmp_path / "notes.sqlite"
    with sqlite3.connect(source) as db:
        db.execute("create table notes (id integer primary key, body text)")
        db.executemany("insert into notes (body) values (?)",
                       [(f"note {i} " + "x" * (i % 500),) for i in range(5000)])
    db.close()
    m = mounts.start()
    run("cp", source, m.mnt)
    for _ in range(2):  # and after a remount
        uri = f"file:{m.mnt / 'notes.sqlite'}?mode=ro&immutable=1"
        with sqlite3.connect(uri, uri=True) as ro:
            assert ro.execute("select count(*), sum(length(body)) from notes").fetchone() == (
                5000, sum(len(f"note {i} ") + i % 500 for i in range(5000)))
            assert ro.execute("select body from notes where id = 4321").fetchone() == (
                "note 4320 " + "x" * 320,)
            assert ro.execute("pragma integrity_check").fetchone() == ("ok",)
        ro.close()
        assert m.stop() == 0
        m = mounts.start(m.db, m.mnt)


def test_re_reads_come_from_the_page_cache(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start()
    data, feed_id = _stored(m, tmp_path, 20 * BLOCK + 1)
    whole = m.mnt / feed_id / ".feed"
    assert whole.read_bytes() == data
    assert _cached_pages(whole) == (len(data) + 4095) // 4096  # kept from that read
    assert whole.read_bytes() == data  # ... and kept across opens (keep_cache)
    assert _cached_pages(whole) == (len(data) + 4095) // 4096
    assert run("cat", whole).stdout == data
    with open(whole, "rb") as file:  # random reads within the cached pages
        for offset in (0, BLOCK - 3, 7 * BLOCK + 99, len(data) - 1):
            file.seek(offset)
            assert file.read(4000) == data[offset : offset + 4000]


VARIED = [b"a" * 10, secrets.token_bytes(5000), b"", b"z", secrets.token_bytes(70_000),
          secrets.token_bytes(300)]
"""Blocks of varying size: every size guessed from block 0 (10 bytes) is wrong."""


def test_guessed_sizes_never_serve_wrong_bytes(mounts: Mounts, tmp_path: Path) -> None:
    """A listing first (its guesses are what the kernel caches), then every file read,
    mapped and re-read: the page cache only ever holds the real bytes."""
    db = tmp_path / "db"
    feed_id = trio.run(store_feed, db, VARIED).hex()
    m = mounts.start(db)
    feed_dir = m.mnt / feed_id
    guesses = {line.split()[-1]: int(line.split()[4])
               for line in run("ls", "-la", feed_dir).stdout.decode().splitlines()[1:]}
    assert guesses["1"] == 10  # a guess, and a wrong one
    for _ in range(2):
        for index, block in enumerate(VARIED):
            assert (feed_dir / str(index)).read_bytes() == block
            if block:
                assert _mapped(feed_dir / str(index)) == block
        assert [os.stat(feed_dir / str(i)).st_size for i in range(len(VARIED))] == list(
            map(len, VARIED))
        assert (feed_dir / ".feed").read_bytes() == b"".join(VARIED)  # direct I/O
        assert run("cat", feed_dir / ".feed").stdout == b"".join(VARIED)


MIB = 1 << 20


def test_reads_cut_blocks_anywhere(mounts: Mounts, tmp_path: Path) -> None:
    """Whole-feed reads of held blocks at once (fs.reads.WholeReader): blocks of 3 MiB
    and 5 bytes (each READ of 1 MiB lies inside one, kept from one READ to the next),
    and of 100,000 bytes (READs begin and end inside blocks); every byte right, read in
    order, backwards with the cached pages dropped, and mapped."""
    for size in (3 * MIB + 5, 100_000):
        blocks = [secrets.token_bytes(size) for _ in range(4)] + [secrets.token_bytes(777)]
        data = b"".join(blocks)
        db = tmp_path / f"db{size}"
        feed_id = trio.run(store_feed, db, blocks).hex()
        m = mounts.start(db)
        whole = m.mnt / feed_id / ".feed"
        assert whole.read_bytes() == data
        with open(whole, "rb", buffering=0) as file:
            os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            assert _cached_pages(whole) == 0
            for offset in reversed(range(0, len(data), MIB)):
                assert os.pread(file.fileno(), MIB, offset) == data[offset : offset + MIB]
        assert _mapped(whole) == data
        assert m.stop() == 0


def test_the_mount_reads_ahead_a_mebibyte(mounts: Mounts) -> None:
    """As root, the mount widens its read-ahead window from FUSE's 128 KiB to
    READ_AHEAD_KB once INIT is answered, so reads through the page cache reach it in
    READs of 1 MiB (a mount by another user keeps the kernel's window)."""
    if os.geteuid() != 0:
        pytest.skip("only root may set a mount's read-ahead")
    m = mounts.start()
    device = os.stat(m.mnt).st_dev
    window = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
    assert int(window.read_text()) == READ_AHEAD_KB


def test_a_damaged_block_is_never_read_through_the_mount(mounts: Mounts,
                                                         tmp_path: Path) -> None:
    """A block whose bytes changed on disk fails its crc32c in the read of a run: the
    blocks before it are returned, it is not (no peer has it: ETIMEDOUT), and it is
    marked missing, to be fetched again."""
    blocks = [secrets.token_bytes(BLOCK) for _ in range(40)]
    db = tmp_path / "db"
    feed_id = trio.run(store_feed, db, blocks)
    damage_block(db, feed_id, 20, flip_a_byte)
    m = mounts.start(db, None, "--timeout", "1")
    feed_dir = m.mnt / feed_id.hex()
    with open(feed_dir / ".feed", "rb", buffering=0) as file:
        assert os.pread(file.fileno(), 20 * BLOCK, 0) == b"".join(blocks[:20])
        with pytest.raises(OSError) as failed:
            os.pread(file.fileno(), BLOCK, 20 * BLOCK)
    assert failed.value.errno == errno.ETIMEDOUT
    assert os.getxattr(feed_dir, "user.hyperfs.local") == b"39"


def _status(m: Mounted) -> Any:
    """The mount's .status, as parsed JSON."""
    return json.loads((m.mnt / ".status").read_bytes())


def _connected(m: Mounted) -> None:
    """Wait (bounded) until the mount has a peer connection up."""
    deadline = time.monotonic() + CONNECT_WAIT
    while not _status(m)["network"]["peers"]:
        assert time.monotonic() < deadline, f"no peer within {CONNECT_WAIT} s"
        time.sleep(0.05)


def test_remote_feed_reads_through_the_page_cache(mounts: Mounts, tmp_path: Path) -> None:
    seeder = mounts.start(None, None, "--listen", "127.0.0.1:0")
    data, feed_id = _stored(seeder, tmp_path, 30 * BLOCK + 4321)
    assert seeder.address is not None
    reader = mounts.start(None, None, "--peer", seeder.address, "--timeout", "20")
    feed_dir = reader.mnt / feed_id
    assert (feed_dir / "7").read_bytes() == data[7 * BLOCK : 8 * BLOCK]  # fetched
    assert _mapped(feed_dir / "7") == data[7 * BLOCK : 8 * BLOCK]  # now local: cached
    assert (feed_dir / ".feed").read_bytes() == data  # fetched in order: sizes now exact
    assert os.getxattr(feed_dir, "user.hyperfs.local") == b"31"
    assert run("cat", feed_dir / ".feed").stdout == data
    assert _cached_pages(feed_dir / ".feed") == (len(data) + 4095) // 4096
    assert _mapped(feed_dir / ".feed") == data
    assert b"".join((feed_dir / str(i)).read_bytes() for i in range(31)) == data


FEEDS = 1000
BLOCKS = 4
BLOCK_BYTES = 4096


def test_metadata_storms_move_no_block(mounts: Mounts, tmp_path: Path) -> None:
    """ls -lR, find, du and stat over 1,000 remote feeds (even ones with no block here,
    odd ones with their first and last) answer from what is known: the seeder, connected
    all along, is told of no feed, asked for nothing and sends nothing."""
    ids = trio.run(store_remote_feeds, tmp_path / "seed", tmp_path / "db", FEEDS)
    seeder = mounts.start(tmp_path / "seed", None, "--listen", "127.0.0.1:0")
    assert seeder.address is not None
    reader = mounts.start(tmp_path / "db", None, "--peer", seeder.address, "--timeout", "60")
    _connected(reader)
    listing = run("ls", "-lR", reader.mnt).stdout.decode()
    found = run("find", reader.mnt, "-type", "f", "-printf", "%s %b %P\n").stdout.decode()
    usage = run("du", "-s", "--block-size=1", reader.mnt).stdout.decode()
    stats = [os.stat(reader.mnt / feed_id.hex() / name)
             for feed_id in ids[:50] for name in (".feed", *map(str, range(BLOCKS)))]

    status = _status(reader)
    assert {f["id"]: (f["blocks"], f["local"], f["waiting"])
            for f in status["feeds"]} == {
        feed_id.hex(): (BLOCKS, 2 * (n % 2), 0) for n, feed_id in enumerate(ids)}
    network = status["network"]
    assert network["feeds"] == []  # no feed even named to the peer: listings only peek
    assert [(p["blocks_in"], p["inflight"])
            for p in network["peers"]] == [(0, 0)]
    assert [p["blocks_out"] for p in _status(seeder)["network"]["peers"]] == [0]

    assert listing.count("\n-r--r--r-- ") == FEEDS * BLOCKS  # every block file listed
    sizes = {}
    for line in found.splitlines():
        size, used, path = line.split(" ", 2)
        sizes[path] = (int(size), int(used))
    assert len(sizes) == FEEDS * BLOCKS + FEEDS + 1  # blocks, .feed files, .status
    for n, feed_id in enumerate(ids):
        held = BLOCK_BYTES // 512 if n % 2 else 0
        assert sizes[f"{feed_id.hex()}/0"] == (BLOCK_BYTES if n % 2 else 0, held)
        assert sizes[f"{feed_id.hex()}/{BLOCKS - 1}"][1] == held
    assert int(usage.split()[0]) >= FEEDS // 2 * 2 * BLOCK_BYTES
    assert all(stat.st_size in (0, BLOCK_BYTES, BLOCKS * BLOCK_BYTES) for stat in stats)


def test_statfs_is_the_database_disk(mounts: Mounts) -> None:
    m = mounts.start()
    mounted, disk = os.statvfs(m.mnt), os.statvfs(m.db)
    assert (mounted.f_bsize, mounted.f_frsize, mounted.f_blocks) == (
        disk.f_bsize, disk.f_frsize, disk.f_blocks)
    slack = (256 << 20) // disk.f_frsize  # other processes write to this disk meanwhile
    assert abs(mounted.f_bavail - disk.f_bavail) < slack
    assert abs(mounted.f_bfree - disk.f_bfree) < slack
    assert mounted.f_namemax == 255
    df = run("df", "--output=source,size", m.mnt).stdout.decode().split()
    assert df[2] == "hyperfs" and int(df[3]) == disk.f_blocks * disk.f_frsize // 1024
