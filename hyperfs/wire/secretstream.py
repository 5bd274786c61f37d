"""One direction of an encrypted connection: libsodium secretstream in length-framed chunks.

After the Noise handshake each side seals what it sends with its own key (``NoiseXX.split``)
as a secretstream (XChaCha20-Poly1305): a 24-byte header first, then one message per chunk
of the byte stream. Every message carries a MAC and an implicit counter, so a flipped
byte, a replayed, dropped or reordered chunk fails to open: the connection ends
(:class:`StreamError`, a ``ProtocolError``) and nothing in it reaches the protocol.

On the wire every piece is ``uint24le(length) || bytes``, as hyperswarm's secret stream
frames it: the two Noise messages each way use the same framing (:class:`FrameReader`).
A frame is at most ``MAX_FRAME`` bytes (checked on the length, before buffering), and what
a sender hands over in one go is cut into chunks of at most ``CHUNK`` bytes; the 1.x frames
inside travel as a byte stream, so their own 5 MiB limit is kept by their own decoder.

Cost: a chunk adds 3 + 17 bytes; sealing and opening are libsodium's (~1.5 GB/s here)
plus ~1 us of Python per chunk, so the writer seals the coalesced writes, not each message.
"""

from __future__ import annotations

from nacl import bindings
from nacl.exceptions import CryptoError

from hyperfs.wire.protobuf import ProtocolError

__all__ = ["CHUNK", "HEADER_SIZE", "MAX_FRAME", "FrameReader", "Opener", "Sealer",
           "StreamError", "frame"]

HEADER_SIZE = bindings.crypto_secretstream_xchacha20poly1305_HEADERBYTES
OVERHEAD = bindings.crypto_secretstream_xchacha20poly1305_ABYTES
CHUNK = 256 * 1024
"""Plaintext per secretstream message: large enough that the per-message cost is small,
small enough that the receiver starts on a 5 MiB message before all of it is in."""
MAX_FRAME = CHUNK + OVERHEAD
_TAG_MESSAGE = bindings.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE


class StreamError(ProtocolError):
    """Bytes of an encrypted connection that are not what the remote sealed."""


def frame(payload: bytes) -> bytes:
    """``uint24le(len(payload)) || payload``."""
    return len(payload).to_bytes(3, "little") + payload


class FrameReader:
    """Splits received bytes into uint24le-framed pieces, at most ``max_frame`` each.

    Each frame is copied once: sliced out of the chunk it arrived in, or, when it spans
    chunks, joined once from the parts kept (never re-copied as more arrives, so a
    frame trickling in byte by byte costs no more than one arriving whole).
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._parts: list[bytes | memoryview] = []  # a frame whose rest has not arrived
        self._have = 0  # bytes in _parts

    @property
    def partial(self) -> bool:
        """Whether a frame has begun to arrive but is not complete."""
        return bool(self._parts)

    def _size(self, prefix: bytes, pos: int = 0) -> int:
        size = int.from_bytes(prefix[pos:pos + 3], "little")
        if size > self.max_frame:
            raise StreamError(f"frame of {size} bytes exceeds {self.max_frame}")
        return size

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        pos, end = 0, len(data)
        if self._parts:
            pos = self._finish(data, frames)
            if not frames:
                return frames
        while end - pos >= 3:
            size = self._size(data, pos)
            if end - pos - 3 < size:
                break
            frames.append(data[pos + 3:pos + 3 + size])
            pos += 3 + size
        if pos < end:
            self._parts, self._have = [memoryview(data)[pos:]], end - pos
        return frames

    def _finish(self, data: bytes, frames: list[bytes]) -> int:
        """Complete the pending frame from ``data``; how much of ``data`` it took."""
        used = 0
        if self._have < 3:  # the length itself was cut: a few bytes, joined at once
            used = min(3 - self._have, len(data))
            head = b"".join(self._parts) + data[:used]
            self._parts, self._have = [head], len(head)
            if len(head) < 3:
                return used
        need = 3 + self._size(bytes(self._parts[0][:3])) - self._have
        view = memoryview(data)
        if len(data) - used < need:
            self._parts.append(view[used:])
            self._have += len(data) - used
            return len(data)
        self._parts[0] = memoryview(self._parts[0])[3:]
        self._parts.append(view[used:used + need])
        frames.append(b"".join(self._parts))
        self._parts, self._have = [], 0
        return used + need


class Sealer:
    """Our sending direction: :attr:`header` goes first, then :meth:`seal` each write."""

    def __init__(self, key: bytes) -> None:
        self._state = bindings.crypto_secretstream_xchacha20poly1305_state()
        self.header = frame(bindings.crypto_secretstream_xchacha20poly1305_init_push(
            self._state, key))

    def seal(self, data: bytes) -> bytes:
        """The frames that carry ``data`` (any length; b"" for nothing)."""
        push, state = bindings.crypto_secretstream_xchacha20poly1305_push, self._state
        if len(data) <= CHUNK:
            return frame(push(state, bytes(data))) if data else b""
        view = memoryview(data)
        return b"".join(frame(push(state, bytes(view[pos:pos + CHUNK])))
                        for pos in range(0, len(data), CHUNK))


class Opener:
    """The remote's sending direction: bytes in, what it sealed out, in order.

    ``frames`` is the reader the Noise handshake used, with what followed its last
    message still buffered in it.
    """

    def __init__(self, key: bytes, frames: FrameReader | None = None) -> None:
        self._key = bytes(key)
        self._state: bindings.crypto_secretstream_xchacha20poly1305_state | None = None
        self._frames = frames or FrameReader()
        self._frames.max_frame = MAX_FRAME

    @property
    def partial(self) -> bool:
        return self._frames.partial

    def receive_data(self, data: bytes) -> list[bytes]:
        """The plaintext of every complete frame in ``data`` (and what was buffered), one
        piece per frame: handed on as they are, not joined (the 1.x decoder joins)."""
        return self.open(self._frames.feed(data))

    def open(self, frames: list[bytes]) -> list[bytes]:
        """The plaintext of ``frames``, already split; StreamError if one is not genuine."""
        if not frames:
            return frames
        if self._state is None:
            header = frames.pop(0)
            if len(header) != HEADER_SIZE:
                raise StreamError(f"secretstream header of {len(header)} bytes")
            self._state = bindings.crypto_secretstream_xchacha20poly1305_state()
            bindings.crypto_secretstream_xchacha20poly1305_init_pull(
                self._state, header, self._key)
        pull, state = bindings.crypto_secretstream_xchacha20poly1305_pull, self._state
        out = []
        for sealed in frames:
            try:
                message, tag = pull(state, sealed)
            except (CryptoError, ValueError):
                raise StreamError("a frame failed to authenticate (altered, replayed, "
                                  "reordered or cut)") from None
            if tag != _TAG_MESSAGE:
                raise StreamError(f"unexpected secretstream tag {tag}")
            out.append(message)
        return out
