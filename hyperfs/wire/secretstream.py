"""One direction of an encrypted connection: libsodium secretstream in length-framed chunks.

After the Noise handshake each side seals what it sends with its own key (``NoiseXX.split``)
as a secretstream (XChaCha20-Poly1305): a 24-byte header first, then one message per chunk
of the byte stream. Every message carries a MAC and an implicit counter, so a flipped
byte, a replayed, dropped or reordered chunk fails to open: the connection ends
(:class:`StreamError`, a ``ProtocolError``) and nothing in it reaches the protocol.
An orderly close is a last, empty message tagged final (:meth:`Sealer.final`): a stream
that ends without it was cut (:attr:`Opener.finished` is False), even at a frame boundary.

On the wire every piece is ``uint24le(length) || bytes``, as hyperswarm's secret stream
frames it: the two Noise messages each way use the same framing (:class:`FrameReader`).
A frame is at most ``MAX_FRAME`` bytes (checked on the length, before buffering), and what
a sender hands over in one go is cut into chunks of at most ``CHUNK`` bytes; the 1.x frames
inside travel as a byte stream, so their own 5 MiB limit is kept by their own decoder.

Cost: a chunk adds 3 + 17 bytes. Sealing writes every frame of a write into one buffer,
and opening reads the frames where they arrived and writes what they carry into one
buffer (``sodium``: no copies beside the cipher's own pass, ~60 us per 64 KiB here);
the writer seals the coalesced writes, not each message, so 1 KiB blocks cost ~1 us of
Python per write, not per block.
"""

from __future__ import annotations

from hyperfs.wire.protobuf import Buffer
from hyperfs.wire.sodium import (
    HEADER_SIZE,
    OVERHEAD,
    TAG_FINAL,
    TAG_MESSAGE,
    Pull,
    Push,
    StreamError,
)

__all__ = ["CHUNK", "HEADER_SIZE", "MAX_FRAME", "FrameReader", "Opener", "Sealer",
           "StreamError", "frame"]

CHUNK = 256 * 1024
"""Plaintext per secretstream message: large enough that the per-message cost is small,
small enough that the receiver starts on a 5 MiB message before all of it is in."""
MAX_FRAME = CHUNK + OVERHEAD


def frame(payload: bytes) -> bytes:
    """``uint24le(len(payload)) || payload``."""
    return len(payload).to_bytes(3, "little") + payload


class FrameReader:
    """Splits received bytes into uint24le-framed pieces, at most ``max_frame`` each.

    A frame that arrived whole is a ``memoryview`` of the bytes it arrived in (no copy);
    one that spans chunks is joined once from the parts kept (never re-copied as more
    arrives, so a frame trickling in byte by byte costs no more than one arriving whole).
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._parts: list[bytes | memoryview] = []  # a frame whose rest has not arrived
        self._have = 0  # bytes in _parts

    @property
    def partial(self) -> bool:
        """Whether a frame has begun to arrive but is not complete."""
        return bool(self._parts)

    def _size(self, prefix: Buffer, pos: int = 0) -> int:
        size = int.from_bytes(prefix[pos:pos + 3], "little")
        if size > self.max_frame:
            raise StreamError(f"frame of {size} bytes exceeds {self.max_frame}")
        return size

    def feed(self, data: bytes) -> list[Buffer]:
        frames: list[Buffer] = []
        view = memoryview(data)
        pos, end = 0, len(data)
        if self._parts:
            pos = self._finish(view, frames)
            if not frames:
                return frames
        while end - pos >= 3:
            size = self._size(data, pos)
            if end - pos - 3 < size:
                break
            frames.append(view[pos + 3:pos + 3 + size])
            pos += 3 + size
        if pos < end:
            self._parts, self._have = [view[pos:]], end - pos
        return frames

    def _finish(self, view: memoryview, frames: list[Buffer]) -> int:
        """Complete the pending frame from ``view``; how much of it it took."""
        used = 0
        if self._have < 3:  # the length itself was cut: a few bytes, joined at once
            used = min(3 - self._have, len(view))
            head = b"".join([*self._parts, view[:used]])
            self._parts, self._have = [head], len(head)
            if len(head) < 3:
                return used
        need = 3 + self._size(bytes(self._parts[0][:3])) - self._have
        if len(view) - used < need:
            self._parts.append(view[used:])
            self._have += len(view) - used
            return len(view)
        self._parts[0] = memoryview(self._parts[0])[3:]
        self._parts.append(view[used:used + need])
        frames.append(b"".join(self._parts))
        self._parts, self._have = [], 0
        return used + need


class Sealer:
    """Our sending direction: :attr:`header` goes first, then :meth:`seal` each write,
    and :meth:`final` last when closing in order."""

    def __init__(self, key: bytes) -> None:
        self._push = Push(key)
        self.header = frame(self._push.header)
        self.sealed = 0
        """Bytes :meth:`seal` has returned: all of them written means the stream is at a
        frame boundary, where :meth:`final` may follow."""

    def seal(self, data: Buffer) -> bytearray:
        """The frames that carry ``data`` (any length; empty for nothing), in one buffer."""
        size = len(data)
        count = -(-size // CHUNK)
        out = bytearray(size + count * (3 + OVERHEAD))
        view, seal_into, at = memoryview(data), self._push.seal_into, 0
        for pos in range(0, size, CHUNK):
            piece = view[pos:pos + CHUNK]
            out[at:at + 3] = (len(piece) + OVERHEAD).to_bytes(3, "little")
            seal_into(out, at + 3, piece)
            at += 3 + len(piece) + OVERHEAD
        self.sealed += len(out)
        return out

    def final(self) -> bytearray:
        """The frame that ends the stream in order (nothing may be sealed after it)."""
        out = bytearray(3 + OVERHEAD)
        out[:3] = OVERHEAD.to_bytes(3, "little")
        self._push.seal_into(out, 3, b"", TAG_FINAL)
        return out


class Opener:
    """The remote's sending direction: bytes in, what it sealed out, in order.

    ``frames`` is the reader the Noise handshake used, with what followed its last
    message still buffered in it. What it returns is a view of one buffer it reuses (a
    fresh 1 MiB buffer per read costs more than opening into it): valid until the next
    call, so a caller copies it first (the 1.x decoder does) if it keeps it.
    """

    def __init__(self, key: bytes, frames: FrameReader | None = None) -> None:
        self._key = bytes(key)
        self._pull: Pull | None = None
        self._frames = frames or FrameReader()
        self._frames.max_frame = MAX_FRAME
        self._out = bytearray()
        self.finished = False
        """Whether the remote's final frame has arrived (it closed in order)."""

    @property
    def partial(self) -> bool:
        return self._frames.partial

    def receive_data(self, data: bytes) -> list[Buffer]:
        """What the complete frames in ``data`` (and what was buffered) carry: one view,
        or none before a frame is complete."""
        return self.open(self._frames.feed(data))

    def open(self, frames: list[Buffer]) -> list[Buffer]:
        """What ``frames``, already split, carry; StreamError if one is not genuine."""
        if frames and self._pull is None:
            self._pull = Pull(self._key, frames.pop(0))
        if not frames:
            return []
        pull = self._pull
        assert pull is not None
        size = sum(max(len(sealed) - OVERHEAD, 0) for sealed in frames)
        if len(self._out) < size:
            self._out = bytearray(size)
        out, at = self._out, 0
        for sealed in frames:
            if self.finished:
                raise StreamError("a frame after the final one")
            tag = pull.open_into(out, at, sealed)
            at += len(sealed) - OVERHEAD
            if tag == TAG_FINAL:
                self.finished = True
            elif tag != TAG_MESSAGE:
                raise StreamError(f"unexpected secretstream tag {tag}")
        return [memoryview(out)[:at]]

