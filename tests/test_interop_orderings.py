"""Every order of connecting and looking up, against the JS reference (hypercore 1.8.0).

The reference sends Join, Have (its bitfield) and Unpause for each feed it has open right
after its handshake, and never again on that connection (PROTOCOL.md). So a feed looked up
after the connection is up must start from what the remote said then (``Peer.offers``):
tested through a real `hyperfs mount` (the issue's `cat MNT/<id>/3`) and in-process for
the other orders (lookup before connect, after it, after a reconnect, the JS side joining
late, several feeds, more feeds than are remembered). Then what a remote can make us keep
and learn by naming feeds: a bounded amount, and nothing.

"The connection is up" is read off the node's own state (its peers' offers), polled:
the poll waits for what the test is about, it does not stand in for it. Waits are bounded
by HANG, generous on purpose: they catch a hang, they do not measure speed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from hyperfs import open_core
from hyperfs.feeds.core import Core
from hyperfs.net.node import Node, open_node
from hyperfs.replication.offers import MAX_BYTES, MAX_FEEDS
from hyperfs.replication.peer import Peer
from hyperfs.testing.jsref import JsPeer, start_js_peer, start_js_seeder
from hyperfs.testing.mounts import Mounted, Mounts, run
from hyperfs.testing.network import (
    PeerLog,
    RawPeer,
    have_all,
    local_blocks,
    make_blocks,
    store_feed,
)
from hyperfs.testing.requirements import JS_PEER, js_available, require
from hyperfs.wire.connection import Connection
from hyperfs.wire.events import ExtensionReceived, HandshakeReceived, Joined, RequestReceived

HANG = 60  # seconds before a wait counts as hung
POLL = 0.02  # seconds between looks at a node's own state


def feed_blocks(count: int, seed: int) -> list[bytes]:
    """Blocks of a test feed; block 3 (the issue's) holds data."""
    blocks = make_blocks(count, seed=seed)
    blocks[3] = f"block 3 of feed {seed}".encode()
    return blocks


A, B, C = (feed_blocks(count, seed) for count, seed in ((120, 1), (40, 2), (300, 3)))


@pytest.fixture
def js_peer() -> None:
    require(js_available(), JS_PEER)


async def offered(node: Node, wanted: Callable[[Peer], bool]) -> Peer:
    """The node's connected peer for which ``wanted`` holds, once one does."""
    with trio.fail_after(HANG):
        while True:
            for peer in list(node.swarm.peers):
                if peer.handshaken.is_set() and wanted(peer):
                    return peer
            await trio.sleep(POLL)  # polling the node's own state, not standing in for it


def offers_all(*ids: str) -> Callable[[Peer], bool]:
    """Whether a peer's remote has said what it has of each of ``ids``, not joined yet."""
    return lambda peer: all(bytes.fromhex(feed_id) in peer.offers for feed_id in ids)


async def js_peer_with(*feeds: list[bytes]) -> tuple[JsPeer, list[str], int]:
    return await trio.to_thread.run_sync(lambda: start_js_peer(feeds))


async def fetched(core: Core, feed_id: str, blocks: list[bytes]) -> None:
    """Look the feed up now: its block 3 first (a reader's wait), then all of it."""
    with core.get(feed_id) as feed, trio.fail_after(HANG):
        assert await feed.get(3) == blocks[3]
        await feed.download()
        assert local_blocks(feed) == blocks


# ------------------------------------------------------------------ the issue, through a mount


def _mount_offered(m: Mounted, count: int) -> None:
    """Wait until the mount's peer has said what it has of ``count`` feeds not looked up."""
    limit = time.monotonic() + HANG
    while True:
        status = json.loads((m.mnt / ".status").read_bytes())
        peers = status.get("network", {}).get("peers", [])
        if any(peer.get("id") and peer.get("offered", 0) >= count for peer in peers):
            return
        assert m.proc.poll() is None, m.errors()
        assert time.monotonic() < limit, f"the peer never offered {count} feeds: {status}"
        time.sleep(POLL)  # polling the mount's own status, not standing in for it


def test_mount_cat_of_a_feed_after_the_connection_is_up(js_peer: None, mounts: Mounts) -> None:
    """`hyperfs mount --peer` to a JS seeder; once connected, `cat MNT/<id>/3` of a feed
    never looked up before returns the block (it used to wait for --timeout and fail)."""
    _seeder, feed_id, port = start_js_seeder(blocks=A)
    m = mounts.start(None, None, "--peer", f"127.0.0.1:{port}", "--timeout", "20")
    _mount_offered(m, 1)
    assert run("cat", m.mnt / feed_id / "3").stdout == A[3]
    assert run("cat", m.mnt / feed_id / "100").stdout == A[100]


# ------------------------------------------------------------------ in-process orderings


async def test_lookup_before_connect(js_peer: None, tmp_path: Path) -> None:
    _js, (a,), port = await js_peer_with(A)
    async with open_core(tmp_path / "db") as core:
        with core.get(a):  # wanted before any peer is there: joined at the handshake
            async with open_node(core, peers=[f"127.0.0.1:{port}"]):
                await fetched(core, a, A)


async def test_lookup_after_the_connection_is_up(js_peer: None, tmp_path: Path) -> None:
    _js, (a,), port = await js_peer_with(A)
    async with open_core(tmp_path / "db") as core, \
            open_node(core, peers=[f"127.0.0.1:{port}"]) as node:
        peer = await offered(node, offers_all(a))
        await fetched(core, a, A)
        assert peer.blocks_in == len(A)  # all over the connection that was up before
        assert not peer.offers  # taken by the join


async def test_lookup_after_js_dialed_us(js_peer: None, tmp_path: Path) -> None:
    """The same when the JS side is the one that connects (we accepted)."""
    js, (a,), _port = await js_peer_with(A)
    async with open_core(tmp_path / "db") as core, open_node(core, listen="127.0.0.1:0") as node:
        assert node.address is not None
        js.command("connect", to=f"127.0.0.1:{node.address[1]}")
        await offered(node, offers_all(a))
        await fetched(core, a, A)


async def test_reconnect_after_a_drop(js_peer: None, tmp_path: Path) -> None:
    """A feed wanted across the drop, and one looked up only after the reconnect: both
    come over the new connection, which starts from nothing the old one said."""
    js, (a, b), port = await js_peer_with(A, B)
    async with open_core(tmp_path / "db") as core:
        log = PeerLog(core)
        async with open_node(core, peers=[f"127.0.0.1:{port}"]) as node:
            first = await offered(node, offers_all(a, b))
            with core.get(a) as feed, trio.fail_after(HANG):
                assert await feed.get(3) == A[3]
                js.command("drop")
                assert (await js.anext_event("dropped"))["connections"] == 1
                await first.closed.wait()
                second = await offered(node, offers_all(b))  # redialed; b not joined yet
                assert second is not first and len(log.peers) == 2
                assert bytes.fromhex(a) in second.channels  # still wanted: joined at once
                assert await feed.get(100) == A[100]
            await fetched(core, b, B)
            await fetched(core, a, A)
            assert second.blocks_in == len(A) - 1 + len(B)


async def test_js_leecher_joins_late(js_peer: None, tmp_path: Path) -> None:
    """The JS side asks for a feed of ours over a connection that was up long before, and
    we then fetch one of its feeds over the same one: each joined late, both work."""
    ours = feed_blocks(60, 7)
    js, (a,), _port = await js_peer_with(A)
    async with open_core(tmp_path / "db") as core:
        mine = (await store_feed(core, ours)).hex()
        async with open_node(core, listen="127.0.0.1:0") as node:
            assert node.address is not None
            js.command("connect", to=f"127.0.0.1:{node.address[1]}")
            peer = await offered(node, offers_all(a))
            with trio.fail_after(HANG):
                for index in (3, 59):
                    js.command("fetch", id=mine, block=index)
                    got = await js.anext_event("block")
                    assert (got["id"], got["index"]) == (mine, index)
                    assert bytes.fromhex(got["hex"]) == ours[index]
            assert peer.blocks_out >= 2  # (and the JS side goes on to fetch the rest)
            await fetched(core, a, A)
            assert len(node.swarm.peers) == 1  # one connection all along


async def test_several_feeds_some_looked_up_before(js_peer: None, tmp_path: Path) -> None:
    _js, (a, b, c), port = await js_peer_with(A, B, C)
    async with open_core(tmp_path / "db") as core:
        with core.get(a):
            async with open_node(core, peers=[f"127.0.0.1:{port}"]) as node:
                peer = await offered(node, offers_all(b, c))
                assert bytes.fromhex(a) in peer.channels and len(peer.offers) == 2
                await fetched(core, c, C)
                await fetched(core, a, A)
                await fetched(core, b, B)
                assert peer.blocks_in == len(A) + len(B) + len(C)


async def test_more_feeds_than_are_remembered(js_peer: None, tmp_path: Path) -> None:
    """A JS peer with one feed more open than a connection remembers: the oldest offer is
    forgotten, and looking that feed up still works (we rejoin; the remote says it again)."""
    many = [feed_blocks(4, 100 + n) for n in range(MAX_FEEDS + 1)]
    _js, ids, port = await js_peer_with(*many)
    async with open_core(tmp_path / "db") as core, \
            open_node(core, peers=[f"127.0.0.1:{port}"]) as node:
        peer = await offered(node, offers_all(ids[-1]))  # its last Join is in
        assert len(peer.offers) == MAX_FEEDS and bytes.fromhex(ids[0]) not in peer.offers
        await fetched(core, ids[0], many[0])  # forgotten
        await fetched(core, ids[-1], many[-1])  # remembered
        assert len(node.swarm.peers) == 1 and peer.blocks_in == 8


# ------------------------------------------------------------------ what naming feeds gets a peer


def _echo_pings(core: Core) -> None:
    """Answer each ping with its payload: the raw peers' barrier (the answer comes after
    everything the node made of what was sent before the ping)."""
    core.use("ping")
    core.on("peer", lambda peer: peer.on("ping", lambda data: peer.send("ping", data)))


async def _barrier(raw: RawPeer, mark: int) -> None:
    await raw.send(raw.conn.extension("ping", bytes([mark])))
    await raw.until(lambda e: isinstance(e, ExtensionReceived) and e.payload == bytes([mark]))


async def test_naming_2000_feeds_gets_no_reply_and_is_kept_within_caps(tmp_path: Path) -> None:
    """A peer Joins 2,000 random ids (500 open at a time, with Haves and Unpause): it gets
    no reply for any, the node opens nothing, and what it keeps stays within its caps,
    the newest kept, each one forgotten as the remote leaves it."""
    field = 16 * 1024
    batches: list[tuple[Callable[[Connection, bytes], bytes], int]] = [
        # (what follows each Join, how many offers stay kept)
        (lambda c, f: c.have(f, bitfield=os.urandom(16)) + c.unpause(f), MAX_FEEDS),
        (lambda c, f: c.have(f, bitfield=os.urandom(field)), MAX_BYTES // field),
        (lambda c, f: c.have(f, blocks=[8 * field - 1]) + c.pause(f), MAX_BYTES // field),
        (lambda c, f: b"", MAX_FEEDS),
    ]
    async with open_core(tmp_path / "db") as core:
        await store_feed(core, make_blocks(10, seed=9))
        _echo_pings(core)
        log = PeerLog(core)
        async with open_node(core, listen="127.0.0.1:0") as node:
            assert node.address is not None
            raw = await RawPeer.connect(node.address[1], extensions=["ping"])
            named: list[bytes] = []
            with trio.fail_after(HANG):
                peer = await log.wait_for(lambda p: p.remote_id == raw.conn.peer_id)
                await raw.until(lambda e: isinstance(e, HandshakeReceived))
                previous: list[bytes] = []
                for mark, (after_join, kept) in enumerate(batches):
                    ids = [os.urandom(32) for _ in range(500)]
                    out = b"".join(raw.conn.leave(f) for f in previous)
                    await raw.send(out + b"".join(raw.conn.join(f) + after_join(raw.conn, f)
                                                  for f in ids))
                    await _barrier(raw, mark)
                    assert len(peer.offers) == kept and peer.offers.bytes <= MAX_BYTES
                    assert all(f in peer.offers for f in ids[-kept:])  # the newest
                    named += ids
                    previous = ids
                await raw.send(b"".join(raw.conn.leave(f) for f in previous))
                await _barrier(raw, len(batches))
                assert (len(peer.offers), peer.offers.bytes) == (0, 0)
                await raw.stream.send_eof()  # the node finishes: all it sent is in
                await raw.until_closed()
                await peer.closed.wait()
            assert len(set(named)) == 2000
            assert peer.close_reason == "the remote closed the connection"  # never dropped
            assert [type(e) for e in raw.events] == [HandshakeReceived] + [
                ExtensionReceived] * (len(batches) + 1)  # our pings' answers, nothing more
            assert node.swarm.feeds == {} and not any(core.stored(f) for f in named)
            assert not any(peer.offers.forgotten(f) for f in named)  # left: all let go


async def test_the_channel_starts_from_what_was_said_before_we_joined(tmp_path: Path) -> None:
    """A bitfield and then a Have of one more block are both kept, and a Pause after the
    Unpause too: once we join, nothing is asked until the remote unpauses, then exactly
    the blocks it said it has."""
    async with open_core(tmp_path / "source") as source_core, \
            open_core(tmp_path / "db") as core:
        feed_id = await store_feed(source_core, make_blocks(40, seed=5))
        source = source_core.hold(feed_id).feed
        _echo_pings(core)
        log = PeerLog(core)
        async with open_node(core, listen="127.0.0.1:0") as node:
            assert node.address is not None
            raw = await RawPeer.connect(node.address[1], extensions=["ping"])
            conn = raw.conn
            with trio.fail_after(HANG):
                peer = await log.wait_for(lambda p: p.remote_id == conn.peer_id)
                await raw.until(lambda e: isinstance(e, HandshakeReceived))
                await raw.send(conn.join(feed_id) + conn.have(feed_id, bitfield=have_all(16))
                               + conn.have(feed_id, blocks=[30]) + conn.unpause(feed_id)
                               + conn.pause(feed_id))
                await _barrier(raw, 0)
                with core.get(feed_id) as feed:
                    got: dict[int, bytes | None] = {}

                    async def get(index: int) -> None:
                        got[index] = await feed.get(index)

                    async with trio.open_nursery() as unanswered:
                        unanswered.start_soon(get, 20)  # nobody said they have it
                        async with trio.open_nursery() as answered:
                            for index in (5, 30):
                                answered.start_soon(get, index)
                            await raw.until(lambda e: isinstance(e, Joined))
                            await trio.testing.wait_all_tasks_blocked()
                            channel = peer.channels[feed_id]
                            assert channel.ready and channel.remote_paused
                            assert not channel.requested  # paused: nothing asked
                            assert [i in channel.remote_has for i in (5, 15, 16, 20, 30)] == [
                                True, True, False, False, True]
                            await raw.send(conn.unpause(feed_id))
                            asked: set[int] = set()
                            while len(asked) < 2:
                                event = await raw.until(
                                    lambda e: isinstance(e, RequestReceived)
                                    and e.block not in asked)
                                assert isinstance(event, RequestReceived)
                                asked.add(event.block)
                                data = source.read_local(event.block)
                                assert data is not None
                                await raw.send(conn.response(feed_id, event.block, data,
                                                             source.proof(event.block)))
                        assert asked == {5, 30}
                        assert got == {i: source.read_local(i) for i in (5, 30)}
                        unanswered.cancel_scope.cancel()
