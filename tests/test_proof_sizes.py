"""README: proofs to a hyperfs peer "keep a download's proofs at one or two hashes per
block". Measured on the wire of a real download between two hyperfs nodes, through a TCP
relay that reads what the seeder sends (both nodes with ``encrypt=False``: between
hyperfs peers the wire is otherwise encrypted, and the relay could read nothing); and,
for contrast, what a peer without the
ordered-proofs extension gets (full proofs), so the measure is seen to tell them apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from statistics import mean

import trio

from hyperfs import open_core
from hyperfs.net.node import open_node
from hyperfs.testing.network import RawPeer, local_blocks, make_blocks, store_feed
from hyperfs.tree.flat_tree import full_roots
from hyperfs.tree.merkle import proof_indexes
from hyperfs.wire.events import ResponseReceived, Unpaused
from hyperfs.wire.framing import FrameDecoder
from hyperfs.wire.messages import Response, decode

BLOCKS = make_blocks(1000, seed=5, max_size=2000)
HANG = 60  # seconds before a wait counts as hung


class ResponseTap:
    """Reads one direction of a connection (handshake first) and keeps each Response's
    proof length, in the order sent."""

    def __init__(self) -> None:
        self.frames = FrameDecoder()
        self.handshake_seen = False
        self.proofs: list[int] = []

    def __call__(self, data: bytes | bytearray) -> None:
        for payload in self.frames.feed(data):
            if not self.handshake_seen:
                self.handshake_seen = True
                continue
            message = decode(payload[0], memoryview(payload)[1:])
            if isinstance(message, Response):
                self.proofs.append(len(message.proof))


async def _pump(source: trio.SocketStream, sink: trio.SocketStream,
                tap: Callable[[bytes | bytearray], None] | None,
                done: trio.CancelScope) -> None:
    try:
        async for chunk in source:
            if tap is not None:
                tap(chunk)
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()  # either side gone: the relayed connection is over


@asynccontextmanager
async def tapped_relay(port: int, tap: Callable[[bytes | bytearray], None]
                       ) -> AsyncIterator[int]:
    """A TCP relay to 127.0.0.1:``port`` (one connection) that shows ``tap`` every byte
    coming back from there; yields the relay's own port."""

    async def relay(client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", port) as server, \
                trio.open_nursery() as nursery:
            nursery.start_soon(_pump, client, server, None, nursery.cancel_scope)
            nursery.start_soon(_pump, server, client, tap, nursery.cancel_scope)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, relay, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def test_download_from_hyperfs_has_one_or_two_hashes_per_block(tmp_path: Path) -> None:
    async with open_core(tmp_path / "seeder") as seeder, \
            open_core(tmp_path / "fetcher") as fetcher:
        feed_id = await store_feed(seeder, BLOCKS)
        tap = ResponseTap()
        async with open_node(seeder, listen="127.0.0.1:0", encrypt=False) as node:
            assert node.address is not None
            async with tapped_relay(node.address[1], tap) as port:
                with fetcher.get(feed_id) as feed:
                    async with open_node(fetcher, peers=[f"127.0.0.1:{port}"],
                                         encrypt=False):
                        with trio.fail_after(HANG):
                            await feed.download()
                    assert local_blocks(feed) == BLOCKS
    first, *later = tap.proofs
    assert len(later) + 1 >= len(BLOCKS), len(later)  # every block crossed this relay
    assert mean(tap.proofs) <= 2, (mean(tap.proofs), tap.proofs[:40])
    # The first proof is whole (the fetcher holds nothing). A later one carries the
    # uncles of the subtree its block starts: at most the tree's height, except at the
    # start of one of the feed's root subtrees, where the other roots come again.
    full = len(proof_indexes(0, len(BLOCKS)))
    assert first == full and max(later) <= full, (first, max(later), full)
    height = (len(BLOCKS) - 1).bit_length()
    assert sum(p > height for p in later) < len(full_roots(len(BLOCKS))), later


async def test_peer_without_the_extension_gets_full_proofs(tmp_path: Path) -> None:
    """A peer speaking only hypercore 1.x (JavaScript's case) has shown no blocks: it gets
    every node of each proof, many more than two."""
    async with open_core(tmp_path / "seeder") as seeder:
        feed_id = await store_feed(seeder, BLOCKS)
        async with open_node(seeder, listen="127.0.0.1:0") as node:
            assert node.address is not None
            raw = await RawPeer.connect(node.address[1])
            with trio.fail_after(HANG):
                await raw.send(raw.conn.join(feed_id))
                await raw.until(lambda e: isinstance(e, Unpaused))
                await raw.send(b"".join(raw.conn.request(feed_id, i) for i in range(100)))
                await raw.until(lambda e: isinstance(e, ResponseReceived) and e.block == 99)
            await raw.aclose()
    responses = [e for e in raw.events if isinstance(e, ResponseReceived)]
    assert [e.block for e in responses] == list(range(100))
    sizes = [len(e.proof) for e in responses]
    assert mean(sizes) > 2 * 2, sizes
