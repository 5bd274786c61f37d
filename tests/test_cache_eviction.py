"""Eviction inside one process, on real LevelDB and data files: what goes, what stays
(feeds made here, pinned ones), what the disk and the database say afterwards, the order
(read before fetched-ahead), and kill -9 at random moments of downloads that evict."""

from __future__ import annotations

import textwrap
from pathlib import Path

import trio

from hyperfs import open_core
from hyperfs.feeds.cache import Limits
from hyperfs.feeds.core import Core
from hyperfs.store import fsck
from hyperfs.store.layout import CACHE_KEY, OWN, prefix
from hyperfs.store.recency import REGION_BLOCKS, Recency
from hyperfs.store.store import Store
from hyperfs.testing.network import store_feed, store_partial
from hyperfs.testing.procs import SAY, kill_after_lines
from hyperfs.testing.seeds import fresh_seed, seeded_random

BLOCK = 16 << 10


def _blocks(count: int, seed: int) -> list[bytes]:
    rnd = seeded_random(seed)
    return [rnd.randbytes(BLOCK) for _ in range(count)]


def _allocated(core: Core, feed_id: bytes) -> int:
    num = core.store.lookup(feed_id)
    assert num is not None
    return core.store.data.files.allocated(num)


def test_eviction_keeps_the_cap_and_never_touches_own_or_pinned_feeds(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_core(tmp_path / "src") as src, open_core(tmp_path / "dst") as dst:
            big_blocks, pinned_blocks = _blocks(256, 1), _blocks(64, 2)
            big, pinned = await store_feed(src, big_blocks), await store_feed(src, pinned_blocks)
            own = await store_feed(dst, _blocks(64, 3))
            cap = 1 << 20
            dst.cache.limit(Limits(max_size=cap))
            with dst.get(pinned) as feed:
                dst.cache.pin(feed)
            await store_partial(dst, src, pinned, range(64))
            for start in range(0, 256, 16):  # as the cache's task runs: after each MiB
                await store_partial(dst, src, big, range(start, start + 16))
                dst.cache.check()
                assert _allocated(dst, big) <= cap + (256 << 10)
            with dst.get(big) as feed, dst.get(pinned) as kept, dst.get(own) as mine:
                assert kept.local == 64 and mine.local == 64
                assert 0 < feed.local < 256
                for index in range(256):  # what is marked present is there, byte for byte
                    data = feed.read_local(index)
                    assert (data == big_blocks[index]) if feed.has(index) else data is None
                assert _allocated(dst, big) == feed.local * BLOCK  # holes take no disk
            status = dst.cache.status()
            assert status["used"] == _allocated(dst, big) and status["pinned_feeds"] == 1
            assert status["own"] == 64 * BLOCK and status["pinned"] == 64 * BLOCK
            assert dst.check().ok
        async with open_core(tmp_path / "dst") as dst:  # pins and marks last
            dst.cache.limit(Limits(max_size=BLOCK))
            assert dst.cache.check() > 0
            assert [info.local for info in dst.info() if info.id == pinned] == [64]
            assert [info.local for info in dst.info() if info.id == own] == [64]
            assert dst.check().ok
            with dst.get(pinned) as feed:
                dst.cache.pin(feed, False)
            dst.cache.check()
            assert [info.local for info in dst.info() if info.id == pinned] == [0]

    trio.run(main)


def test_a_live_feed_written_here_is_never_evicted(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_core(tmp_path / "dst") as dst:
            feed = dst.add(live=True)
            await feed.append(_blocks(32, 10))
            dst.cache.limit(Limits(max_size=BLOCK))
            assert dst.cache.evict(1 << 30) == 0 and dst.cache.used() == 0
            assert feed.local == 32
            assert dst.cache.status()["own"] == 32 * BLOCK

    trio.run(main)


def test_a_database_from_before_the_marks_keeps_its_whole_feeds(tmp_path: Path) -> None:
    """Feeds finalized before the ``o`` marks existed may be the only copy: every whole
    feed is marked made here at the first open; a partial one stays a cache."""
    async def main() -> None:
        async with open_core(tmp_path / "src") as src, open_core(tmp_path / "dst") as dst:
            whole, part = await store_feed(src, _blocks(8, 4)), await store_feed(src, _blocks(8, 5))
            await store_partial(dst, src, whole, range(8))
            await store_partial(dst, src, part, range(4))
            made = await store_feed(dst, _blocks(8, 6))
        store = Store(tmp_path / "dst")
        with store.batch() as batch:  # as an earlier hyperfs left it
            batch.delete(CACHE_KEY)
            for num in list(store.numbers(OWN)):
                batch.delete(prefix(OWN, num))
        store.close()
        async with open_core(tmp_path / "dst") as dst:
            dst.cache.limit(Limits(max_size=BLOCK))
            dst.cache.check()
            local = {info.id: info.local for info in dst.info()}
            assert (local[whole], local[made], local[part]) == (8, 8, 0)

    trio.run(main)


def test_regions_read_go_before_regions_fetched_ahead() -> None:
    recency = Recency()
    recency.enabled = True
    recency.stored(7, 0, BLOCK)                  # region 0: fetched, then read
    recency.touch(7, 0)
    recency.stored(7, REGION_BLOCKS, BLOCK)      # region 1: fetched ahead, not read yet
    recency.stored(7, 2 * REGION_BLOCKS, BLOCK)  # region 2: fetched ahead too
    recency.touch(8, 0)                          # feed 8 read after feed 7's region 0
    assert recency.oldest() == (7, range(0, REGION_BLOCKS))
    assert recency.oldest() == (8, range(0, REGION_BLOCKS))
    assert recency.oldest() == (7, range(REGION_BLOCKS, 2 * REGION_BLOCKS))
    recency.kept.add(9)
    recency.touch(9, 0)
    assert recency.oldest() == (7, range(2 * REGION_BLOCKS, 3 * REGION_BLOCKS))
    assert recency.oldest() is None


CHILD = SAY + textwrap.dedent("""
    import random, sys, trio
    from hyperfs import open_core
    from hyperfs.feeds.cache import Limits
    src_path, dst_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rnd = random.Random(seed)
    async def main():
        async with open_core(src_path) as src, open_core(dst_path) as dst:
            dst.cache.limit(Limits(max_size=rnd.choice((4096, 40000, 200000))))
            say("open")
            while True:
                feed_id = rnd.choice([info.id for info in src.info()])
                with src.get(feed_id) as full, dst.get(feed_id) as copy:
                    for index in rnd.sample(range(full.blocks), min(full.blocks, 20)):
                        if not copy.has(index):
                            copy.put(index, full.read_local(index), full.proof(index))
                        copy.read_local(rnd.randrange(full.blocks))
                        say("put")
                        if dst.cache.check():
                            say("evicted")
    trio.run(main)
""")


async def _check_after_kill(dst: Path) -> None:
    store = Store(dst)  # as the kill left it
    try:
        report = fsck.check(store, pending_ok=True)
    finally:
        store.close()
    assert report.ok, report.problems
    async with open_core(dst) as core:
        assert core.check().ok
        for info in core.info():
            with core.get(info.id) as feed:
                for index in feed.bitfield.iter_set():
                    assert feed.read_local(index) is not None


def test_sigkill_during_eviction_leaves_a_store_fsck_accepts(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    seed = fresh_seed()
    rnd = seeded_random(seed)

    async def make() -> None:
        async with open_core(src) as core:
            await store_feed(core, [rnd.randbytes(4096) for _ in range(200)])  # slots
            await store_feed(core, [rnd.randbytes(rnd.choice((1, 900, 5000, 40000)))
                                    for _ in range(120)])  # mixed sizes: past the slots
    trio.run(make)
    evictions = 0
    for round_ in range(12):
        kill_after = rnd.choice((1, 2, rnd.randint(1, 30), rnd.randint(20, 200)))
        evictions += kill_after_lines(CHILD, (src, dst, seed + round_), kill_after).count("evicted")
        trio.run(_check_after_kill, dst)
    assert evictions  # the kills landed among evictions


def test_a_dropped_block_gives_its_disk_back(tmp_path: Path) -> None:
    """`rm MNT/<id>/N` and a damaged block drop through the eviction path: the bytes are
    punched out, so no disk is held by a block nothing points at."""
    async def main() -> None:
        async with open_core(tmp_path / "src") as src, open_core(tmp_path / "dst") as dst:
            blocks = _blocks(8, 7)
            feed_id = await store_feed(src, blocks)
            await store_partial(dst, src, feed_id, range(8))
            with dst.get(feed_id) as feed:
                assert _allocated(dst, feed_id) == 8 * BLOCK
                assert feed.drop(3) and not feed.drop(3)
                assert _allocated(dst, feed_id) == 7 * BLOCK
                assert not feed.has(3) and feed.read_local(4) == blocks[4]
            assert dst.check().ok

    trio.run(main)


def test_after_a_restart_the_feed_read_longest_ago_goes_first(tmp_path: Path) -> None:
    async def main() -> None:
        async with open_core(tmp_path / "src") as src, open_core(tmp_path / "dst") as dst:
            older = await store_feed(src, _blocks(16, 8))
            newer = await store_feed(src, _blocks(16, 9))
            await store_partial(dst, src, newer, range(16))  # stored first, read last
            await store_partial(dst, src, older, range(16))
            numbers = {feed_id: dst.store.lookup(feed_id) for feed_id in (older, newer)}
            dst.cache.marks.save_read_times({numbers[older]: 1_000, numbers[newer]: 2_000})
        async with open_core(tmp_path / "dst") as dst:
            dst.cache.limit(Limits(max_size=24 * BLOCK))
            dst.cache.check()  # 32 blocks held, 22 left: 10 go, all of the older feed
            local = {info.id: info.local for info in dst.info()}
            assert (local[older], local[newer]) == (6, 16)

    trio.run(main)
