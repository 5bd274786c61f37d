"""Live feeds between hyperfs nodes over loopback TCP: new lengths pushed as signed,
followed by read streams, relayed along a chain; forged and forking peers dropped.

Every wait is on a stream's next block or an event, bounded by HANG.
"""

from __future__ import annotations

from pathlib import Path

import trio

from hyperfs import open_core
from hyperfs.feeds.core import Core
from hyperfs.net.node import Node, open_node

HANG = 30


def _at(node: Node) -> str:
    assert node.address is not None
    return f"127.0.0.1:{node.address[1]}"


async def _follow(core: Core, feed_id: bytes, count: int) -> list[bytes]:
    got = []
    async for block in core.create_read_stream(feed_id, live=True, limit=count):
        got.append(block)
    return got


async def test_appends_reach_a_follower_in_order(tmp_path: Path) -> None:
    async with open_core(tmp_path / "a") as a, open_core(tmp_path / "b") as b:
        writer = a.add(live=True)
        await writer.append(b"first")
        async with open_node(a, listen="127.0.0.1:0") as node_a, \
                open_node(b, peers=[_at(node_a)]):
            with trio.fail_after(HANG):
                stream = b.create_read_stream(writer.id, live=True)
                assert await anext(stream) == b"first"
                for index in range(1, 20):
                    await writer.append(b"block %d" % index)
                    assert await anext(stream) == b"block %d" % index
                await stream.aclose()
        with b.get(writer.id) as feed:
            assert feed.live and not feed.writable and feed.blocks == 20
        assert b.check().problems == []


async def test_chain_relays_new_lengths(tmp_path: Path) -> None:
    """A -> B -> C: C is connected to B only; B relays each new length and the blocks."""
    async with open_core(tmp_path / "a") as a, open_core(tmp_path / "b") as b, \
            open_core(tmp_path / "c") as c:
        writer = a.add(live=True)
        await writer.append([b"one", b"two"])
        async with open_node(a, listen="127.0.0.1:0") as node_a, \
                open_node(b, listen="127.0.0.1:0", peers=[_at(node_a)]) as node_b, \
                open_node(c, peers=[_at(node_b)]):
            with trio.fail_after(HANG):
                follower_b = b.create_read_stream(writer.id, live=True)
                follower_c = c.create_read_stream(writer.id, live=True)
                for expected in (b"one", b"two"):
                    assert await anext(follower_b) == expected
                    assert await anext(follower_c) == expected
                for index in range(10):
                    await writer.append([b"x%d" % index, b"y%d" % index])
                    for stream in (follower_b, follower_c):
                        assert await anext(stream) == b"x%d" % index
                        assert await anext(stream) == b"y%d" % index
                await follower_b.aclose()
                await follower_c.aclose()
        for core in (b, c):
            assert core.check().problems == []
