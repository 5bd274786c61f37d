"""One feed shared with one peer, and the interface between its two ends.

A :class:`Channel` is what a connection knows of one feed: what the remote has and what we
asked it for. A peer (:mod:`.peer`, one connection) carries it; a feed's scheduler
(``swarm.FeedSwarm``) decides what to ask on it. The two meet only through the protocols
below, so each side can be read, and changed, without the other: the peer tells the
scheduler what happened (:class:`FeedScheduler`), the scheduler acts on the peer through
:class:`PeerLink`. (What a peer tells its owner of the connection as a whole is
``peer.Scheduler``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from hyperfs.feeds.feed import Feed
from hyperfs.tree.bitfield import Bitfield
from hyperfs.tree.merkle import Node

BITFIELD_SLACK = 64 * 1024
"""How far a remote's Have bitfield may run past the feed's end (the reference pads it)."""


class Channel:
    """One feed shared with one peer: what the remote has, what we asked it for."""

    __slots__ = ("cancelled", "feed", "feed_id", "ready", "remote_has", "remote_length",
                 "remote_paused", "remote_told", "requested", "scheduler", "sent", "sent_length")

    def __init__(self, scheduler: FeedScheduler) -> None:
        feed = scheduler.feed
        assert feed.id is not None  # only a feed with a key is shared
        self.scheduler = scheduler
        self.feed = feed
        self.feed_id: bytes = feed.id
        self.ready = False  # both sides joined
        self.remote_has = Bitfield()
        self.sent: Bitfield | None = None  # blocks sent, if the remote takes ordered proofs
        self.remote_paused = True
        self.requested: dict[int, float] = {}  # block -> when we asked
        self.cancelled: set[int] = set()  # asked, then cancelled: may still arrive
        self.remote_length: int | None = None  # a live feed's signed length it holds
        self.remote_told: int | None = None  # the signed length it last told us
        self.sent_length: int | None = None  # our signed length it was told

    def remote_have(self, bitfield: bytes | None, blocks: Sequence[int]) -> str | None:
        """Take in a Have (a new bitfield, or more blocks); if it breaks the caps (the
        peer drops the remote), what is wrong with it."""
        # A live feed's remote may know a longer length than we do yet (a relay that could
        # not prove it to us): its Have is taken; we ask only for blocks below ours.
        end = None if self.feed.live else self.feed.blocks
        if bitfield is not None:
            if end is not None and len(bitfield) > (end + 7) // 8 + BITFIELD_SLACK:
                return f"Have bitfield of {len(bitfield)} bytes for {end} blocks"
            self.remote_has = Bitfield(bitfield)
        for block in blocks:
            if end is not None and block >= end:
                return f"Have of block {block} past the end ({end} blocks)"
            self.remote_has.add(block)
        return None

    def answer(self, block: int) -> tuple[bytes, list[Node]] | None:
        """The block and its proof for the remote, None if it is not here (any more). The
        proof leaves out what the remote has (and, with ordered proofs, what the blocks
        sent before gave it). The block is read as its own bytes, which the Response
        then sends as they are (``Outbox.put_parts``): no copy into a message."""
        data = self.feed.read_local(block)
        if data is None:
            return None
        proof = self.feed.proof(block, self.remote_has, self.sent)
        if self.sent is not None:
            self.sent.add(block)
        return data, proof


class PeerLink(Protocol):
    """What the scheduler may see of a peer and ask of it (implemented by ``peer.Peer``)."""

    @property
    def inflight(self) -> int:
        """Our requests the remote has not answered yet (all channels)."""

    def remote_supports(self, name: str) -> bool:
        """Whether both sides listed extension ``name``."""

    def send(self, name: str, payload: bytes) -> bool:
        """Send a message of extension ``name``; False if the remote lacks it."""

    @property
    def window(self) -> int:
        """How many requests may be in flight at once: ask while ``inflight < window``."""

    @property
    def encrypted(self) -> bool:
        """Whether the connection is encrypted (else a feed may be joined only if
        ``feeds.privacy.may_travel_plaintext``)."""

    def join(self, scheduler: FeedScheduler) -> Channel:
        """Open the channel of ``scheduler``'s feed, if not open yet, and return it."""

    def request(self, channel: Channel, blocks: Sequence[int]) -> None:
        """Ask the remote for ``blocks`` (in one write: a fill asks for many at once)."""

    def cancel(self, channel: Channel, block: int) -> None:
        """Take back a request (no-op if it is not in flight)."""

    def queue_have(self, channel: Channel, block: int) -> None:
        """Tell the remote we now have ``block`` (batched: one Have per send)."""

    def wait_for_room(self, channel: Channel) -> None:
        """The window is full: call ``channel.scheduler.fill`` again once it has room."""


class FeedScheduler(Protocol):
    """What a peer tells the scheduler of one feed (implemented by ``swarm.FeedSwarm``)."""

    @property
    def feed(self) -> Feed:
        """The feed scheduled."""

    def fill(self, peer: PeerLink, channel: Channel) -> None:
        """The remote may answer more (it unpaused, answered, or room came): ask it."""

    def remote_has_changed(self, peer: PeerLink, channel: Channel) -> None:
        """The remote told us of blocks it has (``channel.remote_has`` grew or was set)."""

    def requeue(self, block: int) -> None:
        """A block failed (it did not verify): ask someone else."""

    def requests_failed(self, peer: PeerLink, blocks: list[int]) -> None:
        """``peer`` will not answer these (cancelled) requests: ask someone else."""

    def feed_unwants(self, feed: Feed, block: int) -> None:
        """Nobody waits for ``block`` any more (nor fetches it ahead): stop asking."""

    def channel_closed(self, peer: PeerLink, channel: Channel) -> None:
        """The channel is gone; what was in flight on it is not coming."""
