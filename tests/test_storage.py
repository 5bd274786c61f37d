"""Block data in files: where blocks land, damage to the data files (found on read, by
fsck, never returned, fetched again), orphan files, and reads into a caller's buffer."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
from crc32c import crc32c

from hyperfs import BlockUnavailable, open_core
from hyperfs.net.node import open_node
from hyperfs.store.blocks import ReadBuffer
from hyperfs.store.layout import LOCATION_VALUE, location_key
from hyperfs.store.store import Store
from hyperfs.testing.disks import fill, small_tmpfs
from hyperfs.testing.network import astart_serve, copy_db
from hyperfs.testing.seeds import seeded_random

ROOT = Path(__file__).resolve().parent.parent
SIZE = 4096
UNIFORM = [os.urandom(SIZE) for _ in range(63)] + [b"last block, shorter"]
MIXED = [os.urandom(n) for n in (10, 5000, 0, 4096, 77, 4096, 1, 9000)]


async def store(path: Path, blocks: list[bytes], name: bytes = b"f") -> tuple[bytes, int]:
    """A feed of ``blocks`` made in the database at ``path``: (id, local number)."""
    async with open_core(path) as core:
        feed = core.add()
        await feed.append(blocks)
        return await feed.finalize(name), feed.num


def place(path: Path, num: int, index: int) -> tuple[Path, int, int]:
    """(data file, offset, length) of a block, read while no core has the database open."""
    db = Store(path)
    try:
        where = db.data.place_of(num, index)
    finally:
        db.close()
    assert where is not None
    return where


def fsck(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hyperfs.cli", "--db", str(path), "fsck", *args],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)


async def test_appended_feed_is_its_bytes_in_order(tmp_path: Path) -> None:
    _feed_id, num = await store(tmp_path, UNIFORM)
    file, offset, length = place(tmp_path, num, 63)
    assert file.read_bytes() == b"".join(UNIFORM)
    assert (offset, length) == (63 * SIZE, len(UNIFORM[-1]))


async def test_puts_in_any_order_land_at_their_place(tmp_path: Path) -> None:
    """A copy filled out of order, last block first, is sparse while it has holes and
    the feed's bytes in order once complete, however the blocks arrived."""
    feed_id, _ = await store(tmp_path / "src", UNIFORM)
    order = list(range(len(UNIFORM) - 1))
    seeded_random().shuffle(order)
    order.insert(0, len(UNIFORM) - 1)  # the last block first: before the slots are known
    async with open_core(tmp_path / "src") as src, open_core(tmp_path / "dst") as dst:
        full, copy = src.get(feed_id), dst.get(feed_id)
        for count, index in enumerate(order):
            assert copy.put(index, UNIFORM[index], full.proof(index))
            if count == len(order) // 2:
                file = dst.store.data.files.path(copy.num)
                assert file.stat().st_blocks * 512 < file.stat().st_size * 0.8  # sparse
        assert [copy.read_local(i) for i in range(len(UNIFORM))] == UNIFORM
        num = copy.num
        assert dst.check().ok
    file, offset, _ = place(tmp_path / "dst", num, 0)
    last = len(UNIFORM[-1])
    assert offset == 4096  # the slots begin on the page after the last block, which came first
    assert file.read_bytes() == UNIFORM[-1] + bytes(4096 - last) + b"".join(UNIFORM[:-1])


async def test_mixed_sizes_round_trip_in_any_order(tmp_path: Path) -> None:
    feed_id, _ = await store(tmp_path / "src", MIXED)
    async with open_core(tmp_path / "src") as src, open_core(tmp_path / "dst") as dst:
        full, copy = src.get(feed_id), dst.get(feed_id)
        for index in seeded_random().sample(range(len(MIXED)), len(MIXED)):
            assert copy.put(index, MIXED[index], full.proof(index))
        assert list(copy.iter_local()) == MIXED and dst.check().ok
    async with open_core(tmp_path / "dst") as dst:
        assert [b async for b in dst.create_read_stream(feed_id)] == MIXED


def flip(file: Path, offset: int) -> None:
    with open(file, "r+b") as out:
        out.seek(offset)
        byte = out.read(1)
        out.seek(offset)
        out.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
async def test_damaged_data_file_is_found_on_read_and_by_fsck(tmp_path: Path,
                                                              damage: str) -> None:
    feed_id, num = await store(tmp_path, UNIFORM)
    file, offset, _ = place(tmp_path, num, 40)
    if damage == "flip":
        flip(file, offset + 1000)
        bad = [40]
        why = "does not match its crc32c"
    else:
        os.truncate(file, offset + 10)
        bad = list(range(40, 64))
        why = "lies past the end of its data file"
    result = fsck(tmp_path, "--quick")
    assert result.returncode == 1 and "block 40 does not match" in result.stdout
    assert why in result.stdout
    async with open_core(tmp_path) as core:
        feed = core.get(feed_id)
        assert list(feed.iter_local(30)) == UNIFORM[30:40]  # stops at the damage
        assert not feed.has(40)
        for index in bad:
            assert feed.read_local(index) is None and not feed.has(index)
            with pytest.raises(BlockUnavailable):
                await feed.get(index, wait=False)
        assert feed.local == len(UNIFORM) - len(bad)
        assert core.check().ok


async def test_fsck_repair_marks_damaged_blocks_missing(tmp_path: Path) -> None:
    feed_id, num = await store(tmp_path, UNIFORM)
    for index in (3, 9):
        file, offset, _ = place(tmp_path, num, index)
        flip(file, offset)
    result = fsck(tmp_path, "--repair")
    assert result.returncode == 0 and "2 repaired" in result.stdout
    assert fsck(tmp_path).returncode == 0
    async with open_core(tmp_path) as core:
        feed = core.get(feed_id)
        assert not feed.has(3) and not feed.has(9) and feed.local == len(UNIFORM) - 2


async def test_forged_block_and_crc_is_caught_by_the_scrub_only(tmp_path: Path) -> None:
    """The threat model: who can write the database can forge a block and its crc32c, and
    reads return it; the SHA-256 scrub of fsck still finds it."""
    _feed_id, num = await store(tmp_path, UNIFORM)
    file, offset, length = place(tmp_path, num, 5)
    forged = bytes(length)
    with open(file, "r+b") as out:
        out.seek(offset)
        out.write(forged)
    db = Store(tmp_path)
    db.db.put(location_key(num, 5), LOCATION_VALUE.pack(offset, length, crc32c(forged)))
    db.close()
    assert fsck(tmp_path, "--quick").returncode == 0
    result = fsck(tmp_path)
    assert result.returncode == 1 and "block 5 does not match its leaf hash" in result.stdout


async def test_damaged_blocks_are_fetched_again_from_a_peer(tmp_path: Path) -> None:
    feed_id, num = await store(tmp_path / "served", UNIFORM)
    copy_db(tmp_path / "served", tmp_path / "copy")
    file, offset, _ = place(tmp_path / "copy", num, 10)
    flip(file, offset + 7)
    os.truncate(file, 60 * SIZE + 1)  # blocks 60 to 63 cut off
    _serve, port = await astart_serve(tmp_path / "served")
    async with open_core(tmp_path / "copy") as core:
        with core.get(feed_id) as feed:
            async with open_node(core, peers=[f"127.0.0.1:{port}"]):
                blocks = [await feed.get(i, timeout=30) for i in range(len(UNIFORM))]
            assert blocks == UNIFORM and feed.local == len(UNIFORM)
        assert core.check().ok
    assert file.read_bytes() == b"".join(UNIFORM)  # fetched again into their places


async def test_orphan_data_file_is_reported_and_repaired(tmp_path: Path) -> None:
    await store(tmp_path, MIXED)
    orphan = tmp_path / "data" / f"{12345:016x}"
    orphan.write_bytes(b"left by nobody")
    result = fsck(tmp_path)
    assert result.returncode == 1 and f"data file {orphan.name} belongs to no feed" in result.stdout
    assert fsck(tmp_path, "--repair").returncode == 0
    assert not orphan.exists() and fsck(tmp_path).returncode == 0


async def test_deleting_a_feed_deletes_its_file(tmp_path: Path) -> None:
    feed_id, num = await store(tmp_path, MIXED)
    file, _, _ = place(tmp_path, num, 1)
    async with open_core(tmp_path) as core:
        await core.remove(feed_id)
        assert not file.exists() and core.check().ok


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MiB tmpfs of the test's own (root only: mounting), unmounted at the end."""
    with small_tmpfs(tmp_path / "disk") as disk:
        yield disk


def test_a_write_on_a_full_disk_fails_and_later_writes_last(small_disk: Path) -> None:
    """LevelDB goes on accepting writes after one failed on a full disk, but loses them
    at the next open (recovery stops at the torn log record): the store must refuse
    until it has reopened, and what it accepts then must last."""
    store = Store(small_disk / "db")
    try:
        with store.batch() as batch:
            batch.put(b"zkept", b"before")
        filler = fill(small_disk)  # the disk, full to the last byte
        with pytest.raises(OSError) as failed, store.batch() as batch:
            batch.put(b"zbig", bytes(1 << 20))  # LevelDB's own log write fails
        assert failed.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as again, store.batch() as batch:
            batch.put(b"zsmall", b"x")  # refused while the reopen cannot be done
        assert again.value.errno == errno.ENOSPC
        filler.unlink()
        with store.batch() as batch:
            batch.put(b"zlate", b"after")
        assert store.get(b"zkept") == b"before"
    finally:
        store.close()
    store = Store(small_disk / "db")
    try:
        assert (store.get(b"zkept"), store.get(b"zlate")) == (b"before", b"after")
        assert store.get(b"zbig") is None and store.get(b"zsmall") is None
    finally:
        store.close()


async def test_a_stream_whose_append_failed_appends_nothing_more(small_disk: Path) -> None:
    """A batch of a write stream lost to a full disk fails the stream for good: were a
    later write appended, the feed would silently miss the lost blocks in its middle."""
    async with open_core(small_disk / "db", durable=False) as core:
        stream = core.create_write_stream(block_size=4096)
        await stream.write(b"a" * 4096)
        await stream.flush()  # one block stored
        filler = fill(small_disk)
        await stream.write(b"b" * (64 << 10))
        with pytest.raises(OSError) as failed:
            await stream.flush()
        assert failed.value.errno == errno.ENOSPC
        filler.unlink()  # room again: still refused, and not half appended
        for attempt in (stream.write(b"c" * 4096), stream.flush(), stream.close()):
            with pytest.raises(OSError) as again:
                await attempt
            assert again.value is failed.value
        assert stream.feed.id is None and stream.feed.local == 1
        assert stream.feed.read_local(0) == b"a" * 4096


async def test_runs_of_blocks_are_read_into_one_buffer(tmp_path: Path) -> None:
    """Feed.read_run: blocks laid end to end from any start, until the bytes wanted, the
    feed's end or the first block not held; a feed put out of order (its blocks not one
    after another in the file) and of mixed sizes too; the buffer grows as needed."""
    feed_id, _ = await store(tmp_path / "src", UNIFORM)
    buffer = ReadBuffer(SIZE)
    async with open_core(tmp_path / "src") as core:
        feed = core.get(feed_id)
        run = feed.read_run(0, 10 * SIZE, buffer)
        assert run.lengths == [SIZE] * 10 and run.data == b"".join(UNIFORM[:10])
        run = feed.read_run(5, 3 * SIZE + 1, buffer)  # one byte more: a fourth block
        assert run.lengths == [SIZE] * 4 and run.data == b"".join(UNIFORM[5:9])
        run = feed.read_run(60, 1 << 20, buffer)  # to the end
        assert run.data == b"".join(UNIFORM[60:]) and not run.damaged
    mixed_id, _ = await store(tmp_path / "mixed", MIXED)
    async with open_core(tmp_path / "mixed") as src, open_core(tmp_path / "dst") as dst:
        full, copy = src.get(mixed_id), dst.get(mixed_id)
        for index in seeded_random().sample(range(len(MIXED)), len(MIXED)):
            if index != 5:
                assert copy.put(index, MIXED[index], full.proof(index))
        run = copy.read_run(0, 1 << 20, buffer)
        assert run.lengths == [len(block) for block in MIXED[:5]]  # block 5 is not held
        assert run.data == b"".join(MIXED[:5]) and not run.damaged
        assert copy.read_run(6, 1 << 20, buffer).data == b"".join(MIXED[6:])
        assert copy.read_run(5, 1 << 20, buffer).lengths == []


@pytest.mark.parametrize("damage", ["flip", "truncate"])
async def test_a_run_stops_at_a_damaged_block(tmp_path: Path, damage: str) -> None:
    feed_id, num = await store(tmp_path, UNIFORM)
    file, offset, _ = place(tmp_path, num, 40)
    if damage == "flip":
        flip(file, offset + 1000)
    else:
        os.truncate(file, offset + 10)
    async with open_core(tmp_path) as core:
        feed = core.get(feed_id)
        run = feed.read_run(30, 1 << 20, ReadBuffer())
        assert run.damaged and run.data == b"".join(UNIFORM[30:40])
        assert not feed.has(40)  # dropped, to be fetched again
        run = feed.read_run(40, 1 << 20, ReadBuffer())
        assert run.lengths == [] and not run.damaged
