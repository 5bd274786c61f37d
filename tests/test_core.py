"""The core over real LevelDB directories: reopening, locks, damage, bad input, memory."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import plyvel
import pytest

from hyperfs import (
    BlockUnavailable,
    Core,
    CorruptDatabase,
    InvalidId,
    StorageLocked,
    open_core,
    parse_id,
)
from hyperfs.store.blocks import sync_and_close
from hyperfs.testing.damage import damage_block

ROOT = Path(__file__).resolve().parent.parent
BLOCKS = [bytes([i]) * (i * 37 % 300) for i in range(50)]


async def make_feed(path: Path, blocks: list[bytes] = BLOCKS) -> bytes:
    async with open_core(path) as core:
        feed = core.add()
        await feed.append(blocks[:10])
        await feed.append(blocks[10:])
        return await feed.finalize(b"file.bin")


async def test_survives_reopen(tmp_path: Path) -> None:
    feed_id = await make_feed(tmp_path)
    async with open_core(tmp_path) as core:
        assert core.check().ok
        assert core.names.feed_of(b"file.bin") == feed_id
        [info] = core.info()
        assert (info.id, info.blocks, info.local) == (feed_id, len(BLOCKS), len(BLOCKS))
        assert [b async for b in core.create_read_stream(feed_id.hex())] == BLOCKS
        assert [b async for b in core.create_read_stream(feed_id, 5, 3)] == BLOCKS[5:8]
        feed = core.get(feed_id)
        assert core.get(feed_id.hex()) is feed and feed.blocks == len(BLOCKS)
        assert await feed.get(49) == BLOCKS[49] and await feed.get(50) is None


async def test_unfinished_feed_is_discarded_on_open(tmp_path: Path) -> None:
    core = Core(tmp_path)
    feed = core.add()
    await feed.append([b"never", b"finalized"])
    core.close()  # as if the process died before finalize
    async with open_core(tmp_path) as core:
        assert core.info() == [] and core.check().ok
        for kind in (b"l", b"d"):  # no block's place, nor (format 1) its data
            assert list(core.store.db.iterator(prefix=kind)) == []
        assert core.store.data.numbers() == []  # its data file is gone too


def test_bad_ids() -> None:
    good = bytes(range(32))
    assert parse_id(good) == good and parse_id(good.hex()) == good
    for bad in (b"", good[:31], good + b"\0", "ab" * 31, "zz" * 32, good.hex() + "0", 5, None):
        with pytest.raises(InvalidId):
            parse_id(bad)  # type: ignore[arg-type]


async def test_core_get_rejects_bad_id(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        with pytest.raises(InvalidId):
            core.get("not an id")


def test_locked_database_names_the_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from hyperfs import Core
            core = Core({str(tmp_path)!r})
            print("ready", flush=True)
            sys.stdin.read()
            core.close()
        """)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StorageLocked) as err:
            Core(tmp_path)
        assert f"pid {holder.pid}" in str(err.value)
        assert str(tmp_path) in str(err.value)
    finally:
        holder.stdin.close()
        holder.wait(30)
    Core(tmp_path).close()  # free again once the holder is gone


@pytest.mark.parametrize("damage", ["CURRENT", "MANIFEST"])
async def test_corrupt_database(tmp_path: Path, damage: str) -> None:
    await make_feed(tmp_path)
    if damage == "CURRENT":
        (tmp_path / "CURRENT").write_bytes(b"\x00garbage\xff\n")
    else:
        for manifest in tmp_path.glob("MANIFEST-*"):
            manifest.write_bytes(b"\x13" * 300)
    with pytest.raises(CorruptDatabase):
        Core(tmp_path)


def test_foreign_leveldb_is_rejected(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path), create_if_missing=True)
    db.put(b"some", b"other application")
    db.close()
    with pytest.raises(CorruptDatabase, match="not a hyperfs database"):
        Core(tmp_path)


async def test_block_damaged_on_disk_is_detected_and_never_returned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed_id = await make_feed(tmp_path)
    damage_block(tmp_path, feed_id, 7, lambda _old: b"evil" + BLOCKS[7])
    damage_block(tmp_path, feed_id, 20, lambda _old: BLOCKS[21])
    async with open_core(tmp_path) as core:
        report = core.check()
        assert not report.ok and any("block 7 " in p for p in report.problems)
        feed = core.get(feed_id)
        assert feed.has(7) and feed.has(20)
        with caplog.at_level(logging.WARNING, logger="hyperfs.feed"), pytest.raises(
            BlockUnavailable
        ):
            await feed.get(7, wait=False)
        assert "block 7 is damaged" in caplog.text
        assert not feed.has(7) and feed.local == len(BLOCKS) - 1
        with pytest.raises(BlockUnavailable):
            await feed.get(7, wait=False)  # stays missing, still never returned
        assert feed.read_local(7) is None
        assert list(feed.iter_local(10)) == BLOCKS[10:20]  # the scan stops at the damage
        assert not feed.has(20)
        assert core.check().ok  # marked missing: consistent again
    async with open_core(tmp_path) as core:
        feed = core.get(feed_id)
        assert not feed.has(7) and not feed.has(20) and feed.local == len(BLOCKS) - 2


async def test_fsck_repair_marks_damage_missing(tmp_path: Path) -> None:
    feed_id = await make_feed(tmp_path)
    damage_block(tmp_path, feed_id, 3, lambda _old: b"x")
    result = subprocess.run(
        [sys.executable, "-m", "hyperfs.cli", "--db", str(tmp_path), "fsck"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1 and "block 3 does not match" in result.stdout
    async with open_core(tmp_path) as core:
        report = core.check(repair=True)
        assert report.ok and report.repaired == 1
        assert not core.get(feed_id).has(3) and core.check().ok


MEMORY_CHILD = textwrap.dedent("""
    import json, os, sys, tempfile, tracemalloc, trio
    from hyperfs import open_core
    blocks, size = int(sys.argv[1]), int(sys.argv[2])
    pool = os.urandom(1 << 20)
    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            async with open_core(tmp) as core:
                tracemalloc.start()
                async with core.create_write_stream() as stream:
                    for i in range(blocks):
                        start = i * 4099 % ((1 << 20) - size)
                        await stream.write(i.to_bytes(8, "big") + pool[start:start + size])
                count = 0
                async for block in core.create_read_stream(stream.id):
                    count += 1
                peak = tracemalloc.get_traced_memory()[1]
                assert count == blocks
                print(json.dumps({"peak": peak}))
    trio.run(main)
""")


def _peak(blocks: int, size: int) -> int:
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(blocks), str(size)],
                         cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)["peak"]


def test_memory_is_flat_as_the_feed_grows() -> None:
    """10x more blocks (16 KiB each: 5 MB vs 50 MB) must not raise Python's peak memory."""
    small, large = _peak(300, 16 << 10), _peak(3000, 16 << 10)
    assert large < small * 1.2 + (256 << 10), (small, large)


@pytest.mark.parametrize("durable", [True, False])
async def test_a_core_that_is_not_durable_leaves_its_syncs_to_commit(
        tmp_path: Path, durable: bool) -> None:
    """A durable finalize syncs its feed's file itself; otherwise the file waits for the
    next commit, which syncs it (and then nothing is left to sync)."""
    async with open_core(tmp_path, durable=durable) as core:
        first = core.add()
        await first.append(BLOCKS)
        feed_id = await first.finalize(b"file.bin")
        pending = core.store.data.files.take_written()
        assert len(pending) == (0 if durable else 1)
        sync_and_close(pending)
        second = core.add()
        await second.append(BLOCKS[:3])
        await second.finalize(b"other.bin")
        await core.commit()
        assert core.store.data.files.take_written() == []
        await core.commit()  # nothing written since: still a valid commit
    async with open_core(tmp_path) as core:
        assert core.names.feed_of(b"file.bin") == feed_id
        assert [b async for b in core.create_read_stream(feed_id)] == BLOCKS
