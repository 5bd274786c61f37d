"""What a seeder sends: a peer serves blocks read into one buffer it reuses (blocks up to
``SERVE_BUFFER``) or read as bytes (larger ones); every Response must carry its own block,
also when many are queued before any is sent.
"""

from __future__ import annotations

import random
from pathlib import Path

import trio

from hyperfs import open_core
from hyperfs.net.node import open_node
from hyperfs.replication.peer import SERVE_BUFFER
from hyperfs.testing.network import RawPeer, store_feed
from hyperfs.wire.events import ResponseReceived, Unpaused

HANG = 60  # seconds before a wait counts as hung


async def test_queued_responses_keep_their_own_blocks(tmp_path: Path) -> None:
    rng = random.Random(11)
    sizes = [SERVE_BUFFER, SERVE_BUFFER + 1, 10, 3 * SERVE_BUFFER, SERVE_BUFFER - 1, 1] * 5
    blocks = [rng.randbytes(size) for size in sizes]
    async with open_core(tmp_path / "seeder") as seeder:
        feed_id = await store_feed(seeder, blocks)
        async with open_node(seeder, listen="127.0.0.1:0") as node:
            assert node.address is not None
            raw = await RawPeer.connect(node.address[1])
            with trio.fail_after(HANG):
                await raw.send(raw.conn.join(feed_id))
                await raw.until(lambda e: isinstance(e, Unpaused))
                # All at once: the seeder answers them in one go, queueing many Responses
                # (the buffer reused under each) before its writer sends the first.
                await raw.send(b"".join(raw.conn.request(feed_id, i) for i in range(len(blocks))))
                last = len(blocks) - 1
                await raw.until(lambda e: isinstance(e, ResponseReceived) and e.block == last)
            await raw.aclose()
    responses = [e for e in raw.events if isinstance(e, ResponseReceived)]
    assert [e.block for e in responses] == list(range(len(blocks)))
    for event in responses:
        assert event.data == blocks[event.block], (event.block, len(event.data))
