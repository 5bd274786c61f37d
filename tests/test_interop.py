"""hyperfs against the JavaScript reference (hypercore 1.8.0) over real loopback TCP.

Both directions, with the library (open_node) and the CLI (`hyperfs cat`, `hyperfs serve`):
whole feeds, one middle block, the ping extension, and a JS -> hyperfs -> JS chain. Feeds
have a few hundred blocks of odd sizes and an empty block. Waits are bounded by HANG (or a
process timeout), generous on purpose: they catch a hang, they do not measure speed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from hyperfs import Core, open_core
from hyperfs.net.node import open_node
from hyperfs.replication.peer import Peer
from hyperfs.testing.jsref import arun_js_fetch, run_js_fetch, start_js_fetcher, start_js_seeder
from hyperfs.testing.network import (
    arun_hyperfs,
    astart_serve,
    local_blocks,
    make_blocks,
    run_hyperfs,
    start_serve,
    store_feed,
)
from hyperfs.testing.requirements import JS_PEER, js_available, require


@pytest.fixture(autouse=True)
def _js_peer() -> None:
    require(js_available(), JS_PEER)

BLOCKS = make_blocks(300, seed=1)
DATA = b"".join(BLOCKS)
MIDDLE = 7
HANG = 60  # seconds before a wait counts as hung


# ------------------------------------------------------------------ JS seeds, hyperfs fetches


async def test_library_fetches_whole_feed_from_js(tmp_path: Path) -> None:
    _, feed_id, port = await trio.to_thread.run_sync(lambda: start_js_seeder(blocks=BLOCKS))
    async with open_core(tmp_path / "db") as core:
        with core.get(feed_id) as feed:
            async with open_node(core, peers=[f"127.0.0.1:{port}"]):
                with trio.fail_after(HANG):
                    await feed.download()
            assert feed.blocks == len(BLOCKS)
            assert local_blocks(feed) == BLOCKS
        assert core.check().ok


def test_cli_cat_whole_feed_and_middle_block_from_js(tmp_path: Path) -> None:
    _, feed_id, port = start_js_seeder(blocks=BLOCKS)
    peer = f"127.0.0.1:{port}"
    whole = run_hyperfs("--db", tmp_path / "a", "cat", feed_id, "--peer", peer, "--timeout", 20)
    assert whole.returncode == 0, whole.stderr.decode()
    assert whole.stdout == DATA
    one = run_hyperfs("--db", tmp_path / "b", "cat", feed_id, MIDDLE, "--peer", peer,
                      "--timeout", 20)
    assert one.returncode == 0, one.stderr.decode()
    assert one.stdout == BLOCKS[MIDDLE]
    empty = run_hyperfs("--db", tmp_path / "b", "cat", feed_id, 3, "--peer", peer,
                        "--timeout", 20)
    assert (empty.returncode, empty.stdout) == (0, b"")
    past = run_hyperfs("--db", tmp_path / "b", "cat", feed_id, len(BLOCKS), "--timeout", 20)
    assert (past.returncode, past.stdout) == (1, b"")  # the length is known by now
    assert past.stderr.decode() == f"hyperfs: feed has only {len(BLOCKS)} blocks\n"


# ------------------------------------------------------------------ hyperfs seeds, JS fetches


async def _db_with_feed(path: Path, blocks: list[bytes] = BLOCKS) -> str:
    return (await store_feed(path, blocks)).hex()


def test_js_fetches_from_hyperfs_serve(tmp_path: Path) -> None:
    feed_id = trio.run(_db_with_feed, tmp_path / "db")
    _serve, port = start_serve(tmp_path / "db")
    peer = f"127.0.0.1:{port}"
    whole = run_js_fetch(peer, feed_id, timeout=30)
    assert whole["block_list"] == BLOCKS
    assert whole["data"] == DATA
    one = run_js_fetch(peer, feed_id, block=150, timeout=30)
    assert one["data"] == BLOCKS[150]
    empty = run_js_fetch(peer, feed_id, block=3, timeout=30)
    assert empty["data"] == b""


# ------------------------------------------------------------------ extension ping/pong


def _ping_pong(core: Core, got: list[bytes], ready: trio.Event) -> Callable[[], None]:
    """Answer pings with pongs, record every ping payload, ping each peer once."""

    def on_peer(peer: Peer) -> None:
        def handler(payload: bytes) -> None:
            got.append(payload)
            if payload == b"\x00":
                peer.send("ping", b"\x01")
            if b"\x01" in got and b"\x00" in got:
                ready.set()

        peer.on("ping", handler)
        assert peer.remote_supports("ping")
        assert not peer.remote_supports("nope")
        assert peer.send("ping", b"\x00")

    return core.on("peer", on_peer)


async def test_ping_hyperfs_to_js_seeder(tmp_path: Path) -> None:
    seeder, feed_id, port = await trio.to_thread.run_sync(
        lambda: start_js_seeder(blocks=BLOCKS[:20], ext=["ping"]))
    got: list[bytes] = []
    both = trio.Event()
    async with open_core(tmp_path / "db") as core:
        core.use("ping")
        _ping_pong(core, got, both)
        with core.get(feed_id) as feed:
            async with open_node(core, peers=[f"127.0.0.1:{port}"]):
                with trio.fail_after(HANG):
                    await both.wait()  # JS pinged us, and answered our ping
                    await feed.download()
    assert sorted(got) == [b"\x00", b"\x01"]
    with trio.fail_after(HANG):
        await seeder.anext_event("ping")  # it saw our ping ...
        await seeder.anext_event("pong")  # ... and our answer to its own


async def test_ping_js_fetcher_to_hyperfs(tmp_path: Path) -> None:
    got: list[bytes] = []
    both = trio.Event()
    async with open_core(tmp_path / "db") as core:
        feed_id = (await store_feed(core, BLOCKS[:20])).hex()
        core.use("ping")
        _ping_pong(core, got, both)
        async with open_node(core, listen="127.0.0.1:0") as node:
            assert node.address is not None
            # The JS fetcher finishes only once we answered its ping.
            result = await arun_js_fetch(f"127.0.0.1:{node.address[1]}", feed_id,
                                         ext=["ping"], timeout=30)
            with trio.fail_after(HANG):
                await both.wait()
    assert result["block_list"] == BLOCKS[:20]
    kinds = [event.get("event") for event in result["events"]]
    assert "ping" in kinds and "pong" in kinds


# ------------------------------------------------------------------ JS -> hyperfs -> JS


async def test_chain_js_hyperfs_js(tmp_path: Path) -> None:
    seeder, feed_id, seed_port = await trio.to_thread.run_sync(
        lambda: start_js_seeder(blocks=BLOCKS))
    async with open_core(tmp_path / "db") as core:
        with core.get(feed_id) as feed:
            async with open_node(core, listen="127.0.0.1:0",
                                 peers=[f"127.0.0.1:{seed_port}"]) as node:
                assert node.address is not None
                with trio.fail_after(HANG):
                    await feed.download()
                seeder.terminate()  # from here on, only hyperfs has the feed
                middle = await arun_js_fetch(f"127.0.0.1:{node.address[1]}", feed_id,
                                             block=MIDDLE, timeout=30)
                whole = await arun_js_fetch(f"127.0.0.1:{node.address[1]}", feed_id,
                                            timeout=30)
    assert middle["data"] == BLOCKS[MIDDLE]
    assert whole["block_list"] == BLOCKS


async def test_chain_js_leecher_joins_before_hyperfs_has_anything(tmp_path: Path) -> None:
    """hyperfs passes blocks on as they arrive (Have per stored block), not only at the end."""
    blocks = make_blocks(1000, seed=4)
    _seeder, feed_id, seed_port = await trio.to_thread.run_sync(
        lambda: start_js_seeder(blocks=blocks))
    async with open_core(tmp_path / "db") as core:
        with core.get(feed_id) as feed:
            async with open_node(core, listen="127.0.0.1:0",
                                 peers=[f"127.0.0.1:{seed_port}"]) as node:
                assert node.address is not None
                leecher = start_js_fetcher(f"127.0.0.1:{node.address[1]}", feed_id)
                with trio.fail_after(HANG):
                    await leecher.anext_event("handshake", 30)
                    assert feed.local == 0  # nothing asked for yet
                    await feed.download()
                    await leecher.await_exit(30)
    (data,) = [e["blocks"] for e in leecher.events if e.get("event") == "data"]
    assert [bytes.fromhex(h) for h in data] == blocks


async def test_chain_through_cli(tmp_path: Path) -> None:
    """The same chain through `hyperfs cat` (fetch into a database) and `hyperfs serve`."""
    seeder, feed_id, seed_port = await trio.to_thread.run_sync(
        lambda: start_js_seeder(blocks=BLOCKS))
    db = tmp_path / "db"
    cat = await arun_hyperfs("--db", db, "cat", feed_id, "--peer", f"127.0.0.1:{seed_port}",
                             "--timeout", 20)
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout == DATA
    seeder.terminate()
    _serve, port = await astart_serve(db)
    leecher = start_js_fetcher(f"127.0.0.1:{port}", feed_id)
    await leecher.await_exit(30)
    blocks = [e["blocks"] for e in leecher.events if e.get("event") == "data"]
    assert [bytes.fromhex(h) for h in blocks[0]] == BLOCKS

