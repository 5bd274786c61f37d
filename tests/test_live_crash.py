"""Kill -9 a process at random moments while it appends to a live feed and while another
database takes the new signed lengths and blocks: neither may ever hold a signed length
ahead of its stored tree (the writer: ahead of its blocks), and both pass fsck, whose
check of a live feed is its key's signature over the stored roots.

As in tests/test_crash.py: the child prints a line after every operation and is killed
after a random number of lines; the same databases are reused across rounds, and the
writer's feed (its secret key on disk) is appended to again after every kill.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import trio

from hyperfs import open_core
from hyperfs.store import fsck, signed
from hyperfs.store.store import Store
from hyperfs.testing.procs import SAY, kill_after_lines
from hyperfs.testing.seeds import fresh_seed, seeded_random

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 15

CHILD = SAY + textwrap.dedent("""
    import os, random, sys, trio
    from hyperfs import open_core
    from hyperfs.testing.live import signed_now
    writer_path, reader_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rnd = random.Random(seed)
    async def main():
        async with open_core(writer_path) as w, open_core(reader_path) as r:
            ids = [info.id for info in w.info()]
            feed = w.get(ids[0]) if ids else w.add(live=True)
            say("open")
            copy = r.get(feed.id)
            while True:
                await feed.append([os.urandom(rnd.choice((0, 1, 100, 5000)))
                                   for _ in range(rnd.randint(1, 50))])
                say("append")
                if not copy.live:
                    now = signed_now(feed)
                    copy.learn_live(now.length, now.roots, now.signature)
                else:
                    now = signed_now(feed, old=copy.blocks)
                    copy.live_state.receive(now.length, now.roots, now.signature,
                                            now.old, now.nodes)
                say("length")
                missing = [i for i in range(feed.blocks) if not copy.has(i)]
                for index in rnd.sample(missing, min(len(missing), 20)):
                    copy.put(index, feed.read_local(index), feed.proof(index))
                    say("put")
    trio.run(main)
""")


def _assert_consistent(writer: Path, reader: Path) -> None:
    for path in (writer, reader):
        store = Store(path)  # as the kill left it
        try:
            report = fsck.check(store, pending_ok=True)
            for num, _feed_id, blocks in store.records():
                live = signed.signed(store, num)
                if live is None:  # the reader's record of a feed opened, not yet learned
                    assert path == reader and blocks is None
                    continue
                assert live.length == blocks, (path, live, blocks)
                if path == writer:  # every block of a signed length is stored
                    assert store.bitfield(num).count == blocks
        finally:
            store.close()
        assert report.ok, (path, report.problems)


async def _appendable_after(writer: Path) -> None:
    async with open_core(writer) as core:
        for info in core.info():
            with core.get(info.id) as feed:
                assert feed.writable
                await feed.append(b"after the kill")
        assert core.check().ok


def test_sigkill_while_appending_never_leaves_a_signed_length_ahead(tmp_path: Path) -> None:
    writer, reader = tmp_path / "writer", tmp_path / "reader"
    seed = fresh_seed()  # printed: HYPERFS_TEST_SEED replays the same kill points
    rnd = seeded_random(seed)
    for round_ in range(ROUNDS):
        kill_after = rnd.choice((1, 2, 3, rnd.randint(1, 15), rnd.randint(1, 60)))
        kill_after_lines(CHILD, (writer, reader, seed + round_), kill_after, cwd=ROOT)
        _assert_consistent(writer, reader)
    trio.run(_appendable_after, writer)
