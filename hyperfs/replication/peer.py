"""One connection to a peer: a sans-I/O Connection driven over a trio Stream.

The peer only moves bytes and translates protocol events into calls on the swarm, which
decides what to request. Every way a remote can misbehave ends here, in :meth:`Peer.drop`,
with the reason logged: the connection closes, its pending requests go back to the swarm,
and nothing it sent is stored unless it verified.

Caps, so that no remote can grow our state or stall us without bound (each breach drops
the peer, with the reason logged, unless said otherwise):

- per connection: frames of at most 5 MiB (checked on the length prefix, before buffering),
  at most 1024 channels the remote has open (``Connection(max_channels=)``), Have
  bitfields of at most 2 MiB and not past a known feed end (+ ``BITFIELD_SLACK``);
  replies queued for sending up to ``HIGH_WATER`` (then we stop reading the remote, so
  its requests wait in its own socket buffer: it stalls only itself); our requests in
  flight up to ``MAX_WINDOW`` blocks / ``WINDOW_BYTES``; reads of ``RECEIVE_SIZE``;
- time: the remote's handshake within ``Swarm.handshake_timeout`` (10 s), every message
  complete within ``Swarm.message_timeout`` (60 s) of its first byte, every send to it
  done within the same (a peer that does not read), and some answer to our requests
  within ``Swarm.request_timeout`` (10 s): slowloris, silent and stalled peers go; a
  request passed over that long (later ones answered) is moved to another peer;
- per channel: what the remote has is one bitfield, bounded as above; requests in flight
  are the connection's; a Response we did not ask for (or cancel) drops the peer;
- per node: at most ``network.MAX_PEERS`` connections (more are closed at accept).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import trio

from hyperfs.base.callbacks import Callbacks
from hyperfs.base.errors import BadProof
from hyperfs.tree.bitfield import Bitfield
from hyperfs.wire.connection import Connection, ProtocolError
from hyperfs.wire.events import (
    CancelReceived,
    ExtensionReceived,
    HandshakeReceived,
    HaveReceived,
    Joined,
    Left,
    Paused,
    RequestReceived,
    ResponseReceived,
    Unpaused,
)

if TYPE_CHECKING:
    from hyperfs.replication.swarm import FeedSwarm, Swarm

log = logging.getLogger("hyperfs.peer")

REMOTE_CLOSED = "the remote closed the connection"
RECEIVE_SIZE = 256 * 1024
HIGH_WATER = 1 << 20
"""Bytes queued for sending above which we stop handling the peer's messages until they
are sent: bounds memory per peer (a peer that does not read stalls only itself) and
interleaves producing replies with sending them."""
WINDOW_BYTES = 8 << 20
"""Bytes we keep requested from one peer at once: enough to fill a fast link."""
MIN_WINDOW, MAX_WINDOW = 16, 2048
BITFIELD_SLACK = 64 * 1024
"""How far a remote's Have bitfield may run past the feed's end (the reference pads it)."""
ORDERED_PROOFS = "hyperfs-ordered-proofs"
"""Extension a peer lists to say it verifies Responses in the order they arrive, storing
every one (even one it cancelled): proofs to it can then leave out the nodes that blocks
sent before will have given it, which keeps a proof at one or two nodes in a download."""


class Channel:
    """One feed shared with one peer: what the remote has, what we asked it for."""

    __slots__ = ("cancelled", "feed_swarm", "ready", "remote_has", "remote_paused",
                 "requested", "scan_pos", "scan_range", "sent")

    def __init__(self, feed_swarm: FeedSwarm) -> None:
        self.feed_swarm = feed_swarm
        self.ready = False
        self.remote_has = Bitfield()
        self.sent: Bitfield | None = None  # blocks sent, if the remote takes ordered proofs
        self.remote_paused = True
        self.requested: dict[int, float] = {}
        self.cancelled: set[int] = set()
        self.scan_range: list[int | None] | None = None
        self.scan_pos = 0


class Peer:
    """A connected remote. Made by :meth:`Swarm.add_peer`; runs in the swarm's nursery."""

    def __init__(self, swarm: Swarm, stream: trio.abc.Stream, address: str | None) -> None:
        self.swarm = swarm
        self.stream = stream
        self.address = address
        self.conn = Connection(swarm.peer_id, [*swarm.core.extensions, ORDERED_PROOFS])
        self.channels: dict[bytes, Channel] = {}
        self.handshaken = trio.Event()
        self.closed = trio.Event()
        self.close_reason: str | None = None
        self.inflight = 0
        self.window = 64
        self.starved: dict[Channel, None] = {}  # channels that found the window full
        self.bytes_in = self.bytes_out = 0
        self.blocks_in = self.blocks_out = 0
        self.last_progress = self.started = trio.current_time()
        self._partial_since: float | None = None  # when the message in progress began
        self._sending_since: float | None = None  # when the send in progress began
        self._out: list[bytes] = []  # messages queued for the send loop
        self._queued = 0  # their bytes
        self._out_ready = trio.Event()
        self._drained = trio.Event()
        self._haves: dict[bytes, list[int]] = {}
        self._handlers: dict[str, Callbacks[[bytes]]] = {}
        self._scope = trio.CancelScope()
        self._dispatch: dict[type, Callable] = {
            HandshakeReceived: self._on_handshake, Joined: self._on_joined,
            Left: self._on_left, HaveReceived: self._on_have, Paused: self._on_paused,
            Unpaused: self._on_unpaused, RequestReceived: self._on_request,
            ResponseReceived: self._on_response, CancelReceived: self._on_cancel,
            ExtensionReceived: self._on_extension,
        }

    def __repr__(self) -> str:
        who = self.conn.remote_id.hex()[:12] if self.conn.remote_id else "?"
        return f"<Peer {self.address or 'stream'} id={who}>"

    @property
    def remote_id(self) -> bytes | None:
        return self.conn.remote_id

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
        self._send(self.conn.start())
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._send_loop)
                    nursery.start_soon(self._watchdog)
                    await self._receive_loop()
                    if self.close_reason == REMOTE_CLOSED:
                        await self._flush()  # it half-closed: it still reads our answers
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
            self.swarm.peer_closed(self)
            self.closed.set()
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

    async def _receive_loop(self) -> None:
        dispatch, group = self._dispatch, self.swarm.core.store.group
        while True:
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if not data:
                self.close_reason = self.close_reason or REMOTE_CLOSED
                return
            self.bytes_in += len(data)
            try:
                events = self.conn.receive_data(data)
            except ProtocolError as exc:
                self.drop(f"protocol error: {exc}")
                return
            if not self.conn.receiving:
                self._partial_since = None
            elif events or self._partial_since is None:
                self._partial_since = trio.current_time()  # a new message began
            done = 0
            while done < len(events):
                # Handle events until a good chunk of replies is queued, then let the send
                # loop move it: sender and receiver then work at the same time.
                with group():  # one LevelDB write for the blocks of this round
                    while done < len(events) and self._queued < HIGH_WATER:
                        dispatch[type(events[done])](events[done])
                        done += 1
                        if self.close_reason is not None:
                            return
                if self._queued >= HIGH_WATER:
                    self._drained = trio.Event()
                    await self._drained.wait()
                    if self._partial_since is not None:  # we were not reading: not its fault
                        self._partial_since = trio.current_time()

    async def _flush(self) -> None:
        """Wait (at most the message timeout) until what is queued has been sent."""
        with trio.move_on_after(self.swarm.message_timeout):
            while self._out or self._sending_since is not None:
                self._drained = trio.Event()
                self._out_ready.set()
                await self._drained.wait()

    async def _send_loop(self) -> None:
        while True:
            await self._out_ready.wait()
            self._out_ready = trio.Event()
            self._flush_haves()
            while self._out:
                messages, self._out, self._queued = self._out, [], 0
                self._sending_since = trio.current_time()
                for data in _coalesce(messages):
                    await self.stream.send_all(data)
                    self.bytes_out += len(data)
                self._sending_since = None
            self._drained.set()

    async def _watchdog(self) -> None:
        """Drop the peer when a deadline of the module docstring's caps passes."""
        swarm = self.swarm
        request, handshake, message = (swarm.request_timeout, swarm.handshake_timeout,
                                       swarm.message_timeout)
        while True:
            await trio.sleep(min(request, handshake, message) / 4)
            now = trio.current_time()
            if not self.handshaken.is_set() and now - self.started > handshake:
                self.drop(f"no handshake within {handshake:g} s")
            elif self._partial_since is not None and now - self._partial_since > message:
                self.drop(f"a message took longer than {message:g} s to arrive")
            elif self._sending_since is not None and now - self._sending_since > message:
                self.drop(f"not reading: a send was blocked for {message:g} s")
            elif self.inflight and now - self.last_progress > request:
                self.drop(f"no answer to {self.inflight} requests for {request:g} s")
            elif self.inflight:
                self._expire_passed_over(now - request)

    def _expire_passed_over(self, deadline: float) -> None:
        """Move requests the remote has passed over to other peers.

        A request older than ``deadline`` while the remote answered later ones will not
        be answered: the remote does not have the block (after all, or any more: a peer
        answers what it lacks with silence, as we do). We cancel it, forget that the
        remote claimed the block, and let the swarm ask someone else; a peer lying in its
        Haves thus loses its claims one by one instead of holding requests forever.
        """
        if self.last_progress <= deadline:
            return
        for channel in list(self.channels.values()):
            passed = [block for block, asked in channel.requested.items() if asked < deadline]
            if not passed:
                continue
            log.warning("peer %s passed over %d requests of %s; asking elsewhere",
                     self.address or self.remote_id, len(passed),
                     channel.feed_swarm.feed.hex)
            for block in passed:
                self.cancel(channel, block)
                channel.remote_has.discard(block)
                channel.feed_swarm.request_failed(self, block)
            channel.feed_swarm.fill_all()
        self._fill_starved()  # the expired requests made room for other feeds too

    def _send(self, data: bytes) -> None:
        if data:
            self._out.append(data)
            self._queued += len(data)
            self._out_ready.set()

    def _flush_haves(self) -> None:
        for feed_id, blocks in self._haves.items():
            if feed_id in self.channels:
                self._send(self.conn.have(feed_id, blocks=blocks))
        self._haves.clear()

    # -- what the swarm asks of us --------------------------------------------------------

    def join(self, feed_swarm: FeedSwarm) -> Channel:
        """Open the feed's channel (if not open) and tell the remote we have it."""
        feed_id = feed_swarm.feed.id
        assert feed_id is not None
        channel = self.channels.get(feed_id)
        if channel is None:
            channel = self.channels[feed_id] = Channel(feed_swarm)
            feed_swarm.channels[self] = channel
            self._send(self.conn.join(feed_id))
            if self.conn.joined_remotely(feed_id):
                self._channel_ready(channel)
        return channel

    def _channel_ready(self, channel: Channel) -> None:
        """Both sides joined: only now say what we hold (the remote proved it knows the id)."""
        channel.ready = True
        if self.conn.remote_supports(ORDERED_PROOFS):
            channel.sent = Bitfield()
        feed = channel.feed_swarm.feed
        assert feed.id is not None
        if feed.local:
            self._send(self.conn.have(feed.id, bitfield=feed.bitfield.to_bytes()))
        self._send(self.conn.unpause(feed.id))

    def request(self, channel: Channel, block: int) -> None:
        feed_id = channel.feed_swarm.feed.id
        assert feed_id is not None
        if not self.inflight:
            self.last_progress = trio.current_time()
        channel.requested[block] = trio.current_time()
        self.inflight += 1
        self._send(self.conn.request(feed_id, block))

    def cancel(self, channel: Channel, block: int) -> None:
        if channel.requested.pop(block, None) is None:
            return
        self.inflight -= 1
        channel.cancelled.add(block)
        feed_id = channel.feed_swarm.feed.id
        assert feed_id is not None
        self._send(self.conn.cancel(feed_id, block))

    def queue_have(self, feed_id: bytes, block: int) -> None:
        """Tell the remote we stored a block; batched into one Have per send."""
        self._haves.setdefault(feed_id, []).append(block)
        self._out_ready.set()

    def _close_channel(self, feed_id: bytes) -> None:
        channel = self.channels.pop(feed_id, None)
        if channel is not None:
            self.starved.pop(channel, None)
            self.inflight -= len(channel.requested)
            channel.feed_swarm.channel_closed(self, channel)

    # -- protocol events -------------------------------------------------------------------

    def _on_handshake(self, event: HandshakeReceived) -> None:
        if event.peer_id == self.swarm.peer_id:
            self.drop("connected to ourselves")
            return
        self.handshaken.set()
        self.swarm.peer_ready(self)

    def _on_joined(self, event: Joined) -> None:
        channel = self.channels.get(event.feed_id)
        if channel is not None:
            if not channel.ready:
                self._channel_ready(channel)
            return
        feed_swarm = self.swarm.serve(event.feed_id)
        if feed_swarm is not None:
            self.join(feed_swarm)

    def _on_left(self, event: Left) -> None:
        self._close_channel(event.feed_id)

    def _on_have(self, event: HaveReceived) -> None:
        channel = self.channels.get(event.feed_id)
        if channel is None:
            return
        blocks = channel.feed_swarm.feed.blocks
        if event.bitfield is not None:
            if blocks is not None and len(event.bitfield) > (blocks + 7) // 8 + BITFIELD_SLACK:
                self.drop(f"Have bitfield of {len(event.bitfield)} bytes for {blocks} blocks")
                return
            channel.remote_has = Bitfield(event.bitfield)
        for block in event.blocks:
            if blocks is not None and block >= blocks:
                self.drop(f"Have of block {block} past the end ({blocks} blocks)")
                return
            channel.remote_has.add(block)
        channel.scan_range = None
        channel.feed_swarm.fill(self, channel)

    def _on_paused(self, event: Paused) -> None:
        channel = self.channels.get(event.feed_id)
        if channel is not None:
            channel.remote_paused = True

    def _on_unpaused(self, event: Unpaused) -> None:
        channel = self.channels.get(event.feed_id)
        if channel is not None:
            channel.remote_paused = False
            channel.feed_swarm.fill(self, channel)

    def _on_request(self, event: RequestReceived) -> None:
        channel = self.channels.get(event.feed_id)
        if channel is None or not channel.ready:
            return
        feed = channel.feed_swarm.feed
        if feed.blocks is not None and event.block >= feed.blocks:
            self.drop(f"requested block {event.block} past the end ({feed.blocks} blocks)")
            return
        data = feed.read_local(event.block)
        if data is None:
            return  # not here (any more): the requester times out and asks elsewhere
        proof = feed.proof(event.block, channel.remote_has, channel.sent)
        if channel.sent is not None:
            channel.sent.add(event.block)
        self._send(self.conn.response(event.feed_id, event.block, data, proof))
        self.blocks_out += 1

    def _on_response(self, event: ResponseReceived) -> None:
        channel = self.channels.get(event.feed_id)
        if channel is None:
            return  # crossed our Leave
        block = event.block
        if channel.requested.pop(block, None) is not None:
            self.inflight -= 1
            self.last_progress = trio.current_time()
            size = max(len(event.data), 256)
            self.window = max(MIN_WINDOW, min(MAX_WINDOW, WINDOW_BYTES // size))
        elif block in channel.cancelled:
            channel.cancelled.discard(block)  # verified and kept all the same: see ORDERED_PROOFS
        else:
            self.drop(f"sent block {block} that was never requested")
            return
        feed_swarm = channel.feed_swarm
        try:
            feed_swarm.feed.put(block, event.data, list(event.proof))
        except BadProof as exc:
            feed_swarm.requeue(block)
            self.drop(f"sent block {block} that fails verification: {exc}")
            return
        self.blocks_in += 1  # verified only: a liar must not look useful (network redials)
        feed_swarm.fill(self, channel)
        if self.starved and self.inflight < self.window:
            self._fill_starved()

    def _fill_starved(self) -> None:
        """Share room in the window with the other feeds that found it full, in turn (else
        a feed whose first fill came when the window was full would never be asked for)."""
        for channel in list(self.starved):
            if self.inflight >= self.window:
                return
            del self.starved[channel]
            channel.feed_swarm.fill(self, channel)  # back in `starved` if it fills the window

    def _on_cancel(self, event: CancelReceived) -> None:
        """We answer requests as they come, so there is never anything left to cancel."""

    def _on_extension(self, event: ExtensionReceived) -> None:
        handlers = self._handlers.get(event.name)
        if handlers is not None:
            handlers(event.payload)

    def status(self) -> dict[str, object]:
        return {
            "address": self.address,
            "id": self.remote_id.hex() if self.remote_id else None,
            "feeds": [feed_id.hex() for feed_id in self.channels],
            "inflight": self.inflight,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "blocks_in": self.blocks_in,
            "blocks_out": self.blocks_out,
        }


def _coalesce(messages: list[bytes], small: int = 16 * 1024) -> Iterator[bytes]:
    """The queued messages as few writes: small ones joined, large ones (blocks) as they
    are, so a 64 KiB block is not copied once more on its way to the socket."""
    pending: list[bytes] = []
    for data in messages:
        if len(data) < small:
            pending.append(data)
            continue
        if pending:
            yield b"".join(pending)
            pending = []
        yield data
    if pending:
        yield b"".join(pending)
