"""Helpers for the live-feed tests: a live feed's signed length as a wire message, forged
variants of it, and a hostile hyperfs peer that sends them.

The hostile peer is a :class:`~hyperfs.testing.network.RawPeer` listing the live extension:
it joins the feed, waits until the victim has joined too (so the channel is open on both
sides), sends what it was given and reads until the victim closes the connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from hyperfs.feeds.feed import Feed
from hyperfs.feeds.live import Live
from hyperfs.testing.network import RawPeer
from hyperfs.tree.signing import Signer
from hyperfs.wire.events import Joined
from hyperfs.wire.live import LIVE, SignedLength


def signed_now(feed: Feed, old: int | None = None) -> SignedLength:
    """``feed``'s current signed length as the message a peer sends, with the upgrade
    proof from ``old`` blocks if given."""
    state = feed.live_state
    assert isinstance(state, Live) and feed.id is not None
    nodes = () if old is None else tuple(state.upgrade_nodes(old) or ())
    return SignedLength(feed.id, state.length, state.signature, list(feed.roots), old, nodes)


def signed_by_another_key(message: SignedLength) -> SignedLength:
    """The same length and roots, validly signed, but by a key that is not the feed's."""
    other = Signer.generate()[0]
    signature = other.sign(message.length, message.roots)
    return SignedLength(message.feed_id, message.length, signature, message.roots,
                        message.old, message.nodes)


def with_signature(message: SignedLength, signature: bytes) -> SignedLength:
    return SignedLength(message.feed_id, message.length, signature, message.roots,
                        message.old, message.nodes)


async def appends_arrive(writer: Feed, followers: Sequence[AsyncIterator[bytes]],
                         batches: Sequence[Sequence[bytes]]) -> None:
    """Append each batch to ``writer`` and check that every follower (a live read stream,
    elsewhere) yields its blocks in order before the next batch is appended."""
    for batch in batches:
        await writer.append(list(batch))
        for follower in followers:
            for block in batch:
                got = await anext(follower)
                assert got == block, (got, block)


async def send_live(port: int, feed_id: bytes, payloads: Sequence[bytes]) -> RawPeer:
    """Connect to the node at ``port`` as a hyperfs peer, share ``feed_id``, send each
    payload as a live-extension message, and read until the node closes the connection."""
    peer = await RawPeer.connect(port, extensions=[LIVE])
    await peer.send(peer.conn.join(feed_id))
    await peer.until(lambda event: isinstance(event, Joined) and event.feed_id == feed_id)
    for payload in payloads:
        await peer.send(peer.conn.extension(LIVE, payload))
    await peer.until_closed()
    await peer.aclose()
    return peer

