"""Databases of format 1 (block data inside LevelDB) open: migrated in place, resumably.

A format 1 database is made the way the code of that format made it: feeds are stored by
today's code, then rewritten with plyvel directly into format 1's layout (every block's
bytes under its ``d`` key, no ``l``/``s`` keys, no data files, ``!format`` = hyperfs 1).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import plyvel

from hyperfs import open_core
from hyperfs.store.layout import (
    DATA,
    FORMAT,
    FORMAT_KEY,
    LEGACY_FORMAT,
    LOCATION,
    PAGE,
    SLOTS,
    block_key,
    feed_number,
    key_index,
)
from hyperfs.store.migrate import open_store
from hyperfs.store.store import Store
from hyperfs.testing.network import make_blocks, store_partial
from hyperfs.testing.seeds import seeded_random

ROOT = Path(__file__).resolve().parent.parent
FULL = [bytes([i % 251]) * 4096 for i in range(300)] + [b"short tail"]
MIXED = make_blocks(120, seed=11, max_size=9000)


async def make_format1(path: Path) -> dict[bytes, list[bytes | None]]:
    """A format 1 database at ``path``: a full feed, a named one of mixed sizes, a copy
    held in part (puts out of order), and a writable feed never finalized. Returns what
    each finalized feed holds (None where a block is missing)."""
    expect: dict[bytes, list[bytes | None]] = {}
    async with open_core(path / "source") as source, open_core(path / "db") as core:
        for blocks, name in ((FULL, b"full.bin"), (MIXED, b"dir-less name")):
            feed = core.add()
            await feed.append(blocks)
            expect[await feed.finalize(name)] = list(blocks)
            other = source.add()
            await other.append(blocks[::-1])
            expect[await other.finalize()] = [None] * len(blocks)
        partial = [key for key, held in expect.items() if held[0] is None]
        for feed_id in partial:
            with source.hold(feed_id) as full:
                whole = [full.read_local(i) for i in range(full.blocks or 0)]
            indexes = seeded_random().sample(range(len(whole)), len(whole) // 2)
            await store_partial(core, source, feed_id, indexes)
            expect[feed_id] = [whole[i] if i in indexes else None for i in range(len(whole))]
        await core.add().append([b"never", b"finalized"])  # pending, as a crash leaves it
    to_format1(path / "db")
    shutil.rmtree(path / "source")
    return expect


def to_format1(path: Path) -> None:
    """Rewrite a database of today's format in format 1's layout, with plyvel directly."""
    store = Store(path)
    blocks = [(num, index, store.data.read_raw(num, location))
              for num in store.numbers(LOCATION) for index, location in store.data.locations(num)]
    store.close()
    shutil.rmtree(path / "data")
    db = plyvel.DB(str(path))
    with db.write_batch(transaction=True) as batch:
        for kind in (LOCATION, SLOTS):
            for key in db.iterator(prefix=kind, include_value=False):
                batch.delete(key)
        for num, index, data in blocks:
            batch.put(block_key(num, index), data)
        batch.put(FORMAT_KEY, LEGACY_FORMAT)
    db.close()


def assert_each_block_in_one_place(path: Path) -> bool:
    """As a killed migration leaves it: every held block is under exactly one of its ``d``
    key or its ``l`` key, never both, never neither. Returns whether it is done."""
    db = plyvel.DB(str(path))
    try:
        places: dict[tuple[int, int], bytes] = {}
        for kind in (DATA, LOCATION):
            for key in db.iterator(prefix=kind, include_value=False):
                spot = (feed_number(key), key_index(key))
                assert spot not in places, f"block {spot} is both in d and l keys"
                places[spot] = kind
        held = set()
        for key, page in db.iterator(prefix=PAGE):
            num, first = feed_number(key), key_index(key) * len(page) * 8
            held |= {(num, first + bit) for bit in range(len(page) * 8)
                     if page[bit // 8] & (0x80 >> (bit % 8))}
        assert held == set(places), "a held block is in neither place"
        return db.get(FORMAT_KEY) == FORMAT
    finally:
        db.close()


async def assert_migrated(path: Path, expect: dict[bytes, list[bytes | None]]) -> None:
    async with open_core(path) as core:
        report = core.check()
        assert report.ok, report.problems
        assert list(core.store.db.iterator(prefix=DATA)) == []
        assert core.store.db.get(FORMAT_KEY) == FORMAT
        for feed_id, blocks in expect.items():
            with core.get(feed_id) as feed:
                assert [feed.read_local(i) for i in range(len(blocks))] == blocks
        assert core.names.feed_of(b"full.bin") is not None
    store, moved = open_store(path)
    assert moved == 0  # nothing left to move
    store.close()


async def test_format1_database_is_migrated_on_open(tmp_path: Path) -> None:
    expect = await make_format1(tmp_path)
    db = tmp_path / "db"
    assert not assert_each_block_in_one_place(db)
    result = subprocess.run([sys.executable, "-m", "hyperfs.cli", "--db", str(db), "migrate"],
                            cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    moved = len(FULL) + len(MIXED) + (len(FULL) + len(MIXED)) // 2 + 2
    assert f"moved {moved} blocks" in result.stdout
    assert "moving the block data" in result.stderr  # said once, on the way
    await assert_migrated(db, expect)
    store = Store(db)
    place = store.data.place_of(store.lookup(next(iter(expect))) or 0, 0)
    store.close()
    assert place is not None
    assert place[0].read_bytes() == b"".join(FULL)  # the full feed: its bytes in order


MIGRATE_CHILD = textwrap.dedent("""
    import sys
    from hyperfs.store import migrate
    migrate.STEP_BLOCKS = int(sys.argv[2])
    def say(done, total):
        print(done, total, flush=True)
    migrate.open_store(sys.argv[1], progress=say)[0].close()
    print("done", flush=True)
""")


def test_migration_killed_at_random_points_resumes(tmp_path: Path) -> None:
    """SIGKILL in the middle of a migration, again and again: no block is ever in neither
    place, and the next open finishes the work, every byte equal."""
    import trio

    expect = trio.run(make_format1, tmp_path)
    db, rnd, rounds = tmp_path / "db", seeded_random(), 0
    while not assert_each_block_in_one_place(db):
        child = subprocess.Popen([sys.executable, "-c", MIGRATE_CHILD, str(db), "13"],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True)
        assert child.stdout is not None
        try:
            for _ in range(rnd.randint(0, 4)):
                if child.stdout.readline() in ("", "done\n"):
                    break
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        rounds += 1
        assert rounds < 200, "the migration makes no progress"
    assert rounds > 3  # it was interrupted, more than once
    trio.run(assert_migrated, db, expect)
