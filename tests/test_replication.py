"""hyperfs <-> hyperfs replication over real loopback TCP, and what bad peers get.

In-process nodes (open_node, each on its own core) and `hyperfs serve` / `hyperfs cat`
subprocesses; hostile peers are small trio tasks speaking the protocol through the
sans-I/O `Connection`, or raw bytes. Every wait is on an event, a line or a closed
stream, bounded by HANG or a subprocess timeout: generous bounds that catch a hang on a
loaded machine; no test here measures speed.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from hyperfs import open_core
from hyperfs.feeds.feed import Feed
from hyperfs.net.node import Node, open_node
from hyperfs.replication.peer import Peer
from hyperfs.replication.swarm import open_swarm
from hyperfs.testing.network import (
    PeerLog,
    RawPeer,
    arun_hyperfs,
    assert_clean_error,
    astart_serve,
    claim_all,
    copy_db,
    local_blocks,
    make_blocks,
    run_hyperfs,
    store_feed,
    store_partial,
)
from hyperfs.wire.connection import Connection
from hyperfs.wire.events import (
    Event,
    HandshakeReceived,
    HaveReceived,
    Joined,
    RequestReceived,
    Unpaused,
)
from hyperfs.wire.framing import MAX_MESSAGE, frame
from hyperfs.wire.messages import Handshake, Join, encode
from hyperfs.wire.protobuf import encode_varint

BLOCKS = make_blocks(300, seed=2)
HANG = 60  # seconds before a wait counts as hung


def _port(node: Node) -> int:
    assert node.address is not None
    return node.address[1]


class StoredListener:
    """Calls ``callback(feed, block)`` as each block of a feed is stored."""

    def __init__(self, feed: Feed, callback: Callable[[Feed, int], None]) -> None:
        self.feed_stored = callback
        # FeedListener's methods are optional (looked up by name): this one has one only.
        self.unlisten = feed.listen(self)  # type: ignore[arg-type]  # (see above)


# ------------------------------------------------------------------ hyperfs <-> hyperfs


async def _download_all(feeds: list[Feed]) -> None:
    """Download every feed at once (one task each)."""
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            for feed in feeds:
                nursery.start_soon(feed.download)


def _check_and_close(opened: list[Feed], feeds: list[list[bytes]]) -> None:
    for feed, blocks in zip(opened, feeds, strict=True):
        assert local_blocks(feed) == blocks
        feed.close()


async def test_twenty_feeds_between_two_nodes(tmp_path: Path) -> None:
    feeds = [make_blocks(20 + 7 * n, seed=100 + n, max_size=2000) for n in range(20)]
    async with open_core(tmp_path / "a") as seeder, open_core(tmp_path / "b") as fetcher:
        ids = [await store_feed(seeder, blocks) for blocks in feeds]
        async with open_node(seeder, listen="127.0.0.1:0") as node:
            opened = [fetcher.get(feed_id) for feed_id in ids]
            async with open_node(fetcher, peers=[f"127.0.0.1:{_port(node)}"]):
                await _download_all(opened)
            _check_and_close(opened, feeds)
        assert fetcher.check().ok


async def test_dropped_blocks_come_again(tmp_path: Path) -> None:
    """Blocks dropped after a download (their hashes stay) are fetched again and verify:
    over the same connection, whose seeder leaves everything out of their proofs (it
    sent those blocks before), and over a new one to a fetcher opened afresh (nothing in
    memory: the climb finds the nodes kept in the store), also where a block and its
    neighbour are both gone (its own leaf is then not looked up)."""
    blocks = make_blocks(64, seed=9, max_size=1500)
    dropped = [4, 5, 6, 11, 32, 33, 63]
    async with open_core(tmp_path / "a") as seeder:
        feed_id = await store_feed(seeder, blocks)
        async with open_node(seeder, listen="127.0.0.1:0") as node:
            for fresh in (False, True):
                async with open_core(tmp_path / "b") as fetcher:
                    feed = fetcher.get(feed_id)
                    if fresh:
                        for index in dropped:
                            assert feed.drop(index)
                    peers = [f"127.0.0.1:{_port(node)}"]
                    async with open_node(fetcher, peers=peers) as ours:
                        await _download_all([feed])
                        (peer,) = ours.swarm.peers
                        if not fresh:
                            for index in dropped:
                                assert feed.drop(index)
                            with trio.fail_after(HANG):
                                for index in dropped:
                                    assert await feed.get(index) == blocks[index]
                        assert peer.close_reason is None and ours.swarm.peers == {peer}
                    _check_and_close([feed], [blocks])
                    assert fetcher.check().ok


async def test_twenty_feeds_from_a_serve_process(tmp_path: Path) -> None:
    feeds = [make_blocks(10 + 3 * n, seed=200 + n, max_size=1500) for n in range(20)]
    async with open_core(tmp_path / "served") as served:
        ids = [await store_feed(served, blocks) for blocks in feeds]
    _serve, port = await astart_serve(tmp_path / "served")
    async with open_core(tmp_path / "fetcher") as fetcher:
        opened = [fetcher.get(feed_id) for feed_id in ids]
        async with open_node(fetcher, peers=[f"127.0.0.1:{port}"]):
            await _download_all(opened)
        _check_and_close(opened, feeds)


async def test_fourth_peer_collects_parts_from_three(tmp_path: Path) -> None:
    parts = [range(0, 120), range(100, 210), [5, 50, *range(190, 300)]]
    async with open_core(tmp_path / "full") as full, open_core(tmp_path / "p0") as c0, \
            open_core(tmp_path / "p1") as c1, open_core(tmp_path / "p2") as c2, \
            open_core(tmp_path / "fetcher") as fetcher:
        feed_id = await store_feed(full, BLOCKS)
        holders = [c0, c1, c2]
        for core, part in zip(holders, parts, strict=True):
            await store_partial(core, full, feed_id, list(part))
        log = PeerLog(fetcher)
        async with open_node(c0, listen="127.0.0.1:0") as n0, \
                open_node(c1, listen="127.0.0.1:0") as n1, \
                open_node(c2, listen="127.0.0.1:0") as n2:
            ports = [_port(n) for n in (n0, n1, n2)]
            with fetcher.get(feed_id) as feed:
                async with open_node(fetcher, peers=[f"127.0.0.1:{p}" for p in ports]):
                    with trio.fail_after(HANG):
                        await feed.download()
                assert local_blocks(feed) == BLOCKS
        for port in ports:  # each holder sent some of what only it had
            (peer,) = log.by_port(port)
            assert peer.blocks_in > 0
        for core, part in zip(holders, parts, strict=True):
            # the holders did not fill in their gaps from each other
            with core.hold(feed_id) as held:
                assert list(held.bitfield.iter_set()) == sorted(set(part))


async def test_download_survives_a_seeder_killed_midway(tmp_path: Path) -> None:
    """The seeder asked first is killed once it has sent 20 blocks; only then is the other
    one dialed (dialed together, either could serve the whole feed in one window)."""
    blocks = make_blocks(1500, seed=3, max_size=16000)  # ~12 MB
    feed_id = await store_feed(tmp_path / "a", blocks)
    copy_db(tmp_path / "a", tmp_path / "b")
    (doomed, doomed_port), (_other, other_port) = [
        await astart_serve(tmp_path / "a"), await astart_serve(tmp_path / "b")]
    async with open_core(tmp_path / "fetcher") as core:
        log = PeerLog(core)
        killed_at: list[int] = []
        killed = trio.Event()

        def kill_midway(feed: Feed, _block: int) -> None:
            if not killed_at and any(p.blocks_in >= 20 for p in log.by_port(doomed_port)):
                doomed.kill(signal.SIGKILL)
                killed_at.append(feed.local)
                killed.set()

        with core.get(feed_id) as feed:
            StoredListener(feed, kill_midway)
            async with open_node(core, peers=[f"127.0.0.1:{doomed_port}"]) as node:
                with trio.fail_after(HANG):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(feed.download)
                        await killed.wait()
                        node.connect(f"127.0.0.1:{other_port}")
                    victims = log.by_port(doomed_port)
                    assert victims, "the doomed seeder never connected"
                    await victims[0].closed.wait()
            assert killed_at and 20 <= killed_at[0] < len(blocks), killed_at
            assert victims[0].close_reason is not None
            assert ("connection lost" in victims[0].close_reason
                    or "closed" in victims[0].close_reason), victims[0].close_reason
            (rescuer,) = log.by_port(other_port)
            assert rescuer.blocks_in > 0  # what the doomed one never sent came from it
            assert local_blocks(feed) == blocks
    await trio.to_thread.run_sync(doomed.proc.wait, 30)
    assert doomed.proc.returncode == -signal.SIGKILL


# ------------------------------------------------------------------ privacy


async def test_peer_learns_only_the_feeds_it_names(tmp_path: Path) -> None:
    async with open_core(tmp_path / "db") as core:
        ids = [await store_feed(core, make_blocks(10, seed=n)) for n in range(3)]
        unknown = os.urandom(32)
        async with open_node(core, listen="127.0.0.1:0") as node:
            raw = await RawPeer.connect(_port(node))
            with trio.fail_after(HANG):
                await raw.until(lambda e: isinstance(e, HandshakeReceived))
                # Joins for a feed not stored here, then for a stored one: the answer to
                # the second shows the first was read, and left unanswered.
                await raw.send(raw.conn.join(unknown) + raw.conn.join(ids[1]))
                await raw.until(lambda e: isinstance(e, Unpaused))
            assert not core.stored(unknown)  # nor did naming it leave a record here
            named = {e.feed_id for e in raw.events if hasattr(e, "feed_id")}
            assert named == {ids[1]}
            assert [type(e) for e in raw.events] == [HandshakeReceived, Joined, HaveReceived,
                                                     Unpaused]
            await raw.aclose()


async def test_handshake_only_peer_is_told_nothing(tmp_path: Path) -> None:
    """A peer that names no feed gets our handshake and nothing else, ever."""
    async with open_core(tmp_path / "db") as core:
        for n in range(3):
            await store_feed(core, make_blocks(10, seed=n))
        log = PeerLog(core)
        async with open_node(core, listen="127.0.0.1:0") as node:
            raw = await RawPeer.connect(_port(node))
            with trio.fail_after(HANG):
                peer = await log.wait_for(lambda p: p.remote_id == raw.conn.peer_id)
                await raw.until(lambda e: isinstance(e, HandshakeReceived))
                # Closing our side makes the node finish with us: whatever it would ever
                # have sent is on the stream before its end.
                await raw.stream.send_eof()
                await raw.until_closed()
                await peer.closed.wait()
            (hello,) = raw.events
            assert isinstance(hello, HandshakeReceived)
            sent = frame(encode(Handshake(hello.protocol, hello.version, hello.peer_id,
                                          hello.extensions)))
            assert raw.bytes_in == peer.bytes_out == len(sent)  # not one byte more


# ------------------------------------------------------------------ lying and silent peers


Answer = Callable[[Feed, int], tuple[bytes, list]]


@asynccontextmanager
async def fake_seeder(source: Feed, answer: Answer | None, *, asked: trio.Event | None = None,
                      gate: Callable[[], Awaitable[object]] | None = None
                      ) -> AsyncIterator[int]:
    """A peer claiming all of ``source`` (it joins at once, unasked), answering Requests
    with ``answer(feed, block)``, or never if None. ``asked`` is set at the first Request;
    answers wait for ``gate()`` to return."""
    feed_id = source.id
    assert feed_id is not None

    async def on_event(conn: Connection, event: Event) -> bytes:
        if not isinstance(event, RequestReceived):
            return b""
        if asked is not None:
            asked.set()
        if answer is None:
            return b""
        if gate is not None:
            await gate()
        block, proof = answer(source, event.block)
        return conn.response(feed_id, event.block, block, proof)

    async def handle(stream: trio.SocketStream) -> None:
        await claim_all(stream, source, on_event)

    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x01]) + data[1:] if data else b"\x00"


def honest_answer(feed: Feed, block: int) -> tuple[bytes, list]:
    data = feed.read_local(block)
    assert data is not None
    return data, feed.proof(block)


def lie_in_data(feed: Feed, block: int) -> tuple[bytes, list]:
    data, proof = honest_answer(feed, block)
    return _flip(data), proof


def lie_in_proof(feed: Feed, block: int) -> tuple[bytes, list]:
    data, proof = honest_answer(feed, block)
    node, digest = proof[0]
    return data, [(node, _flip(digest)), *proof[1:]]


async def _download_past(node: Node, feed: Feed, log: PeerLog, asked: trio.Event,
                         bad_port: int, good_port: int) -> Peer:
    """Download ``feed`` from the bad seeder ``node`` dialed; once it has requests in
    flight, connect the honest one too. Returns the bad seeder's peer, once closed."""
    with trio.fail_after(HANG):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed.download)
            await asked.wait()  # the bad seeder holds requests now
            node.connect(f"127.0.0.1:{good_port}")
        bads = log.by_port(bad_port)  # it may have been redialed since: the first one
        assert bads, f"the seeder on port {bad_port} never connected"
        bad = bads[0]
        await bad.closed.wait()
    return bad


def lie_after_three(feed: Feed, block: int) -> tuple[bytes, list]:
    """Honest for blocks 0-2, lying after: a bad block amid good ones of one read."""
    return (honest_answer if block < 3 else lie_in_data)(feed, block)


@pytest.mark.parametrize("lie", [lie_in_data, lie_in_proof])
async def test_liar_next_to_honest_peer(tmp_path: Path, lie: Answer) -> None:
    liar = await _liar_beside_honest(tmp_path, lie)
    assert liar.blocks_in == 0  # counts verified blocks only


async def test_a_bad_block_amid_good_ones_costs_only_its_peer(tmp_path: Path) -> None:
    """The blocks of one read are put together (Feed.put_many): those before the bad one
    are kept, the peer dropped, and those after it asked of the honest peer."""
    liar = await _liar_beside_honest(tmp_path, lie_after_three)
    assert liar.blocks_in <= 3


async def _liar_beside_honest(tmp_path: Path, lie: Answer) -> Peer:
    """A download from a liar and an honest peer: complete, the liar dropped for it, the
    honest peer kept to the end. The liar's peer, closed."""
    async with open_core(tmp_path / "honest") as honest, \
            open_core(tmp_path / "fetcher") as core:
        feed_id = await store_feed(honest, BLOCKS)
        source = honest.hold(feed_id).feed
        log = PeerLog(core)
        asked = trio.Event()
        async with open_node(honest, listen="127.0.0.1:0") as good:
            good_port = _port(good)
            # The liar answers once the honest peer is connected too: side by side.
            gate = partial(log.wait_for, lambda p: p in log.by_port(good_port))
            async with fake_seeder(source, lie, asked=asked, gate=gate) as liar_port:
                with core.get(feed_id) as feed:
                    async with open_node(core, peers=[f"127.0.0.1:{liar_port}"]) as node:
                        liar = await _download_past(node, feed, log, asked, liar_port,
                                                    good_port)
                    assert local_blocks(feed) == BLOCKS
        assert liar.close_reason is not None and "fails verification" in liar.close_reason
        (honest_peer,) = log.by_port(good_port)
        assert honest_peer.close_reason == "closed locally"  # kept to the end
        assert core.check().ok
    return liar


async def test_cat_from_only_a_liar_fails_cleanly(tmp_path: Path) -> None:
    async with open_core(tmp_path / "src") as src:
        feed_id = await store_feed(src, BLOCKS)
        source = src.hold(feed_id).feed
        async with fake_seeder(source, lie_in_data) as liar_port:
            result = await arun_hyperfs("--db", tmp_path / "db", "cat", feed_id.hex(),
                                        "--peer", f"127.0.0.1:{liar_port}", "--timeout", 2,
                                        timeout=30)
    assert result.stdout == b""
    line = assert_clean_error(result, "no peer sent block 0", "within 2 s")
    drops = result.stderr.decode().count("fails verification")  # why the peer was dropped
    # ... and redialed with back-off (0.25, 0.5, 1 s), not at once as a useful peer is:
    # at most 4 dials fit in 2 s (a slow machine makes fewer, never more); redialing at
    # once would make hundreds.
    assert 1 <= drops <= 5, result.stderr
    assert len(line) < 200
    async with open_core(tmp_path / "db") as core:
        (info,) = core.info()
        assert (info.id, info.blocks, info.local) == (feed_id, None, 0)
        assert core.check().ok


async def test_silent_peer_is_dropped_and_its_blocks_asked_elsewhere(tmp_path: Path) -> None:
    async with open_core(tmp_path / "honest") as honest, \
            open_core(tmp_path / "fetcher") as core:
        feed_id = await store_feed(honest, BLOCKS)
        source = honest.hold(feed_id).feed
        log = PeerLog(core)
        asked = trio.Event()
        async with fake_seeder(source, None, asked=asked) as silent_port, \
                open_node(honest, listen="127.0.0.1:0") as good:
            with core.get(feed_id) as feed:
                async with open_node(core, request_timeout=1.0,
                                     peers=[f"127.0.0.1:{silent_port}"]) as node:
                    silent = await _download_past(node, feed, log, asked, silent_port,
                                                  _port(good))
                assert local_blocks(feed) == BLOCKS
    assert silent.close_reason is not None and "no answer" in silent.close_reason


async def test_cli_request_timeout_drops_a_silent_peer(tmp_path: Path) -> None:
    async with open_core(tmp_path / "src") as src:
        feed_id = await store_feed(src, BLOCKS)
        source = src.hold(feed_id).feed
        asked = trio.Event()
        async with fake_seeder(source, None, asked=asked) as silent_port, \
                fake_seeder(source, honest_answer, gate=asked.wait) as honest_port:
            # The honest peer answers only once the silent one holds requests.
            result = await arun_hyperfs(
                "--db", tmp_path / "db", "cat", feed_id.hex(), "--request-timeout", 1,
                "--peer", f"127.0.0.1:{silent_port}", "--peer", f"127.0.0.1:{honest_port}",
                "--timeout", 20, timeout=40)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"".join(BLOCKS)
    err = result.stderr.decode()
    assert f"127.0.0.1:{silent_port}: no answer to" in err, err


# ------------------------------------------------------------------ misbehaving peers


def _bad_join_skip(raw: RawPeer, feed_id: bytes) -> bytes:
    return frame(encode(Join(3, feed_id)))


BAD_BEFORE_JOIN: dict[str, tuple[Callable[[RawPeer, bytes], bytes], str]] = {
    "oversized": (lambda raw, fid: encode_varint(MAX_MESSAGE + 1) + b"x" * 1000,
                  "protocol error: message larger"),
    "bad-varint": (lambda raw, fid: b"\xff" * 12, "protocol error"),
    "garbage-protobuf": (lambda raw, fid: frame(b"\x00\x0a\xff\xff\xff\xff\x0f\x01"),
                         "protocol error"),
    "join-skips-channel": (_bad_join_skip, "skipping ahead"),
    "unopened-channel": (lambda raw, fid: frame(b"\x05\x08\x07\x10\x01"), "never opened"),
    "unlisted-extension": (lambda raw, fid: frame(b"\x40ping"), "not in the remote's list"),
}
BAD_AFTER_JOIN: dict[str, tuple[Callable[[RawPeer, bytes], bytes], str]] = {
    "request-past-end": (lambda raw, fid: raw.conn.request(fid, len(BLOCKS) + 5),
                         "past the end"),
    "huge-bitfield": (lambda raw, fid: raw.conn.have(fid, bitfield=b"\xff" * (1 << 20)),
                      "Have bitfield of 1048576 bytes for 300 blocks"),
    "bitfield-over-limit": (lambda raw, fid: raw.conn.have(fid, bitfield=b"\x01" * (3 << 20)),
                            "protocol error: bitfield of"),
    "have-past-end": (lambda raw, fid: raw.conn.have(fid, blocks=[10_000]), "past the end"),
    "unrequested-response": (lambda raw, fid: raw.conn.response(fid, 0, BLOCKS[0], []),
                             "never requested"),
}


@pytest.mark.parametrize("case", [*BAD_BEFORE_JOIN, *BAD_AFTER_JOIN])
async def test_bad_peer_is_dropped_and_others_carry_on(tmp_path: Path, case: str) -> None:
    async with open_core(tmp_path / "server") as server, \
            open_core(tmp_path / "good") as good_core:
        feed_id = await store_feed(server, BLOCKS)
        log = PeerLog(server)
        async with open_node(server, listen="127.0.0.1:0") as node:
            with good_core.get(feed_id) as good_feed:
                async with open_node(good_core, peers=[f"127.0.0.1:{_port(node)}"]):
                    with trio.fail_after(HANG):
                        await good_feed.download(0, 100)  # a good peer, mid-download
                        (good,) = log.peers
                        raw = await RawPeer.connect(_port(node))
                        bad = await log.wait_for(lambda p: p.remote_id == raw.conn.peer_id)
                        if case in BAD_AFTER_JOIN:
                            make, reason = BAD_AFTER_JOIN[case]
                            await raw.send(raw.conn.join(feed_id))
                            await raw.until(lambda e: isinstance(e, Unpaused))
                        else:
                            make, reason = BAD_BEFORE_JOIN[case]
                        await raw.send(make(raw, feed_id))
                        await raw.until_closed()
                        await bad.closed.wait()
                        await good_feed.download()  # the good peer was not disturbed
                    assert not good.closed.is_set()
                assert local_blocks(good_feed) == BLOCKS
    assert bad.close_reason is not None and reason in bad.close_reason, bad.close_reason


# ------------------------------------------------------------------ CLI errors


def test_cat_malformed_id(tmp_path: Path) -> None:
    for bad in ("xyz", "00" * 31, "g" * 64):
        result = run_hyperfs("--db", tmp_path / "db", "cat", bad, timeout=30)
        assert_clean_error(result, "64 hex characters")


def test_cat_times_out_without_peers(tmp_path: Path) -> None:
    feed_id = "ab" * 32
    result = run_hyperfs("--db", tmp_path / "db", "cat", feed_id, "--timeout", 0.5, timeout=30)
    assert result.stdout == b""
    line = assert_clean_error(result, "no peer sent block 0", feed_id, "within 0.5 s")
    assert result.stderr.decode().count("\n") == 1, line
    result = run_hyperfs("--db", tmp_path / "db", "cat", feed_id, "4", "--timeout", 0.5,
                         timeout=30)
    assert_clean_error(result, "no peer sent block 4")
    assert result.stderr.decode().count("\n") == 1


def test_serve_on_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_hyperfs("--db", tmp_path / "db", "serve", "--listen", f"127.0.0.1:{port}",
                             timeout=30)
    assert_clean_error(result, "in use")
    assert result.stderr.decode().count("\n") == 1


def test_bad_peer_address(tmp_path: Path) -> None:
    result = run_hyperfs("--db", tmp_path / "db", "cat", "ab" * 32, "--peer", "nohost:port",
                         timeout=30)
    assert result.returncode == 2  # argparse's usage error
    assert "Traceback" not in result.stderr.decode()
    assert "expected HOST:PORT" in result.stderr.decode()


async def test_open_swarm_replicates_over_any_stream(tmp_path: Path) -> None:
    """The seed's createPeerStream piped to another core's: two swarms over an in-memory
    stream pair, no sockets."""
    async with open_core(tmp_path / "a") as seeder, open_core(tmp_path / "b") as fetcher:
        feed_id = await store_feed(seeder, BLOCKS)
        async with open_swarm(seeder) as one, open_swarm(fetcher) as other:
            left, right = trio.testing.memory_stream_pair()
            one.add_peer(left)
            other.add_peer(right)
            with fetcher.get(feed_id) as feed, trio.fail_after(HANG):
                await feed.download()
                assert local_blocks(feed) == BLOCKS
