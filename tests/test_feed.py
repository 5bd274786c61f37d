"""Feeds: append/finalize rules, and replication's put() as property tests on two cores.

Every property runs a real source core and a real second core (a fresh copy, or one that
already holds some blocks) in temporary directories: what one proves, the other verifies.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperfs import (
    BadProof,
    BlockUnavailable,
    Core,
    EmptyFeed,
    FeedFinalized,
    InvalidIndex,
    open_core,
)
from hyperfs.feeds.feed import BadBlock, Feed
from hyperfs.tree.bitfield import Bitfield

PROPS = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
feeds = st.lists(st.binary(max_size=48), min_size=1, max_size=40)


def with_two_cores(
    blocks: list[bytes], body: Callable[[Feed, Core, Path], Awaitable[None]]
) -> None:
    """Run ``body(source feed, second core, its path)`` on fresh cores, synchronously."""

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="hyperfs-test-") as tmp:
            async with open_core(Path(tmp) / "a") as a:
                src = a.add()
                await src.append(blocks)
                await src.finalize()
                core = Core(Path(tmp) / "b")
                try:
                    await body(src, core, Path(tmp) / "b")
                finally:
                    core.close()

    trio.run(main)


def fid(feed: Feed) -> bytes:
    """A finalized feed's id."""
    assert feed.id is not None
    return feed.id


def snapshot(core: Core) -> list[tuple[bytes, bytes]]:
    return list(core.store.db.iterator())


async def assert_reopen(core: Core, path: Path, feed_id: bytes, local: set[int]) -> None:
    """Close the second core, reopen it: exactly ``local`` is held and the check passes."""
    core.close()
    async with open_core(path) as again:
        assert again.check().ok, again.check().problems
        feed = again.get(feed_id)
        assert set(feed.bitfield.iter_set()) == local


@PROPS
@given(feeds, st.data())
def test_proof_and_put_verify_on_a_fresh_copy(blocks: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(blocks) - 1))

    async def body(src: Feed, core: Core, path: Path) -> None:
        dst = core.get(fid(src))
        assert dst.blocks is None and not dst.has(index)
        assert dst.put(index, blocks[index], src.proof(index)) is True
        assert dst.blocks == len(blocks) and dst.has(index) and dst.local == 1
        assert await dst.get(index, wait=False) == blocks[index]
        assert dst.put(index, blocks[index], src.proof(index)) is False  # already held
        await assert_reopen(core, path, fid(src), {index})

    with_two_cores(blocks, body)


def tamper(proof: list, block: bytes, data: st.DataObject, *, may_drop: bool):
    """One corruption of (block, proof): a flipped bit, a dropped or reordered node."""
    kinds = ["data", "proof", "swap", "index"] + (["drop"] if may_drop else [])
    kind = data.draw(st.sampled_from(kinds if len(proof) > 1 else ["data", "proof", "index"]))
    proof = list(proof)
    if kind == "data":
        if not block:
            return proof, b"\0"
        bit = data.draw(st.integers(0, 8 * len(block) - 1))
        flipped = bytearray(block)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        return proof, bytes(flipped)
    pos = data.draw(st.integers(0, len(proof) - 1))
    if kind == "proof":
        bit = data.draw(st.integers(0, 255))
        digest = bytearray(proof[pos][1])
        digest[bit // 8] ^= 0x80 >> (bit % 8)
        proof[pos] = (proof[pos][0], bytes(digest))
    elif kind == "drop":
        del proof[pos]
    elif kind == "index":
        proof[pos] = (proof[pos][0] + data.draw(st.integers(1, 5)), proof[pos][1])
    else:
        other = data.draw(st.integers(0, len(proof) - 1).filter(lambda p: p != pos))
        proof[pos], proof[other] = proof[other], proof[pos]
    return proof, block


@PROPS
@given(feeds, st.data())
def test_tampered_put_is_rejected_and_stores_nothing(
    blocks: list[bytes], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(blocks) - 1))

    async def body(src: Feed, core: Core, path: Path) -> None:
        dst = core.get(fid(src))
        before = snapshot(core)
        proof, block = tamper(src.proof(index), blocks[index], data, may_drop=True)
        with pytest.raises(BadProof):
            dst.put(index, block, proof)
        assert snapshot(core) == before
        assert not dst.has(index) and dst.local == 0 and dst.blocks is None
        with pytest.raises(BlockUnavailable):
            await dst.get(index, wait=False)
        await assert_reopen(core, path, fid(src), set())

    with_two_cores(blocks, body)


@PROPS
@given(feeds, st.randoms(use_true_random=False), st.data())
def test_puts_in_random_order_with_shortened_proofs(
    blocks: list[bytes], rnd: random.Random, data: st.DataObject
) -> None:
    """A copy that already has some blocks takes full proofs and proofs with the nodes it
    holds left out; tampered data is still rejected there, storing nothing."""
    order = list(range(len(blocks)))
    rnd.shuffle(order)

    async def body(src: Feed, core: Core, path: Path) -> None:
        dst = core.get(fid(src))
        for count, index in enumerate(order):
            proof = src.proof(index)
            if count and data.draw(st.booleans()):  # the tampered attempt first
                bad_block = blocks[index] + b"!"
                before = snapshot(core)
                with pytest.raises(BadProof):
                    dst.put(index, bad_block, proof)
                assert snapshot(core) == before and not dst.has(index)
            if count and rnd.random() < 0.6:
                proof = [(i, d) for i, d in proof if core.store.node(dst.num, i) is None]
            assert dst.put(index, blocks[index], proof)
            assert await dst.get(index, wait=False) == blocks[index]
        assert dst.local == len(blocks)
        assert [b async for b in core.create_read_stream(fid(src))] == blocks
        await assert_reopen(core, path, fid(src), set(order))

    with_two_cores(blocks, body)


async def test_append_finalize_rules(tmp_path: Path) -> None:
    async with open_core(tmp_path) as core:
        feed = core.add()
        with pytest.raises(EmptyFeed):
            await feed.finalize()
        await feed.append(b"a")
        await feed.append([b"b", bytearray(b"c"), memoryview(b"d")])
        assert feed.local == 4 and feed.writable and feed.id is None
        feed_id = await feed.finalize()
        assert feed.blocks == 4 and feed.id == feed_id and not feed.writable
        with pytest.raises(FeedFinalized):
            await feed.append(b"e")
        with pytest.raises(FeedFinalized):
            await feed.finalize()
        for bad in (-1, 1.0, "1", True, None):
            with pytest.raises(InvalidIndex):
                await feed.get(bad)
            with pytest.raises(InvalidIndex):
                feed.has(bad)
        assert await feed.get(4) is None
        with pytest.raises(TypeError):
            await core.add().append(["not bytes"])
        assert list(feed.iter_local()) == [b"a", b"b", b"c", b"d"]
        assert list(feed.iter_local(1, 3)) == [b"b", b"c"]


async def test_get_waits_for_put(tmp_path: Path) -> None:
    async with open_core(tmp_path / "a") as a, open_core(tmp_path / "b") as b:
        src = a.add()
        await src.append([b"x", b"y", b"z"])
        await src.finalize()
        dst = b.get(fid(src))
        got: list[bytes | None] = []

        async def reader() -> None:
            got.append(await dst.get(2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert dst.wanted == [2]
            dst.put(2, b"z", src.proof(2))
        assert got == [b"z"] and dst.wanted == []
        with pytest.raises(TimeoutError):
            await dst.get(0, timeout=0.01)


@PROPS
@given(feeds, st.randoms(use_true_random=False), st.data())
def test_put_many_stores_the_blocks_before_a_bad_one_and_none_after(
    blocks: list[bytes], rnd: random.Random, data: st.DataObject
) -> None:
    """One network read's blocks in one put_many, proofs as a seeder sends them to a
    peer taking ordered proofs (leaving out what blocks sent before gave it): all of
    them verified and stored in one batch; with a tampered one among them, those before
    it are stored, it is named (BadBlock), and nothing after it is; the rest arrive
    again and complete the feed, byte for byte."""
    order = list(range(len(blocks)))
    if data.draw(st.booleans()):
        rnd.shuffle(order)
    bad = data.draw(st.none() | st.integers(0, len(order) - 1))

    async def body(src: Feed, core: Core, path: Path) -> None:
        dst = core.get(fid(src))
        sent = Bitfield()
        received = []
        for index in order:
            received.append((index, blocks[index], src.proof(index, sent)))
            sent.add(index)
        if bad is None:
            assert dst.put_many(received) == len(blocks)
        else:
            index, block, proof = received[bad]
            received[bad] = (index, block + b"!", proof)
            with pytest.raises(BadBlock) as raised:
                dst.put_many(received)
            assert raised.value.block == index
            assert set(dst.bitfield.iter_set()) == set(order[:bad])
            assert dst.put_many([(i, blocks[i], src.proof(i)) for i in order[bad:]]) == \
                len(order) - bad
        assert dst.put_many(received[:1]) == 0  # already held
        assert [b async for b in core.create_read_stream(fid(src))] == blocks
        await assert_reopen(core, path, fid(src), set(order))

    with_two_cores(blocks, body)
