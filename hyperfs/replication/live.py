"""Live feeds on a connection: telling the remote our signed length, taking in its own.

A live feed is shared only with peers that list :data:`~hyperfs.wire.live.LIVE` (other
hyperfs peers): :func:`can_share` is asked before every join, so a hypercore 1.8 peer is
never joined on one and never sent a message it could misread. On a channel both sides
joined, each tells the other its signed length (:func:`tell`); from then on each new length
is pushed to every such channel as soon as it is signed or verified (``feed_grew``), never
polled, with the upgrade proof from the length the remote last told or was sent. A new
length a remote sends is checked once (signature, then upgrade proof) by
``feeds.live.Live.receive``; anything wrong drops the peer with the reason logged, and
nothing of it is stored. A fork (a second tree validly signed) is not the peer's fault:
the feed stops growing here, the connection stays. A relay (B between A and C) pushes
what it verified the same way.
"""

from __future__ import annotations

import logging
from typing import Protocol

from hyperfs.base.errors import BadProof, FeedForked
from hyperfs.feeds.feed import Feed
from hyperfs.feeds.live import Live
from hyperfs.replication.channel import Channel
from hyperfs.wire.live import LIVE, SignedLength, decode, encode
from hyperfs.wire.protobuf import ProtocolError

log = logging.getLogger("hyperfs.live")


class Supports(Protocol):
    def remote_supports(self, name: str) -> bool: ...


class Sender(Protocol):
    def send(self, name: str, payload: bytes) -> bool: ...


class LivePeer(Sender, Protocol):
    """What this module needs of a peer (``peer.Peer``) to take in a signed length."""

    @property
    def channels(self) -> dict[bytes, Channel]: ...
    def drop(self, reason: str) -> None: ...


def can_share(feed: Feed, peer: Supports) -> bool:
    """Whether ``feed`` may be joined with ``peer``: a live feed only with hyperfs peers."""
    return not feed.live or peer.remote_supports(LIVE)


def tell(peer: Sender, channel: Channel) -> None:
    """Send the remote our signed length of the channel's feed, if it lacks it, with the
    upgrade proof from the length it holds when we know that length and the nodes."""
    state = channel.feed.live_state
    if not isinstance(state, Live) or not state.length or channel.sent_length == state.length:
        return
    length, old, nodes = state.length, channel.remote_length, None
    if old is not None and old < length:
        nodes = state.upgrade_nodes(old)
    # Done once the remote can take it: it holds as much, or gets the upgrade from what
    # it holds. While its length is unknown the message only tells ours (a remote that
    # does not know the feed yet learns it so); its answer, its length, makes us send
    # again with the upgrade.
    complete = old is not None and (old >= length or nodes is not None)
    message = SignedLength(channel.feed_id, length, state.signature, list(channel.feed.roots),
                           old if nodes is not None else None, tuple(nodes or ()))
    if peer.send(LIVE, encode(message)) and complete:
        channel.sent_length = length
        if nodes is not None:
            channel.remote_length = length  # it takes it, or it drops us


def received(peer: LivePeer, payload: bytes) -> None:
    """A remote's signed length: verify it and take it (see the module docstring)."""
    try:
        message = decode(payload)
    except ProtocolError as exc:
        peer.drop(f"bad signed length: {exc}")
        return
    channel = peer.channels.get(message.feed_id)
    if channel is None or not channel.ready:
        return  # crossed our Leave, or for a feed it never shared with us: nothing to take
    feed, told = channel.feed, channel.remote_told
    if told is not None and message.length < told:
        peer.drop(f"signed length of {feed.hex} went backwards ({told} -> {message.length})")
        return
    channel.remote_told = message.length
    channel.remote_length = max(message.length, channel.remote_length or 0)  # no echo
    state = feed.live_state
    try:
        if isinstance(state, Live):
            state.receive(message.length, message.roots, message.signature, message.old,
                          message.nodes)
        elif feed.blocks is None:  # opened by id: this proves it live
            feed.learn_live(message.length, message.roots, message.signature)
        else:
            peer.drop(f"sent a signed length for {feed.hex}, a static feed")
            return
    except BadProof as exc:
        peer.drop(f"sent a signed length of {feed.hex} that is refused: {exc}")
        return
    except FeedForked:
        # Validly signed, so not the peer's doing: the connection stays (other feeds
        # flow, the verified prefix is still served), and our tree goes to it in turn
        # so that it finds the fork too. ``Live.receive`` kept the evidence.
        pass
    tell(peer, channel)
