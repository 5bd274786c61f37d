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
from hyperfs.testing.jsref import arun_js_fetch
from hyperfs.testing.live import appends_arrive, signed_now
from hyperfs.testing.network import RawPeer, store_feed
from hyperfs.testing.requirements import JS_PEER, js_available, require
from hyperfs.wire.events import ExtensionReceived, Joined, Unpaused

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
                await appends_arrive(writer, [stream], [[b"block %d" % i] for i in range(1, 20)])
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
                await appends_arrive(writer, [follower_b, follower_c],
                                     [[b"x%d" % i, b"y%d" % i] for i in range(10)])
                await follower_b.aclose()
                await follower_c.aclose()
        for core in (b, c):
            assert core.check().problems == []


async def test_a_1x_peer_never_sees_a_live_feed(tmp_path: Path) -> None:
    """A peer without the live extension (a hypercore 1.x peer) that names a live id is
    not joined on it, gets no live message, and is still served static feeds."""
    async with open_core(tmp_path / "a") as a:
        writer = a.add(live=True)
        await writer.append(b"secret-ish")
        static = await store_feed(a, [b"static", b"blocks"])
        async with open_node(a, listen="127.0.0.1:0") as node:
            assert node.address is not None
            peer = await RawPeer.connect(node.address[1])
            await peer.send(peer.conn.join(writer.id) + peer.conn.join(static))
            with trio.fail_after(HANG):
                await peer.until(lambda e: isinstance(e, Joined) and e.feed_id == static)
                await peer.until(lambda e: isinstance(e, Unpaused) and e.feed_id == static)
            await peer.aclose()
    assert all(getattr(e, "feed_id", static) == static for e in peer.events)
    assert not any(isinstance(e, ExtensionReceived) for e in peer.events)


async def test_js_reference_replicates_static_feeds_beside_live_ones(tmp_path: Path) -> None:
    """hypercore 1.8.0 connected to a node that appends to a live feed and serves it to a
    hyperfs follower: the JS peer fetches a static feed whole, and nothing breaks."""
    require(js_available(), JS_PEER)
    blocks = [bytes([i]) * 1000 for i in range(50)]
    async with open_core(tmp_path / "a") as a, open_core(tmp_path / "b") as b:
        writer = a.add(live=True)
        await writer.append(b"0")
        static = await store_feed(a, blocks)
        async with open_node(a, listen="127.0.0.1:0") as node_a, \
                open_node(b, peers=[_at(node_a)]), trio.open_nursery() as nursery:
            results: list[dict[str, object]] = []

            async def js_fetch() -> None:
                results.append(await arun_js_fetch(_at(node_a), static.hex(), timeout=HANG))

            nursery.start_soon(js_fetch)
            with trio.fail_after(HANG):
                stream = b.create_read_stream(writer.id, live=True)
                assert await anext(stream) == b"0"
                await appends_arrive(writer, [stream], [[b"%d" % i] for i in range(1, 30)])
                await stream.aclose()
        assert results[0]["block_list"] == blocks


async def test_a_follower_that_was_behind_catches_up_on_reconnect(tmp_path: Path) -> None:
    """B verified 3 blocks, went away; A appended 2 more. When B connects again it gets
    length 5 from the lengths both tell, without waiting for another append."""
    async with open_core(tmp_path / "a") as a, open_core(tmp_path / "b") as b:
        writer = a.add(live=True)
        await writer.append([b"1", b"2", b"3"])
        async with open_node(a, listen="127.0.0.1:0") as node_a:
            with trio.fail_after(HANG):
                async with open_node(b, peers=[_at(node_a)]):
                    with b.get(writer.id) as feed:
                        await feed.download(0, 3)
                assert feed.blocks == 3
                await writer.append([b"4", b"5"])
                grown = trio.Event()
                b.on("append", lambda feed: grown.set() if feed.blocks == 5 else None)
                async with open_node(b, peers=[_at(node_a)]):
                    with b.get(writer.id) as feed:
                        await grown.wait()
                        await feed.download(3, 5)
                        assert [feed.read_local(i) for i in range(5)] == [
                            b"1", b"2", b"3", b"4", b"5"]
        assert b.check().ok


async def test_a_relay_tells_a_peer_at_another_length(tmp_path: Path) -> None:
    """C holds 5 blocks, B (the relay) verified 3 and then 10: B can prove 10 to C only
    with nodes it gets by fetching blocks, and then does."""
    async with open_core(tmp_path / "a") as a, open_core(tmp_path / "b") as b, \
            open_core(tmp_path / "c") as c:
        writer = a.add(live=True)
        await writer.append([b"%d" % i for i in range(3)])
        at_three = signed_now(writer)
        await writer.append([b"%d" % i for i in range(3, 5)])
        at_five = signed_now(writer)
        await writer.append([b"%d" % i for i in range(5, 10)])
        relay, follower = b.get(writer.id), c.get(writer.id)  # type: ignore[arg-type]
        relay.learn_live(at_three.length, at_three.roots, at_three.signature)
        follower.learn_live(at_five.length, at_five.roots, at_five.signature)
        grown = trio.Event()
        c.on("append", lambda feed: grown.set() if feed.blocks == 10 else None)
        async with open_node(a, listen="127.0.0.1:0") as node_a, \
                open_node(b, listen="127.0.0.1:0", peers=[_at(node_a)]) as node_b, \
                open_node(c, peers=[_at(node_b)]):
            with trio.fail_after(HANG):
                await grown.wait()
                await follower.download(5, 10)  # (B holds 3 .. 9 only: it followed from 3)
        assert [follower.read_local(i) for i in range(5, 10)] == [b"%d" % i for i in range(5, 10)]
        relay.close()
        follower.close()
        assert c.check().ok and b.check().ok
