"""One connection to a peer: a sans-I/O Connection driven over a trio Stream.

The peer only moves bytes and translates protocol events into calls on the scheduler
(``channel.FeedScheduler`` for one feed, :class:`Scheduler` for the connection), which
decides what to request. Every way a remote can misbehave ends here, in :meth:`Peer.drop`,
with the reason logged: the connection closes, its pending requests go back to the swarm,
and nothing it sent is stored unless it verified.

Caps, so that no remote can grow our state or stall us without bound (each breach drops
the peer, with the reason logged, unless said otherwise):

- per connection: frames of at most 5 MiB (checked on the length prefix, before buffering),
  at most 1024 channels the remote has open (``Connection(max_channels=)``), Have
  bitfields of at most 2 MiB and not past a known feed end (+ ``channel.BITFIELD_SLACK``);
  replies queued for sending up to ``HIGH_WATER`` (then we stop reading the remote, so
  its requests wait in its own socket buffer: it stalls only itself); our requests in
  flight up to ``MAX_WINDOW`` blocks / ``WINDOW_BYTES``; reads of ``RECEIVE_SIZE``;
- time (``deadlines.Timeouts``): the remote's handshake within ``handshake`` (10 s),
  every message complete within ``message`` (60 s) of its first byte, every send to it
  done within the same (a peer that does not read), and some answer to our requests
  within ``request`` (10 s): slowloris, silent and stalled peers go; a
  request passed over that long (later ones answered) is moved to another peer;
- per channel: what the remote has is one bitfield, bounded as above; requests in flight
  are the connection's; a Response we did not ask for (or cancel) drops the peer;
- what the remote said on channels we have not joined (``offers``): ``offers.MAX_FEEDS``
  feeds and ``offers.MAX_BYTES`` of bitfields, the oldest forgotten first (no drop);
- per node: at most ``network.MAX_PEERS`` connections (more are closed at accept).

This module is over 400 lines because a peer is one state machine: the remote's events,
the scheduler's calls and the caps all read and change the same connection's state.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import trio

from hyperfs.base.callbacks import Callbacks
from hyperfs.feeds.feed import BadBlock
from hyperfs.replication import live
from hyperfs.replication.channel import Channel, FeedScheduler
from hyperfs.replication.deadlines import Clocks, Timeouts
from hyperfs.replication.offers import Offers
from hyperfs.replication.outbox import Outbox
from hyperfs.replication.secure import greet
from hyperfs.tree.bitfield import Bitfield
from hyperfs.tree.merkle import Node
from hyperfs.wire import events
from hyperfs.wire.connection import Connection, ProtocolError
from hyperfs.wire.noise import KeyPair
from hyperfs.wire.protobuf import Buffer
from hyperfs.wire.secure import SECURE, Greeting, Session

log = logging.getLogger("hyperfs.peer")

REMOTE_CLOSED = "the remote closed the connection"
RECEIVE_SIZE = 1 << 20
GOODBYE_TIMEOUT = 1.0
"""Seconds a closing encrypted peer waits at most to send its final frame."""
HIGH_WATER = 1 << 20
"""Bytes queued for sending above which we stop handling the peer's messages until they
are sent: bounds memory per peer (a peer that does not read stalls only itself) and
interleaves producing replies with sending them."""
WINDOW_BYTES = 8 << 20
"""Bytes we keep requested from one peer at once: enough to fill a fast link."""
MIN_WINDOW, MAX_WINDOW = 16, 2048
ORDERED_PROOFS = "hyperfs-ordered-proofs"
"""Extension a peer lists to say it verifies Responses in the order they arrive, storing
every one (even one it cancelled): proofs to it can then leave out the nodes that blocks
sent before will have given it, which keeps a proof at one or two nodes in a download."""


class Scheduler(Protocol):
    """What a peer tells its owner of the connection as a whole (``swarm.Swarm``)."""

    def peer_ready(self, peer: Peer) -> None:
        """The handshake is done: join the feeds wanted."""

    def serve(self, peer: Peer, feed_id: bytes) -> None:
        """The remote joined a feed not joined with it yet: join it too, or not."""

    def named(self, feed_id: bytes) -> None:
        """The remote joined a feed (so it knows its id), before or after we did."""

    def peer_closed(self, peer: Peer) -> None:
        """The connection is over: close its channels (:meth:`Peer.close_channel`)."""

    def resolve(self, discovery_key: bytes) -> bytes | None:
        """The id of the feed with this discovery key that we would join, or None."""


class Peer:
    """A connected remote. Made by ``Swarm.add_peer``; runs in the swarm's nursery.

    ``batch`` groups the stores of one network read into one write (``Store.group``).
    ``keypair`` is our node key; with ``secure_only`` a remote that does not offer
    encryption (a JS peer) is dropped; ``offer=False`` (measurements of the plain
    protocol between two hyperfs peers only) does not offer it.
    """

    def __init__(self, scheduler: Scheduler, stream: trio.abc.Stream, address: str | None,
                 *, peer_id: bytes, extensions: Sequence[str], timeouts: Timeouts,
                 batch: Callable[[], AbstractContextManager[None]], keypair: KeyPair,
                 secure_only: bool = False, offer: bool = True) -> None:
        self.scheduler = scheduler
        self.stream = stream
        self.address = address
        self.conn = Connection(peer_id, [*extensions, ORDERED_PROOFS, live.LIVE, *[SECURE][:offer]])
        self.session: Session | None = None
        """The encrypted session, once the greeting made one; None: plain 1.x."""
        self._keypair = keypair
        self._secure_only = secure_only
        self._greeting: Greeting | None = None
        self.channels: dict[bytes, Channel] = {}
        self.offers = Offers()  # what the remote said on channels we have not joined
        self.handshaken = trio.Event()
        self.closed = trio.Event()
        self.close_reason: str | None = None
        self.inflight = 0
        self.window = 64
        self.bytes_in = 0
        self.blocks_in = self.blocks_out = 0
        self.clocks = Clocks(timeouts)
        self.outbox = Outbox(stream, self.clocks, before_send=self._flush_haves)
        self._send = self.outbox.put
        self._batch = batch
        self._waiting: dict[Channel, None] = {}  # channels that found the window full
        self._answered: dict[Channel, None] = {}  # channels answered in this round
        self._haves: dict[bytes, list[int]] = {}
        self._received: dict[Channel, list[tuple[int, Buffer, list[Node]]]] = {}
        """The blocks of this round, by channel, put at its end (or before any other
        message): each channel's in one :meth:`Feed.put_many`."""
        self._handlers: dict[str, Callbacks[[bytes]]] = {}
        self.on(live.LIVE, lambda payload: live.received(self, payload))
        self._scope = trio.CancelScope()
        self._dispatch: dict[type, Callable] = {
            events.HandshakeReceived: self._on_handshake, events.Joined: self._on_joined,
            events.Left: self._on_left, events.HaveReceived: self._on_have,
            events.Paused: self._on_paused, events.Unpaused: self._on_unpaused,
            events.RequestReceived: self._on_request, events.ResponseReceived: self._on_response,
            events.CancelReceived: self._on_cancel, events.ExtensionReceived: self._on_extension,
        }

    def __repr__(self) -> str:
        who = self.conn.remote_id.hex()[:12] if self.conn.remote_id else "?"
        return f"<Peer {self.address or 'stream'} id={who}>"

    @property
    def remote_id(self) -> bytes | None:
        return self.conn.remote_id

    @property
    def encrypted(self) -> bool:
        return self.session is not None

    @property
    def bytes_out(self) -> int:
        return self.outbox.sent + (self._greeting.sent if self._greeting else 0)

    # -- the seed's extension API ------------------------------------------------------

    def remote_supports(self, name: str) -> bool:
        return self.conn.remote_supports(name)

    def send(self, name: str, payload: bytes) -> bool:
        """Send an extension message; False if the remote does not support ``name``."""
        if not self.conn.remote_supports(name):
            return False
        self._send(self.conn.extension(name, payload))
        return True

    def on(self, name: str, handler: Callable[[bytes], None]) -> Callable[[], None]:
        """Call ``handler(payload)`` for each message of extension ``name``."""
        return self._handlers.setdefault(name, Callbacks()).add(handler)

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Exchange messages until either side closes or the remote misbehaves."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watchdog)
                    first = await self._greet()
                    nursery.start_soon(self.outbox.run)
                    if first is not None:
                        await self._receive_loop(first)
                    if self.close_reason == REMOTE_CLOSED:  # it half-closed: it still
                        await self.outbox.flush(self.clocks.timeouts.message)  # reads answers
                    nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
            reason = f"connection lost ({group.exceptions[0]})"
            self.close_reason = self.close_reason or reason
        except* Exception:
            # A bug of ours must cost this connection, not the whole process.
            log.exception("internal error while talking to %s", self.address or "a peer")
            self.close_reason = self.close_reason or "internal error"
        finally:
            self.close_reason = self.close_reason or "closed"
            self.scheduler.peer_closed(self)
            self.closed.set()
            await self._end_stream()

    async def _end_stream(self) -> None:
        """Close the stream; encrypted, say it is an orderly close first (the final
        frame: the remote can then tell it from a cut), unless a write was cut short."""
        if self.session is not None and self.outbox.sent == self.session.sealed:
            with trio.CancelScope(shield=True), trio.move_on_after(GOODBYE_TIMEOUT), \
                    contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                        OSError):
                await self.stream.send_all(self.session.final())
        await trio.aclose_forcefully(self.stream)

    def drop(self, reason: str) -> None:
        """Close the connection because of ``reason`` (logged)."""
        if self.close_reason is None:
            self.close_reason = reason
            log.warning("dropping peer %s: %s", self.address or self.remote_id, reason)
        self._scope.cancel()

    def close(self) -> None:
        self.close_reason = self.close_reason or "closed locally"
        self._scope.cancel()

    async def _greet(self) -> bytes | None:
        """The handshakes (``secure.greet``): what followed them, or None if it ended.

        Encrypted, every byte from here on is sealed and opened by the session and the
        Connection opens channels by capability; plaintext only if the remote did not
        offer encryption (a JS peer) and we accept that.
        """
        greeting = self._greeting = Greeting(self.conn.start(), self._keypair)
        try:
            greeted = await greet(self.stream, greeting, self.conn, self.scheduler.resolve,
                                  RECEIVE_SIZE)
        except ProtocolError as exc:
            self.drop(f"protocol error: {exc}")
            return None
        if greeted is None:
            self.close_reason = self.close_reason or REMOTE_CLOSED
            return None
        handshake, first = greeted
        self.session = greeting.session
        if self.session is not None:
            self.outbox.seal = self.session.seal
        elif self._secure_only:
            self.drop("the remote does not offer encryption (--secure-only)")
            return None
        self.bytes_in += greeting.received
        self._on_handshake(handshake)
        return None if self.close_reason is not None else first

    def _receiving(self) -> bool:
        """Whether a message from the remote has begun to arrive but is not complete."""
        return self.conn.receiving or (self.session is not None and self.session.receiving)

    async def _receive_loop(self, data: bytes) -> None:
        """Handle what the remote sends, ``data`` (already opened) first."""
        dispatch, batch, clocks, outbox = self._dispatch, self._batch, self.clocks, self.outbox
        pieces: list[Buffer] = [data]
        while True:
            try:
                received = self.conn.receive_data(pieces[0])
                for piece in pieces[1:]:  # opened frames: each fed as it is, not joined
                    received += self.conn.receive_data(piece)
            except ProtocolError as exc:
                self.drop(f"protocol error: {exc}")
                return
            if not self._receiving():
                clocks.message = None
            elif received or clocks.message is None:
                clocks.message = trio.current_time()  # a new message began
            done = 0
            while done < len(received):
                # Handle events until a good chunk of replies is queued, then let the writer
                # move it: sender and receiver then work at the same time.
                with batch():  # one LevelDB write for the blocks of this round
                    while done < len(received) and outbox.queued < HIGH_WATER:
                        event = received[done]
                        kind = type(event)
                        if kind is not events.ResponseReceived and self._received:
                            self._put_received()  # what came before it is stored first
                        dispatch[kind](event)
                        done += 1
                        if self.close_reason is not None:
                            break
                    if self._received:
                        self._put_received()
                if self.close_reason is not None:
                    return
                if self._answered:
                    self._refill()
                if outbox.queued >= HIGH_WATER:
                    await outbox.drain()
                    if clocks.message is not None:  # we were not reading: not its fault
                        clocks.message = trio.current_time()
            raw = await self.stream.receive_some(RECEIVE_SIZE)
            if not raw:
                if self.session is not None and not self.session.finished:
                    # Told apart from an orderly close, but not warned about: it is also
                    # how a peer that exits with a write pending, or dies, ends.
                    self.close_reason = self.close_reason or (
                        "connection lost: the encrypted stream ended without its final "
                        "frame (cut)")
                self.close_reason = self.close_reason or REMOTE_CLOSED
                return
            self.bytes_in += len(raw)
            try:
                pieces = [bytes(raw)] if self.session is None else self.session.open(bytes(raw))
            except ProtocolError as exc:
                self.drop(f"protocol error: {exc}")
                return
            if not pieces:
                pieces = [b""]  # half a sealed frame: nothing to hand on yet

    async def _watchdog(self) -> None:
        """Drop the peer when a deadline of the module docstring's caps passes."""
        clocks = self.clocks
        while True:
            await trio.sleep(clocks.timeouts.period)
            now = trio.current_time()
            overdue = clocks.overdue(now, self.handshaken.is_set(), self.inflight)
            if overdue is not None:
                self.drop(overdue)
            elif self.inflight:
                self._expire_passed_over(now - clocks.timeouts.request)

    def _expire_passed_over(self, deadline: float) -> None:
        """Move requests the remote has passed over to other peers.

        A request older than ``deadline`` while the remote answered later ones will not
        be answered: the remote does not have the block (after all, or any more: a peer
        answers what it lacks with silence, as we do). We cancel it, forget that the
        remote claimed the block, and let the swarm ask someone else; a peer lying in its
        Haves thus loses its claims one by one instead of holding requests forever.
        """
        if self.clocks.answered <= deadline:
            return
        for channel in list(self.channels.values()):
            passed = [block for block, asked in channel.requested.items() if asked < deadline]
            if not passed:
                continue
            log.warning("peer %s passed over %d requests of %s; asking elsewhere",
                        self.address or self.remote_id, len(passed), channel.feed.hex)
            for block in passed:
                self.cancel(channel, block)
                channel.remote_has.discard(block)
            channel.scheduler.requests_failed(self, passed)
        self._share_room()  # the expired requests made room for other feeds too

    def _refill(self) -> None:
        """Ask again on the channels whose requests were answered in this round: once per
        round, not per block (the requests leave in the same write either way, when the
        round ends), so a round of a thousand small blocks picks its next ones in one go."""
        answered, self._answered = self._answered, {}
        for channel in answered:
            if self.channels.get(channel.feed_id) is channel:
                channel.scheduler.fill(self, channel)
        if self._waiting and self.inflight < self.window:
            self._share_room()

    def _flush_haves(self) -> None:
        for feed_id, blocks in self._haves.items():
            if feed_id in self.channels:
                self._send(self.conn.have(feed_id, blocks=blocks))
        self._haves.clear()

    # -- what the scheduler asks of us (channel.PeerLink) ----------------------------------

    def join(self, scheduler: FeedScheduler) -> Channel:
        """Open the feed's channel (if not open) and tell the remote we have it.

        If the remote opened it first, what it said then (its offer) is the channel's
        start; if that was forgotten, we leave and join again, and the remote, finding
        its channel closed, opens it anew and says it all again.
        """
        feed_id = scheduler.feed.id
        assert feed_id is not None
        channel = self.channels.get(feed_id)
        if channel is None:
            channel = self.channels[feed_id] = Channel(scheduler)
            forgotten = self.offers.forgotten(feed_id)
            offer = self.offers.take(feed_id)
            self._send(self.conn.join(feed_id))
            if offer is not None:
                channel.remote_paused = offer.paused
                wrong = channel.remote_have(offer.has.to_bytes(), ())
                if wrong is not None:
                    self.drop(wrong)
            elif forgotten and self.conn.joined_remotely(feed_id):
                self._send(self.conn.leave(feed_id) + self.conn.join(feed_id))
            if self.conn.joined_remotely(feed_id):
                self._channel_ready(channel)
        return channel

    def _channel_ready(self, channel: Channel) -> None:
        """Both sides joined: only now say what we hold (the remote proved it knows the id)."""
        channel.ready = True
        if self.conn.remote_supports(ORDERED_PROOFS):
            channel.sent = Bitfield()
        feed = channel.feed
        live.tell(self, channel)  # a live feed's length first: the Have may go past the old
        if feed.local:
            self._send(self.conn.have(channel.feed_id, bitfield=feed.bitfield.to_bytes()))
        self._send(self.conn.unpause(channel.feed_id))

    def request(self, channel: Channel, blocks: Sequence[int]) -> None:
        if not blocks:
            return
        now = trio.current_time()
        channel.requested.update(dict.fromkeys(blocks, now))
        if not self.inflight:
            self.clocks.answered = now
        self.inflight += len(blocks)
        self._send(self.conn.requests(channel.feed_id, blocks))

    def cancel(self, channel: Channel, block: int) -> None:
        if channel.requested.pop(block, None) is None:
            return
        self.inflight -= 1
        channel.cancelled.add(block)
        self._send(self.conn.cancel(channel.feed_id, block))

    def queue_have(self, channel: Channel, block: int) -> None:
        """Tell the remote we stored a block; batched into one Have per send. Not a
        hyperfs remote that has it (a seeder we download from): it would learn nothing
        of use (it wants no block of us it has, and its proofs to us go by the blocks it
        sent us), and each block told costs both sides."""
        if channel.sent is not None and block in channel.remote_has:
            return
        self._haves.setdefault(channel.feed_id, []).append(block)
        self.outbox.wake()

    def wait_for_room(self, channel: Channel) -> None:
        """The window is full: fill ``channel`` again once there is room (see _share_room)."""
        self._waiting[channel] = None

    def _share_room(self) -> None:
        """Share room in the window with the feeds that found it full, in turn (else a feed
        whose first fill came when the window was full would never be asked for)."""
        for channel in list(self._waiting):
            if self.inflight >= self.window:
                return
            del self._waiting[channel]
            channel.scheduler.fill(self, channel)  # back in `_waiting` if it fills the window

    def close_channel(self, feed_id: bytes) -> None:
        """Forget the feed's channel; what is in flight on it goes back to its scheduler."""
        channel = self.channels.pop(feed_id, None)
        if channel is not None:
            self._waiting.pop(channel, None)
            self.inflight -= len(channel.requested)
            channel.scheduler.channel_closed(self, channel)

    # -- protocol events -------------------------------------------------------------------

    def _on_handshake(self, event: events.HandshakeReceived) -> None:
        if event.peer_id == self.conn.peer_id:
            self.drop("connected to ourselves")
            return
        self.handshaken.set()
        self.scheduler.peer_ready(self)

    def _on_joined(self, event: events.Joined) -> None:
        self.scheduler.named(event.feed_id)
        channel = self.channels.get(event.feed_id)
        if channel is None:
            self.scheduler.serve(self, event.feed_id)
            if event.feed_id not in self.channels:  # not served: kept until we join
                self.offers.opened(event.feed_id)
        elif not channel.ready:
            self._channel_ready(channel)

    def _on_left(self, event: events.Left) -> None:
        self.offers.take(event.feed_id)
        self.close_channel(event.feed_id)

    def _on_have(self, event: events.HaveReceived) -> None:
        channel = self.channels.get(event.feed_id)
        if channel is None:
            self.offers.have(event.feed_id, event.bitfield, event.blocks)
            return
        wrong = channel.remote_have(event.bitfield, event.blocks)
        if wrong is not None:
            self.drop(wrong)
            return
        channel.scheduler.remote_has_changed(self, channel)

    def _on_paused(self, event: events.Paused) -> None:
        channel = self.channels.get(event.feed_id)
        if channel is None:
            self.offers.set_paused(event.feed_id, True)
        else:
            channel.remote_paused = True

    def _on_unpaused(self, event: events.Unpaused) -> None:
        channel = self.channels.get(event.feed_id)
        if channel is None:
            self.offers.set_paused(event.feed_id, False)
        else:
            channel.remote_paused = False
            channel.scheduler.fill(self, channel)

    def _on_request(self, event: events.RequestReceived) -> None:
        channel = self.channels.get(event.feed_id)
        if channel is None or not channel.ready:
            return
        feed = channel.feed
        if feed.blocks is not None and event.block >= feed.blocks:
            self.drop(f"requested block {event.block} past the end ({feed.blocks} blocks)")
            return
        answer = channel.answer(event.block)
        if answer is None:
            return  # not here (any more): the requester times out and asks elsewhere
        self.outbox.put_parts(self.conn.response_parts(event.feed_id, event.block, *answer))
        self.blocks_out += 1

    def _on_response(self, event: events.ResponseReceived) -> None:
        channel = self.channels.get(event.feed_id)
        if channel is None:
            return  # crossed our Leave
        block = event.block
        if channel.requested.pop(block, None) is not None:
            self.inflight -= 1
            self.clocks.answered = trio.current_time()
            size = max(len(event.data), 256)
            self.window = max(MIN_WINDOW, min(MAX_WINDOW, WINDOW_BYTES // size))
        elif block in channel.cancelled:
            channel.cancelled.discard(block)  # verified and kept all the same: see ORDERED_PROOFS
        else:
            self.drop(f"sent block {block} that was never requested")
            return
        received = self._received.get(channel)
        if received is None:
            received = self._received[channel] = []
        received.append((block, event.data, list(event.proof)))

    def _put_received(self) -> None:
        """Verify and store the blocks received since the last call, in order, each
        channel's in one go (one write of their bytes, one batch, their fixed costs
        paid once a network read): what a Response asks of us, done in bulk."""
        received, self._received = self._received, {}
        for channel, blocks in received.items():
            feed = channel.feed
            try:
                feed.put_many(blocks)
            except BadBlock as exc:
                channel.scheduler.requeue(exc.block)
                self.drop(f"sent block {exc.block} that fails verification: {exc}")
                # Those after it were taken off our requests; they are not coming now.
                channel.scheduler.requests_failed(
                    self, [block for block, _data, _proof in blocks if block not in feed.bitfield])
                continue  # (the other feeds' blocks verify on their own: kept)
            except OSError:  # our disk (full): not the peer's fault; the feed told its readers
                for block, _data, _proof in blocks:
                    channel.scheduler.feed_unwants(feed, block)  # no longer in flight
                if self.conn.remote_supports(ORDERED_PROOFS):  # its next proofs assume we kept it
                    self.drop(f"blocks it sent (from {blocks[0][0]}) could not be stored here "
                              "(disk full)")
                continue
            self.blocks_in += len(blocks)  # verified only: a liar must not look useful
            self._answered[channel] = None  # asked for more at the end of the round (_refill)

    def _on_cancel(self, event: events.CancelReceived) -> None:
        """We answer requests as they come, so there is never anything left to cancel."""

    def _on_extension(self, event: events.ExtensionReceived) -> None:
        handlers = self._handlers.get(event.name)
        if handlers is not None:
            handlers(event.payload)

    def status(self) -> dict[str, object]:
        return {
            "address": self.address,
            "id": self.remote_id.hex() if self.remote_id else None,
            "encrypted": self.encrypted,
            "node_key": self.session.remote_key.hex() if self.session else None,
            "feeds": [feed_id.hex() for feed_id in self.channels],
            "offered": len(self.offers),
            "inflight": self.inflight,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "blocks_in": self.blocks_in,
            "blocks_out": self.blocks_out,
        }

