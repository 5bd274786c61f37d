"""Many remote feeds for metadata storms (`ls -lR`, `find`, `du` over a mount): used by
tests/test_fs_reads.py and scripts/bench_fs.py alike.

Each feed is stored whole in a seed database and, in the mount's database, by id with
its length known (a verified block was stored, then dropped) and at most a few blocks
local, as after a peer told us about it and we fetched little.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from hyperfs import open_core
from hyperfs.testing.network import store_feed, store_partial


async def store_remote_feeds(seed: Path, db: Path, count: int, *, blocks: int = 4,
                             block_bytes: int = 4096) -> list[bytes]:
    """``count`` feeds of ``blocks`` random blocks, whole in ``seed``; in ``db`` even
    ones hold no block, odd ones their first and last. Returns their ids in order."""
    ids = []
    async with open_core(seed) as source, open_core(db) as core:
        for number in range(count):
            feed_id = await store_feed(source, [os.urandom(block_bytes) for _ in range(blocks)])
            last = blocks - 1
            await store_partial(core, source, feed_id, sorted({0, last} if number % 2 else {last}))
            if number % 2 == 0:
                with core.hold(feed_id) as feed:
                    feed.drop(last)
            ids.append(feed_id)
            if number % 64 == 63:
                await trio.lowlevel.checkpoint()
    return ids
