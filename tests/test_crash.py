"""Kill -9 a process at random moments while it appends, finalizes and puts (in random
order, into the data files' slots or past them): the database it leaves must always pass
the consistency check (data files included) and show no half-done change.

The child prints a line after every operation; the parent kills it after a random number
of lines (so at a random point of whatever comes next), with no sleeps. The same two
databases are reused across rounds, so kills also land in the clean-up that a core does
on open, and damage, if any, accumulates where the check can see it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import trio

from hyperfs import open_core
from hyperfs.store import fsck
from hyperfs.store.store import Store
from hyperfs.testing.procs import SAY, kill_after_lines
from hyperfs.testing.seeds import fresh_seed, seeded_random

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 30  # always all of them: a slow machine takes longer, it does not check less

CHILD = SAY + textwrap.dedent("""
    import os, random, sys, trio
    from hyperfs import open_core
    src_path, dst_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rnd = random.Random(seed)
    async def main():
        async with open_core(src_path) as src, open_core(dst_path) as dst:
            say("open")
            while True:
                feed = src.add()
                one_size = rnd.choice((None, 4096, 65536))  # slots, or mixed sizes
                for _ in range(rnd.randint(1, 4)):
                    await feed.append([os.urandom(one_size or rnd.choice((0, 1, 100, 5000, 40000)))
                                       for _ in range(rnd.randint(1, 120))])
                    say("append")
                await feed.finalize()
                say("finalize")
                copy = dst.get(feed.id)
                for index in rnd.sample(range(feed.blocks), min(feed.blocks, 30)):
                    copy.put(index, await feed.get(index), feed.proof(index))
                    say("put")
    trio.run(main)
""")


async def _assert_consistent(src: Path, dst: Path) -> None:
    for path in (src, dst):
        store = Store(path)  # as the crash left it, before a core cleans up
        try:
            report = fsck.check(store, pending_ok=True)
        finally:
            store.close()
        assert report.ok, (path, report.problems)
    async with open_core(src) as core:
        report = core.check()
        assert report.ok, report.problems
        for info in core.info():  # a finalized feed was complete before it got its id
            assert info.blocks == info.local
        assert not core.store.pending()
    async with open_core(dst) as core:
        assert core.check().ok
        for info in core.info():
            feed = core.get(info.id)
            for index in feed.bitfield.iter_set():
                assert feed.read_local(index) is not None
            feed.close()


def test_sigkill_at_random_points_leaves_a_consistent_database(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    seed = fresh_seed()  # printed: HYPERFS_TEST_SEED replays the same kill points
    rnd = seeded_random(seed)
    for round_ in range(ROUNDS):
        kill_after = rnd.choice((1, 1, 2, 3, rnd.randint(1, 15), rnd.randint(1, 80)))
        kill_after_lines(CHILD, (src, dst, seed + round_), kill_after, cwd=ROOT)
        trio.run(_assert_consistent, src, dst)
