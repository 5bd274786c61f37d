"""A man in the middle on 127.0.0.1: a TCP relay that records, and may alter, every byte.

Tests of the encrypted wire put it between two hyperfs nodes (or processes): everything
each side sent is in :attr:`Relay.recorded`, to be searched for what must not be there
(a feed id, pieces of the data). An :class:`Alter` per connection and direction changes
the stream at its frame boundaries, as an attacker on the path would: flip one byte,
replay, reorder or cut a frame (a clean end of that direction right before it, at a frame
boundary), or rewrite the 1.x handshake (strip the encryption offer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial

import trio

from hyperfs.wire.framing import frame as frame_1x
from hyperfs.wire.messages import Handshake, decode_handshake, encode
from hyperfs.wire.protobuf import decode_varint
from hyperfs.wire.secretstream import HEADER_SIZE
from hyperfs.wire.secure import SECURE

__all__ = ["ACTIONS", "Alter", "Relay", "assert_nothing_revealed", "open_relay", "strip_offer"]

ACTIONS = ("flip", "replay", "reorder", "truncate", "flip-noise")
"""What an :class:`Alter` can do to a frame after the secretstream header (one that
carries data: flip its last byte, send it twice, swap it with the next, or cut the
connection before it), or to the first Noise message (``flip-noise``)."""


def assert_nothing_revealed(recorded: bytes, feed_id: bytes, blocks: Sequence[bytes]) -> None:
    """Neither the id (raw, hex in either case, the seed's 20-byte info-hash) nor any
    16-byte piece of any block (every 509th offset) is in ``recorded``."""
    assert recorded, "the relay recorded nothing: the test would prove nothing"
    for form in (feed_id, feed_id.hex().encode(), feed_id.hex().upper().encode(),
                 feed_id[:20]):
        assert form not in recorded
    for block in blocks:
        for pos in range(0, len(block) - 16, 509):
            assert block[pos:pos + 16] not in recorded, pos


def strip_offer(hello: bytes) -> bytes:
    """A 1.x handshake frame without the encryption offer (as a stripping relay sends)."""
    size, pos = decode_varint(hello, 0)
    old = decode_handshake(hello[pos:pos + size])
    names = tuple(name for name in old.extensions if name != SECURE)
    return frame_1x(encode(Handshake(old.protocol, old.version, old.id, names)))


class Alter:
    """Alters one direction of one hyperfs connection: the 1.x handshake frame (``hello``
    rewrites it), then the uint24le frames (``action`` on data frame ``index``, counted
    from 0 after the header). Returns None once the relay must cut the connection."""

    def __init__(self, action: str | None = None, *, index: int = 0,
                 hello: Callable[[bytes], bytes] | None = None) -> None:
        if action is not None and action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        self.action = action
        self.hello = hello
        self.index = index
        self.done = False  # the action was carried out
        self._buffer = b""
        self._hello_seen = False
        self._header_seen = False
        self._held: bytes | None = None  # a frame held back, to be sent after the next

    def __call__(self, data: bytes) -> bytes | None:
        self._buffer += data
        out = []
        if not self._hello_seen:
            try:
                size, pos = decode_varint(self._buffer, 0)
            except IndexError:
                return b""
            if len(self._buffer) < pos + size:
                return b""
            hello, self._buffer = self._buffer[:pos + size], self._buffer[pos + size:]
            self._hello_seen = True
            out.append(self.hello(hello) if self.hello else hello)
        if self.action is None:  # the rest as it comes (it may be plain 1.x frames)
            out.append(self._buffer)
            self._buffer = b""
        while len(self._buffer) >= 3:
            size = int.from_bytes(self._buffer[:3], "little")
            if len(self._buffer) < 3 + size:
                break
            piece, self._buffer = self._buffer[:3 + size], self._buffer[3 + size:]
            altered = self._frame(piece, size)
            if altered is None:
                return None
            out.append(altered)
        return b"".join(out)

    def _frame(self, piece: bytes, size: int) -> bytes | None:
        if self._held is not None:  # reorder: this one first, then the held one
            held, self._held = self._held, None
            self.done = True
            return piece + held
        if self.done or self.action is None:
            return piece
        if not self._header_seen:
            if self.action == "flip-noise":
                self.done = True
                return piece[:-1] + bytes([piece[-1] ^ 0x01])
            self._header_seen = size == HEADER_SIZE
            return piece
        if self.index:
            self.index -= 1
            return piece
        if self.action == "flip":
            self.done = True
            return piece[:-1] + bytes([piece[-1] ^ 0x01])
        if self.action == "replay":
            self.done = True
            return piece + piece
        if self.action == "reorder":
            self._held = piece
            return b""
        self.done = True  # truncate: the connection is cut before this frame
        return None


class Relay:
    """Connections accepted on :attr:`port` are relayed to ``target``; see module doc."""

    def __init__(self, target: int,
                 alter: Callable[[str], Callable[[bytes], bytes | None] | None]) -> None:
        self.target = target
        self.port = 0
        self.recorded = {"up": bytearray(), "down": bytearray()}
        """Every byte each way as it arrived at the relay: "up" is from the dialing side."""
        self.connections = 0
        self.closed = 0
        self._alter = alter
        self._changed = trio.Condition()

    async def wait_closed(self, count: int) -> None:
        """Until ``count`` relayed connections have ended."""
        async with self._changed:
            while self.closed < count:
                await self._changed.wait()

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        try:
            async with client, await trio.open_tcp_stream("127.0.0.1", self.target) as server, \
                    trio.open_nursery() as nursery:
                done = nursery.cancel_scope
                nursery.start_soon(self._pump, client, server, "up", done)
                nursery.start_soon(self._pump, server, client, "down", done)
        except OSError:
            pass
        finally:
            async with self._changed:
                self.closed += 1
                self._changed.notify_all()

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream, way: str,
                    done: trio.CancelScope) -> None:
        alter = self._alter(way)
        try:
            async for chunk in source:
                self.recorded[way] += chunk
                out = bytes(chunk) if alter is None else alter(bytes(chunk))
                if out is None:  # cut: a clean end of this direction, as a FIN forged
                    await sink.send_eof()  # on the path would be; the other goes on
                    return  # until the side whose stream was cut closes
                if out:
                    await sink.send_all(out)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()  # either side gone: the relayed connection is over


@asynccontextmanager
async def open_relay(
    target: int,
    alter: Callable[[str], Callable[[bytes], bytes | None] | None] = lambda way: None,
) -> AsyncIterator[Relay]:
    """A relay to 127.0.0.1:``target`` for the block; ``alter(way)`` makes each new
    connection's alteration of direction ``way`` ("up" or "down"), or None."""
    relay = Relay(target, alter)
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, relay._handle, 0,
                                                 host="127.0.0.1"))
        relay.port = listener.socket.getsockname()[1]
        yield relay
        nursery.cancel_scope.cancel()
