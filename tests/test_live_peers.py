"""What a live feed's receiver does with bad signed lengths, and how forks are caught.

A victim node wants a live feed; a hostile hyperfs peer (hyperfs.testing.live) sends it
a signed length that is forged, by another key, unsigned, oversized, backwards, or for a
static feed. Each time the victim drops the peer with the reason logged and stores
nothing of it. Forks: two copies of one secret key append different blocks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from hyperfs import open_core
from hyperfs.base.errors import BadSignature, FeedForked, NotWritable, SecretKeyMismatch
from hyperfs.net.node import Node, open_node
from hyperfs.store.keys import secret_path
from hyperfs.testing.live import (
    send_live,
    signed_by_another_key,
    signed_now,
    with_signature,
)
from hyperfs.testing.network import copy_db, store_feed
from hyperfs.wire.live import SignedLength, encode

HANG = 30


def _port(node: Node) -> int:
    assert node.address is not None
    return node.address[1]


async def _hostile_case(case: str, tmp_path: Path) -> tuple[list[bytes], int]:
    """The payloads of ``case`` and the length the victim should hold after them; the
    victim's database (tmp_path / "victim") then holds the first two blocks, verified."""
    async with open_core(tmp_path / "writer") as writer_core:
        writer = writer_core.add(live=True)
        await writer.append([b"a", b"b"])
        at_two = signed_now(writer)
        await writer.append(b"c")
        at_three = signed_now(writer, old=2)
        async with open_core(tmp_path / "victim") as victim:
            with victim.get(writer.id) as feed:
                feed.learn_live(at_two.length, at_two.roots, at_two.signature)
            for index in range(2):  # the victim holds blocks too: they must survive
                victim.get(writer.id).put(index, writer.read_local(index) or b"",
                                          writer.proof(index))
    if case == "forged":
        return [encode(with_signature(at_three, bytes(reversed(at_three.signature))))], 2
    if case == "foreign key":
        return [encode(signed_by_another_key(at_three))], 2
    if case == "unsigned":
        return [encode(with_signature(at_three, bytes(64)))], 2
    if case == "oversized":
        big = SignedLength(at_three.feed_id, 1 << 41, at_three.signature, at_three.roots)
        return [encode(big)], 2
    if case == "truncated":
        return [encode(at_three)[:-7]], 2
    assert case == "backwards"
    return [encode(at_three), encode(at_two)], 3


@pytest.mark.parametrize("case", ["forged", "foreign key", "unsigned", "oversized",
                                  "truncated", "backwards"])
async def test_bad_signed_length_drops_the_peer(case: str, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    payloads, length = await _hostile_case(case, tmp_path)
    async with open_core(tmp_path / "victim") as victim:
        feed_id = next(info.id for info in victim.info())
        with victim.get(feed_id) as feed:
            async with open_node(victim, listen="127.0.0.1:0") as node:
                with trio.fail_after(HANG):
                    await send_live(_port(node), feed_id, payloads)
            assert feed.blocks == length and feed.local == 2
        assert victim.check().problems == []
    dropped = [r.getMessage() for r in caplog.records if "dropping peer" in r.getMessage()]
    assert dropped and ("signed length" in dropped[0]), dropped


async def test_signed_length_for_a_static_feed_drops_the_peer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with open_core(tmp_path / "w") as writer_core:
        writer = writer_core.add(live=True)
        await writer.append(b"a")
        message = signed_now(writer)
    async with open_core(tmp_path / "v") as victim:
        static = await store_feed(victim, [b"static"])
        lie = SignedLength(static, message.length, message.signature, message.roots)
        with victim.get(static) as feed:
            async with open_node(victim, listen="127.0.0.1:0") as node:
                with trio.fail_after(HANG):
                    await send_live(_port(node), static, [encode(lie)])
            assert not feed.live and feed.blocks == 1
    assert any("a static feed" in r.getMessage() for r in caplog.records)


async def test_a_copied_key_forks_and_the_writer_refuses(tmp_path: Path) -> None:
    """Two machines with one secret key append different blocks at the same length: each
    catches the fork when they meet, keeps the evidence, refuses to append again (also
    after a restart), and keeps the blocks it had."""
    async with open_core(tmp_path / "a") as a:
        feed_id = a.add(live=True).id
        assert feed_id is not None
        await a.get(feed_id).append(b"shared")
    copy_db(tmp_path / "a", tmp_path / "copy")
    async with open_core(tmp_path / "a") as a, open_core(tmp_path / "copy") as copy:
        mine, theirs = a.get(feed_id), copy.get(feed_id)
        await mine.append(b"mine")
        await theirs.append(b"theirs")
        forked = [trio.Event(), trio.Event()]
        a.on("fork", lambda feed: forked[0].set())
        copy.on("fork", lambda feed: forked[1].set())
        async with open_node(a, listen="127.0.0.1:0") as node, \
                open_node(copy, peers=[f"127.0.0.1:{_port(node)}"]):
            with trio.fail_after(HANG):
                for event in forked:
                    await event.wait()
        assert not mine.writable and not theirs.writable
        with pytest.raises(FeedForked, match="forked"):
            await mine.append(b"more")
        assert [mine.read_local(i) for i in range(2)] == [b"shared", b"mine"]
    async with open_core(tmp_path / "a") as a:
        again = a.get(feed_id)
        assert not again.writable
        with pytest.raises(FeedForked):
            await again.append(b"more")
        assert a.check().problems == []
        assert [info.kind for info in a.info()] == ["live, forked"]  # what ls shows


async def test_secret_key_is_private_and_checked(tmp_path: Path) -> None:
    async with open_core(tmp_path / "a") as a:
        feed = a.add(live=True)
        assert feed.id is not None
        path = secret_path(tmp_path / "a", feed.id)
        assert path.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "a" / "keys").stat().st_mode & 0o777 == 0o700
        other = a.add(live=True)
        assert other.id is not None
        feed_id, other_id = feed.id, other.id
    path.write_bytes(secret_path(tmp_path / "a", other_id).read_bytes())  # the wrong key
    with pytest.raises(SecretKeyMismatch, match="belongs to another feed"):
        async with open_core(tmp_path / "a") as a:
            a.get(feed_id)
    secret_path(tmp_path / "a", feed_id).unlink()
    async with open_core(tmp_path / "a") as a:
        reader = a.get(feed_id)
        assert reader.live and not reader.writable
        with pytest.raises(NotWritable, match="secret key"):
            await reader.append(b"x")
        with pytest.raises(BadSignature):
            reader.live_state.receive(1, [(0, bytes(32))], bytes(64), 0, ())  # type: ignore[union-attr]


async def test_a_signature_is_checked_once_per_length(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A signed length told again (by each peer of a chain) is not verified again."""
    from hyperfs.tree import signing
    calls: list[int] = []
    real = signing.verify
    monkeypatch.setattr(signing, "verify", lambda *args: calls.append(args[1]) or real(*args))
    async with open_core(tmp_path / "w") as w, open_core(tmp_path / "r") as r:
        writer = w.add(live=True)
        await writer.append(b"a")
        message = signed_now(writer)
        feed = r.get(writer.id)
        feed.learn_live(message.length, message.roots, message.signature)
        for _ in range(3):
            assert not feed.live_state.receive(  # type: ignore[union-attr]
                message.length, message.roots, message.signature, None, ())
    assert calls == [1]
    logging.getLogger().debug("verified %s", calls)
