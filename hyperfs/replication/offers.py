"""What a remote said about the feeds it opened and we have not joined (yet).

The reference (hypercore 1.x) sends Join, Have (its whole bitfield) and Unpause for every
feed it has open right after its handshake, and never again on that connection: when we
join such a feed later, it sees its channel open and says nothing more (PROTOCOL.md, "How
the JS reference behaves"). So a peer keeps, per connection, what the remote said on the
channels it opened before we joined them, and the channel starts from it once we do
(``peer.Peer.join``).

Keeping it answers nothing: which feeds we store or want shows only in what we join,
which is ``swarm.Swarm.serve``'s to decide, as before. A remote can make us keep a
bounded amount only: at most ``MAX_FEEDS`` feeds and ``MAX_BYTES`` of bitfields per
connection, the offer of the oldest Join forgotten first (and each one as the remote
leaves its channel). A forgotten offer costs a round trip, not the feed: ``Peer.join``
then closes the remote's channel and joins anew, and the remote opens it again with all
it has to say.
"""

from __future__ import annotations

from collections.abc import Sequence

from hyperfs.tree.bitfield import Bitfield

MAX_FEEDS = 256
"""Offers kept per connection. A reference peer opens the feeds it has open: a few."""
MAX_BYTES = 2 * 1024 * 1024
"""Bitfield bytes kept per connection: the largest bitfield a connection takes
(``wire.connection.DEFAULT_MAX_BITFIELD``, 16 Mi blocks) always fits."""


class Offer:
    """One feed the remote opened: the blocks it said it has, whether it answers."""

    __slots__ = ("has", "paused")

    def __init__(self) -> None:
        self.has = Bitfield()
        self.paused = True  # a channel starts paused


class Offers:
    """The offers of one connection, oldest first, within ``max_feeds`` / ``max_bytes``.

    Have block numbers are folded into the bitfield, so they are checked against the
    feed's end (with ``channel.BITFIELD_SLACK``) as a bitfield is, once we join. The ids
    of the offers forgotten are kept until the remote leaves them (or we join): no more
    than the channels it may have open (``Connection(max_channels=)``).
    """

    def __init__(self, max_feeds: int = MAX_FEEDS, max_bytes: int = MAX_BYTES) -> None:
        self.max_feeds = max_feeds
        self.max_bytes = max_bytes
        self.bytes = 0  # bitfield bytes kept
        self._offers: dict[bytes, Offer] = {}  # in the order of the remote's Joins
        self._forgotten: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._offers)

    def __contains__(self, feed_id: bytes) -> bool:
        return feed_id in self._offers

    def opened(self, feed_id: bytes) -> None:
        """The remote opened the feed's channel, which we have not joined."""
        self._offers[feed_id] = Offer()
        self._trim()

    def have(self, feed_id: bytes, bitfield: bytes | None, blocks: Sequence[int]) -> None:
        """A Have on the channel of an offer (none kept: ignored, like all that follows)."""
        offer = self._offers.get(feed_id)
        if offer is None:
            return
        self.bytes -= offer.has.end // 8
        if bitfield is not None:
            offer.has = Bitfield(bitfield)
        for block in blocks:
            offer.has.add(block)
        self.bytes += offer.has.end // 8
        self._trim()

    def set_paused(self, feed_id: bytes, paused: bool) -> None:
        """A Pause (``paused``) or Unpause on the channel of an offer."""
        offer = self._offers.get(feed_id)
        if offer is not None:
            offer.paused = paused

    def forgotten(self, feed_id: bytes) -> bool:
        """Whether the remote opened the feed and its offer did not fit in the caps.

        (Not the same as the connection having the remote's Join: the connection parses
        a whole read at once, before the peer has seen any of it.)"""
        return feed_id in self._forgotten

    def take(self, feed_id: bytes) -> Offer | None:
        """Remove and return the feed's offer: we join it, or the remote left it."""
        self._forgotten.discard(feed_id)
        offer = self._offers.pop(feed_id, None)
        if offer is not None:
            self.bytes -= offer.has.end // 8
        return offer

    def _trim(self) -> None:
        while len(self._offers) > self.max_feeds or self.bytes > self.max_bytes:
            oldest = next(iter(self._offers))
            self.take(oldest)
            self._forgotten.add(oldest)
