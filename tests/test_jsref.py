"""The JS reference harness itself, exercised JS<->JS, before hyperfs is put against it.

If these fail, an interop failure elsewhere says nothing about hyperfs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from hyperfs.testing.jsref import (
    JsRefError,
    arun_js_fetch,
    js_bench_core,
    js_ids,
    run_js_fetch,
    start_js_fetcher,
    start_js_seeder,
)
from hyperfs.testing.requirements import JS_PEER, js_available, require
from hyperfs.testing.seeds import seeded_random


@pytest.fixture(autouse=True)
def _js_peer() -> None:
    require(js_available(), JS_PEER)

SEED_VECTOR_ID = "e1a31bb8716f0a0487377e22dbc7f0491fb47a712ac21519792a4e32cf56fb6f"


def _root_id(blocks: list[bytes]) -> str:
    """Feed id straight from PROTOCOL.md's formulas, to cross-check the reference's ids."""
    roots: list[tuple[int, bytes, int]] = []  # (flat-tree index, hash, depth)
    for i, block in enumerate(blocks):
        node = (2 * i, hashlib.sha256(b"\x00" + block).digest(), 0)
        while roots and roots[-1][2] == node[2]:
            left = roots.pop()
            digest = hashlib.sha256(b"\x01" + left[1] + node[1]).digest()
            node = ((left[0] + node[0]) // 2, digest, node[2] + 1)
        roots.append(node)
    h = hashlib.sha256(b"\x02")
    for index, digest, _ in roots:
        h.update(digest + index.to_bytes(8, "big"))
    return h.hexdigest()


def _write_random(path: Path, size: int) -> bytes:
    data = seeded_random().randbytes(size)
    path.write_bytes(data)
    return data


def test_js_ids_seed_vector_and_formula() -> None:
    shapes = ([bytes([n]) * (n + 1) for n in range(k)] for k in range(1, 10))
    feeds = [[b"hello", b"world"], [], *shapes]
    ids = js_ids(feeds)
    assert ids[0] == SEED_VECTOR_ID
    assert ids[1] is None  # a feed with zero blocks has no id
    for blocks, feed_id in zip(feeds[2:], ids[2:], strict=True):
        assert feed_id == _root_id(blocks)


def test_seed_and_fetch_whole_feed(tmp_path: Path) -> None:
    data = _write_random(tmp_path / "src", 10 * 1000 + 7)
    seeder, feed_id, port = start_js_seeder(tmp_path / "src", 1000)
    blocks = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    assert feed_id == js_ids([blocks])[0]
    got = run_js_fetch(f"127.0.0.1:{port}", feed_id)
    assert got["block_list"] == blocks
    assert (got["blocks"], got["bytes"]) == (11, len(data))
    out = tmp_path / "out"
    got = run_js_fetch(f"127.0.0.1:{port}", feed_id, out=out)
    assert out.read_bytes() == data
    assert seeder.proc.poll() is None  # the seeder outlives its fetchers


def test_fetch_single_block_and_out_of_bounds(tmp_path: Path) -> None:
    blocks = [b"block %d" % i for i in range(37)]
    _, feed_id, port = start_js_seeder(blocks=blocks)
    assert run_js_fetch(f"127.0.0.1:{port}", feed_id, block=20)["data"] == b"block 20"
    with pytest.raises(JsRefError, match="beyond the feed end"):
        run_js_fetch(f"127.0.0.1:{port}", feed_id, block=37, timeout=30)


def test_ping_pong_both_ways() -> None:
    seeder, feed_id, port = start_js_seeder(blocks=[b"x"], ext=("aaa", "ping"))
    got = run_js_fetch(f"127.0.0.1:{port}", feed_id, ext=("ping", "zzz"))
    kinds = [e["event"] for e in got["events"]]
    assert "ping" in kinds and "pong" in kinds  # it answered the seeder's ping and got its own pong
    assert seeder.next_event("ping")
    assert seeder.next_event("pong")


def test_no_ping_without_common_extension() -> None:
    _, feed_id, port = start_js_seeder(blocks=[b"x"], ext=("ping",))
    got = run_js_fetch(f"127.0.0.1:{port}", feed_id)
    handshake = next(e for e in got["events"] if e["event"] == "handshake")
    assert handshake["ping_sent"] is False
    assert not any(e["event"] in ("ping", "pong") for e in got["events"])


def test_chain_seeder_middle_leecher(tmp_path: Path) -> None:
    """JS seeder -> JS fetcher that also serves -> JS leecher: the shape of hyperfs chains."""
    data = _write_random(tmp_path / "src", 64 * 1024 * 5)
    _, feed_id, port = start_js_seeder(tmp_path / "src", 64 * 1024)
    middle = start_js_fetcher(f"127.0.0.1:{port}", feed_id, listen=0, out=tmp_path / "mid")
    middle_port = middle.next_event("listening")["port"]
    assert middle.next_event("done")["blocks"] == 5
    assert middle.proc.poll() is None  # still serving
    got = run_js_fetch(f"127.0.0.1:{middle_port}", feed_id)
    assert got["data"] == data


async def test_async_fetch_does_not_block_trio(tmp_path: Path) -> None:
    _, feed_id, port = start_js_seeder(blocks=[b"a", b"b", b"c"])
    got = await arun_js_fetch(f"127.0.0.1:{port}", feed_id)
    assert got["data"] == b"abc"


SLOW = pytest.mark.skipif(
    not os.environ.get("HYPERFS_SLOW_TESTS"), reason="~30 s of CPU; set HYPERFS_SLOW_TESTS=1"
)


@pytest.mark.parametrize(
    ("count", "size"), [(2000, 64 * 1024), pytest.param(100_000, 1024, marks=SLOW)]
)
def test_big_feeds_js_to_js(tmp_path: Path, count: int, size: int) -> None:
    data = _write_random(tmp_path / "src", count * size)
    _, feed_id, port = start_js_seeder(tmp_path / "src", size, timeout=300)
    got = run_js_fetch(f"127.0.0.1:{port}", feed_id, out=tmp_path / "out", timeout=300)
    assert (got["blocks"], got["bytes"]) == (count, count * size)
    assert (tmp_path / "out").read_bytes() == data
    mid = run_js_fetch(f"127.0.0.1:{port}", feed_id, block=count // 2, timeout=300)
    assert mid["data"] == data[count // 2 * size : (count // 2 + 1) * size]


def test_bench_core_reports() -> None:
    result = js_bench_core(200, 1024)
    assert result["blocks"] == 200
    assert result["append_seconds"] > 0 and result["read_seconds"] > 0
