"""Feed ids computed by the real hypercore 1.8.0 (node) equal ours, for many random feeds."""

from __future__ import annotations

import os
import random

import pytest

from hyperfs import open_core
from hyperfs.testing.jsref import js_ids
from hyperfs.tree.hashes import tree_id
from hyperfs.tree.merkle import TreeBuilder

pytestmark = pytest.mark.usefixtures("requires_js")


def _random_feeds(rnd: random.Random, count: int) -> list[list[bytes]]:
    feeds = [[b"hello", b"world"], [b""], [b"", b""], [b"x" * 70000]]
    for _ in range(count):
        blocks = rnd.choice((1, 2, 3, rnd.randint(1, 40), rnd.randint(1, 1000)))
        sizes = (0, 0, 1, 2, 31, 32, 33, 64, 1000, 4096)
        feeds.append([os.urandom(rnd.choice(sizes)) for _ in range(blocks)])
    return feeds


def _our_id(blocks: list[bytes]) -> str:
    builder = TreeBuilder()
    builder.extend(blocks)
    return tree_id(builder.roots).hex()


async def test_ids_match_the_reference(tmp_path) -> None:
    feeds = _random_feeds(random.Random(), 80)
    theirs = js_ids(feeds)
    assert theirs[0] == "e1a31bb8716f0a0487377e22dbc7f0491fb47a712ac21519792a4e32cf56fb6f"
    assert [_our_id(blocks) for blocks in feeds] == theirs
    async with open_core(tmp_path) as core:  # and through the whole store, a few of them
        for blocks, expected in list(zip(feeds, theirs, strict=True))[:12]:
            feed = core.add()
            await feed.append(blocks)
            assert (await feed.finalize()).hex() == expected
