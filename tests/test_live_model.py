"""The model of live feeds without a network: signing, upgrade proofs, appends, follows.

Pure parts (hyperfs.tree.signing, hyperfs.tree.upgrade) are checked exhaustively over
small lengths; feeds through real cores on real LevelDB.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio
import trio.testing

from hyperfs import open_core
from hyperfs.base.errors import BadProof, BadSignature
from hyperfs.testing.live import signed_now
from hyperfs.tree.merkle import TreeBuilder, within
from hyperfs.tree.signing import MAX_LENGTH, PREFIX, Signer, signable, verify
from hyperfs.tree.upgrade import upgrade_indexes, verify_upgrade
from hyperfs.wire.live import SignedLength, decode, encode


def _trees(old: int, new: int) -> tuple[list, list, dict[int, bytes]]:
    builder, nodes = TreeBuilder(), {}
    blocks = [os.urandom(3) for _ in range(new)]
    nodes.update(builder.extend(blocks[:old]))
    old_roots = list(builder.roots)
    nodes.update(builder.extend(blocks[old:]))
    return old_roots, list(builder.roots), nodes


def test_upgrade_proofs_tie_every_length_to_every_longer_one() -> None:
    for old in range(0, 34):
        for new in range(old + 1, 36):
            old_roots, new_roots, nodes = _trees(old, new)
            needed = upgrade_indexes(old, new)
            learned = verify_upgrade(old_roots, new_roots, [(i, nodes[i]) for i in needed])
            assert all(nodes[index] == digest for index, digest in learned)
            if needed:  # any wrong node, a missing one, or one too many: refused
                with pytest.raises(BadProof):
                    verify_upgrade(old_roots, new_roots, [(i, bytes(32)) for i in needed])
                with pytest.raises(BadProof):
                    verify_upgrade(old_roots, new_roots, [(i, nodes[i]) for i in needed[1:]])
            with pytest.raises(BadProof):
                verify_upgrade(old_roots, new_roots,
                               [(i, nodes[i]) for i in needed] + [(0, bytes(32))])


def test_another_tree_does_not_pass_as_an_upgrade() -> None:
    old_roots, _, _ = _trees(5, 9)
    _, other_roots, other_nodes = _trees(5, 9)  # other blocks: a fork
    needed = upgrade_indexes(5, 9)
    with pytest.raises(BadProof):
        verify_upgrade(old_roots, other_roots, [(i, other_nodes[i]) for i in needed])


def test_signatures_cover_length_roots_and_prefix() -> None:
    signer = Signer.generate()[0]
    _, roots, _ = _trees(0, 7)
    signature = signer.sign(7, roots)
    verify(signer.public_key, 7, roots, signature)
    assert signable(7, roots).startswith(PREFIX)
    other = [(roots[0][0], bytes(32)), *roots[1:]]
    _, eight, _ = _trees(0, 8)
    for length, tree, sig, key in ((7, other, signature, signer.public_key),
                                   (7, roots, signature, Signer.generate()[0].public_key),
                                   (7, roots, bytes(64), signer.public_key),
                                   (8, eight, signature, signer.public_key),
                                   (MAX_LENGTH + 1, roots, signature, signer.public_key),
                                   (6, roots, signature, signer.public_key)):
        with pytest.raises(BadSignature):
            verify(key, length, tree, sig)


def test_wire_message_round_trips_and_refuses_bad_sizes() -> None:
    _, roots, nodes = _trees(0, 11)
    needed = upgrade_indexes(6, 11)
    message = SignedLength(os.urandom(32), 11, os.urandom(64), roots, 6,
                           tuple((i, nodes[i]) for i in needed))
    assert decode(encode(message)) == message
    plain = SignedLength(message.feed_id, 11, message.signature, roots)
    assert decode(encode(plain)) == plain
    from hyperfs.wire.protobuf import ProtocolError
    for payload in (encode(message)[:-1], encode(message) + bytes(32), b"short",
                    encode(SignedLength(message.feed_id, 0, message.signature, []))):
        with pytest.raises(ProtocolError):
            decode(payload)


async def test_append_signs_each_batch_and_emits_append(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        seen: list[int | None] = []
        core.on("append", lambda feed: seen.append(feed.blocks))
        feed = core.add(live=True)
        assert feed.live and feed.writable and feed.blocks == 0
        assert await feed.get(0) is None  # past the end: EOF, not a wait
        await feed.append(b"one")
        await feed.append([b"two", b"three"])
        assert seen == [1, 3]
        message = signed_now(feed)
        verify(feed.id, 3, feed.roots, message.signature)  # type: ignore[arg-type]
        assert core.check().ok


async def test_read_stream_follows_and_stops_at_its_limit(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        feed = core.add(live=True)
        got: list[bytes] = []

        async def follow() -> None:
            async for block in core.create_read_stream(feed.id, live=True, limit=4):  # type: ignore[arg-type]
                got.append(block)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                for index in range(4):
                    await trio.testing.wait_all_tasks_blocked()
                    await feed.append(b"%d" % index)
        assert got == [b"0", b"1", b"2", b"3"]
        static = core.add()
        await static.append(b"x")
        static_id = await static.finalize()
        assert [b async for b in core.create_read_stream(static_id, live=True)] == [b"x"]


async def test_blocks_verify_from_a_responder_that_knows_more(tmp_path: Path) -> None:
    """A receiver at length 3 takes block 1 with a proof made at length 7 (the responder
    had appended since): the nodes below its roots are the same in both trees."""
    async with open_core(tmp_path / "w") as w, open_core(tmp_path / "r") as r:
        writer = w.add(live=True)
        await writer.append([b"a", b"b", b"c"])
        at_three = signed_now(writer)
        await writer.append([b"d", b"e", b"f", b"g"])
        copy = r.get(writer.id)  # type: ignore[arg-type]
        copy.learn_live(at_three.length, at_three.roots, at_three.signature)
        proof = writer.proof(1)
        assert within(1, 3, proof) != proof
        assert copy.put(1, b"b", proof)
        with pytest.raises(BadProof):
            copy.put(2, b"not c", writer.proof(2))
        assert copy.local == 1 and r.check().ok


async def test_a_deleted_live_feed_of_ours_fetched_again_is_writable(tmp_path: Path) -> None:
    async with open_core(tmp_path / "a") as a, open_core(tmp_path / "b") as b:
        feed = a.add(live=True)
        await feed.append([b"a", b"b"])
        feed_id, message = feed.id, signed_now(feed)
        assert feed_id is not None
        with b.get(feed_id) as copy:  # another machine has it
            copy.learn_live(message.length, message.roots, message.signature)
        feed.close()
        await a.remove(feed_id)
        again = a.get(feed_id)
        assert not again.live  # unknown again, until a peer tells its length
        again.learn_live(message.length, message.roots, message.signature)
        assert again.writable
        await again.append(b"c")
        assert again.blocks == 3 and again.local == 1
        assert a.check().ok
