"""Encrypted connections for real: hyperfs nodes and processes on 127.0.0.1 with a relay in
the middle (``hyperfs.testing.relay``) that records and alters what passes.

What must hold (issue 13): the recording holds neither a feed id (raw or hex) nor any
piece of the data; any change to the stream ends the connection with nothing stored; a
stripped offer never makes a private feed travel in plaintext; a peer inside an
encrypted connection that does not know an id learns nothing, and a flood of random
discovery keys is capped; JS peers still get public feeds, and never private ones.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path

import pytest
import trio

from hyperfs import open_core
from hyperfs.net.node import open_node
from hyperfs.replication.peer import REMOTE_CLOSED
from hyperfs.replication.secure import NODE_KEY_FILE
from hyperfs.testing.jsref import arun_js_fetch, start_js_fetcher
from hyperfs.testing.network import PeerLog, arun_hyperfs, astart_serve, local_blocks, store_feed
from hyperfs.testing.relay import Alter, assert_nothing_revealed, open_relay, strip_offer
from hyperfs.testing.requirements import JS_PEER, js_available, require
from hyperfs.testing.securepeer import open_secure_peer
from hyperfs.wire.capabilities import discovery_key
from hyperfs.wire.events import Joined
from hyperfs.wire.framing import frame
from hyperfs.wire.messages import Handshake, Join, decode_handshake, encode
from hyperfs.wire.protobuf import decode_varint
from hyperfs.wire.secure import SECURE

HANG = 30  # seconds before a wait counts as hung


def _blocks(count: int = 40, size: int = 4096, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for _ in range(count)]


async def test_the_wire_between_two_hyperfs_processes_reveals_nothing(tmp_path: Path) -> None:
    """`hyperfs serve` and `hyperfs cat` through a recording relay: the data arrives,
    and the recording holds no id and no piece of it."""
    data = os.urandom(300_000)
    source = tmp_path / "file"
    source.write_bytes(data)
    added = await arun_hyperfs("--db", tmp_path / "seed", "add", source, "--block-size", "16384")
    feed_id = added.stdout.decode().strip()
    serve, port = await astart_serve(tmp_path / "seed")
    with serve:
        async with open_relay(port) as relay:
            got = await arun_hyperfs("--db", tmp_path / "fetch", "cat", feed_id,
                                     "--peer", f"127.0.0.1:{relay.port}", "--timeout", "30")
            assert got.returncode == 0, got.stderr
            assert got.stdout == data
    recorded = bytes(relay.recorded["up"] + relay.recorded["down"])
    assert len(relay.recorded["down"]) > len(data)  # all of it crossed the relay, sealed
    assert SECURE.encode() in recorded  # the 1.x handshakes are plaintext, as they must be
    assert_nothing_revealed(recorded, bytes.fromhex(feed_id),
                             [data[i:i + 16384] for i in range(0, len(data), 16384)])


@pytest.mark.parametrize("way, action, index", [
    ("up", "flip", 0), ("down", "flip", 0), ("up", "replay", 0), ("down", "replay", 0),
    ("down", "reorder", 1), ("up", "truncate", 0), ("down", "truncate", 0),
    ("up", "flip-noise", 0), ("down", "flip-noise", 0),
    ("up", "strip", 0), ("down", "strip", 0), ("both", "strip", 0),
])
async def test_an_altered_stream_drops_and_stores_nothing(
        tmp_path: Path, way: str, action: str, index: int) -> None:
    """The relay alters the fetcher's ("up") or the seeder's ("down") direction of every
    connection; the connection ends (the fetcher redials: the next one too) and not one
    block of the (private) feed is stored. Blocks of 20,000 bytes travel in frames of
    their own (smaller writes are coalesced), so there is a frame 1 and 2 to reorder."""
    blocks = _blocks(count=12, size=20_000, seed=index)
    async with open_core(tmp_path / "seed") as seeder, open_core(tmp_path / "fetch") as fetcher:
        feed_id = await store_feed(seeder, blocks)
        seeder.private.mark(feed_id)
        fetcher.private.mark(feed_id)

        def alter(direction: str) -> Alter | None:
            if action == "strip":
                return Alter(hello=strip_offer) if way in (direction, "both") else None
            return Alter(action, index=index) if direction == way else None

        async with open_node(seeder, listen="127.0.0.1:0") as node:
            assert node.address is not None
            async with open_relay(node.address[1], alter) as relay:
                with fetcher.get(feed_id) as feed:
                    feed.prefetch(0, None)  # ask for every block as soon as it can
                    async with open_node(fetcher, peers=[f"127.0.0.1:{relay.port}"]):
                        with trio.fail_after(HANG):
                            await relay.wait_closed(2)
                    assert feed.local == 0
                    assert local_blocks(feed) == []  # not even the length was learned
        assert_nothing_revealed(bytes(relay.recorded["up"] + relay.recorded["down"]),
                                 feed_id, blocks)


async def test_a_cut_at_a_frame_boundary_is_told_from_an_orderly_close(
        tmp_path: Path) -> None:
    """The relay ends the seeder's direction of the first connection cleanly between two
    sealed frames: the fetcher drops it as cut (no final frame came), not as closed by
    the remote. It redials and finishes; its orderly close (the final frame) reaches the
    seeder as the remote closing."""
    blocks = _blocks(count=12, size=20_000, seed=9)
    cuts = iter([Alter("truncate", index=3)])
    async with open_core(tmp_path / "seed") as seeder, open_core(tmp_path / "fetch") as fetcher:
        feed_id = await store_feed(seeder, blocks)
        seeds, fetches = PeerLog(seeder), PeerLog(fetcher)
        async with open_node(seeder, listen="127.0.0.1:0") as node:
            assert node.address is not None
            async with open_relay(node.address[1],
                                  lambda way: next(cuts, None) if way == "down" else None
                                  ) as relay:
                with fetcher.get(feed_id) as feed:
                    async with open_node(fetcher, peers=[f"127.0.0.1:{relay.port}"]):
                        with trio.fail_after(HANG):
                            await feed.download()
                            # Closed between writes, as a node at rest is (one closed
                            # mid-write cannot end in order: the remote sees a cut).
                            await fetches.peers[-1].outbox.flush(HANG)
                    assert local_blocks(feed) == blocks
                with trio.fail_after(HANG):
                    await relay.wait_closed(2)
                    for peer in [*seeds.peers, *fetches.peers]:
                        await peer.closed.wait()
    assert [len(seeds.peers), len(fetches.peers)] == [2, 2]
    assert "ended without its final frame" in (fetches.peers[0].close_reason or "")
    assert seeds.peers[1].close_reason == REMOTE_CLOSED


async def test_a_disguised_hyperfs_peer_gets_no_private_feed_in_plaintext(
        tmp_path: Path) -> None:
    """The relay removes every hyperfs extension from both handshakes: each side sees a
    plain 1.x peer. Public feeds still replicate (so the connection is seen working);
    the private feed is never named, nor any of its blocks sent, by either side."""
    private, public = _blocks(seed=7), _blocks(count=5, seed=8)

    def disguise(hello: bytes) -> bytes:
        size, pos = decode_varint(hello, 0)
        old = decode_handshake(hello[pos:pos + size])
        names = tuple(n for n in old.extensions if not n.startswith("hyperfs-"))
        return frame(encode(Handshake(old.protocol, old.version, old.id, names)))

    async with open_core(tmp_path / "seed") as seeder, open_core(tmp_path / "fetch") as fetcher:
        private_id = await store_feed(seeder, private)
        public_id = await store_feed(seeder, public)
        seeder.private.mark(private_id)
        fetcher.private.mark(private_id)
        async with open_node(seeder, listen="127.0.0.1:0") as node:
            assert node.address is not None
            async with open_relay(node.address[1], lambda way: Alter(hello=disguise)) as relay:
                with fetcher.get(private_id) as hidden, fetcher.get(public_id) as shown:
                    async with open_node(fetcher, peers=[f"127.0.0.1:{relay.port}"]):
                        with trio.fail_after(HANG):
                            await shown.download()
                    assert local_blocks(shown) == public
                    assert hidden.local == 0
    assert_nothing_revealed(bytes(relay.recorded["up"] + relay.recorded["down"]),
                             private_id, private)


async def test_status_says_encrypted_and_the_node_key(tmp_path: Path) -> None:
    async with open_core(tmp_path / "seed") as seeder, open_core(tmp_path / "fetch") as fetcher:
        feed_id = await store_feed(seeder, _blocks(count=3))
        log = PeerLog(fetcher)
        async with open_node(seeder, listen="127.0.0.1:0") as node:
            assert node.address is not None
            with fetcher.get(feed_id) as feed:
                async with open_node(fetcher, peers=[f"127.0.0.1:{node.address[1]}"]) as mine:
                    with trio.fail_after(HANG):
                        await feed.download()
                        await log.wait_for(lambda peer: True)
                    [peer] = mine.status()["peers"]  # type: ignore[misc]
                    [theirs] = node.status()["peers"]  # type: ignore[misc]
    seed_key = (tmp_path / "seed" / NODE_KEY_FILE).read_bytes()[32:]
    fetch_key = (tmp_path / "fetch" / NODE_KEY_FILE).read_bytes()[32:]
    assert peer["encrypted"] and peer["node_key"] == seed_key.hex()
    assert theirs["encrypted"] and theirs["node_key"] == fetch_key.hex()
    assert seed_key != fetch_key
    for db in ("seed", "fetch"):
        assert (tmp_path / db / NODE_KEY_FILE).stat().st_mode & 0o777 == 0o600


async def test_guessed_capabilities_learn_nothing_and_random_keys_are_capped(
        tmp_path: Path) -> None:
    """A peer inside an encrypted connection knows a stored feed's discovery key but not
    its id: its Joins with guessed capabilities get no answer at all. Then 10,000 random
    discovery keys: the node drops it at the channel cap, having said nothing."""
    async with open_core(tmp_path / "seed") as seeder:
        feed_id = await store_feed(seeder, _blocks(count=3))
        async with open_node(seeder, listen="127.0.0.1:0") as node:
            assert node.address is not None
            attacker = await open_secure_peer(node.address[1])
            guesses = b"".join(frame(encode(Join(n, discovery_key(feed_id), os.urandom(32))))
                               for n in range(100))
            await attacker.send(guesses)
            # A Join it can open, on a feed id it knows, is answered: the probe that
            # shows the node has read (and ignored) the guesses before it.
            known = await store_feed(seeder, _blocks(count=2, seed=3))
            attacker.know(known)
            await attacker.send(frame(encode(Join(100, discovery_key(known),
                                                  attacker.capabilities.ours(known)))))
            with trio.fail_after(HANG):
                await attacker.until(lambda event: event == Joined(known))
            heard = attacker.events
            assert [e for e in heard if isinstance(e, Joined)] == [Joined(known)]
            assert all(getattr(e, "feed_id", known) == known for e in heard)
            [peer] = node.swarm.peers
            assert list(peer.channels) == [known]
            flood = b"".join(frame(encode(Join(n, os.urandom(32), os.urandom(32))))
                             for n in range(101, 10_101))
            with contextlib.suppress(trio.BrokenResourceError):  # it may close first
                await attacker.send(flood)
            with trio.fail_after(HANG):
                await attacker.until_closed()
            heard = attacker.events
            assert peer.close_reason is not None and "1024 channels" in peer.close_reason
            assert all(getattr(e, "feed_id", known) == known for e in heard)


async def test_js_peers_get_public_feeds_never_private_ones(tmp_path: Path) -> None:
    require(js_available(), JS_PEER)
    public, private = _blocks(count=4, seed=4), _blocks(count=4, seed=5)
    async with open_core(tmp_path / "seed") as seeder:
        public_id = await store_feed(seeder, public)
        private_id = await store_feed(seeder, private)
        seeder.private.mark(private_id)
        async with open_node(seeder, listen="127.0.0.1:0") as node:
            assert node.address is not None
            async with open_relay(node.address[1]) as relay:
                got = await arun_js_fetch(f"127.0.0.1:{relay.port}", public_id.hex())
                assert got["data"] == b"".join(public)
                js = start_js_fetcher(f"127.0.0.1:{relay.port}", private_id.hex())
                try:
                    with trio.fail_after(HANG):  # until the seeder has heard its Join
                        while not any(len(peer.offers) for peer in node.swarm.peers):
                            await trio.sleep(0.01)
                    [peer] = node.swarm.peers
                    assert not peer.encrypted and not peer.channels
                finally:
                    js.terminate()
    recorded = bytes(relay.recorded["down"])
    assert private_id in bytes(relay.recorded["up"])  # it asked, in plaintext (JS does)
    assert private_id not in recorded  # the seeder never joined it back
    for block in private:
        assert block[:16] not in recorded


async def test_secure_only_refuses_js_peers(tmp_path: Path) -> None:
    require(js_available(), JS_PEER)
    async with open_core(tmp_path / "seed") as seeder:
        public_id = await store_feed(seeder, _blocks(count=2))
        async with open_node(seeder, listen="127.0.0.1:0", secure_only=True) as node:
            assert node.address is not None
            async with open_relay(node.address[1]) as relay:
                js = start_js_fetcher(f"127.0.0.1:{relay.port}", public_id.hex())
                try:
                    with trio.fail_after(HANG):
                        await relay.wait_closed(1)  # dropped right after the handshakes
                finally:
                    js.terminate()
    assert public_id not in bytes(relay.recorded["down"])
