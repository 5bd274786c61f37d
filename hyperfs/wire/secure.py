"""The start of every connection: the 1.x handshakes, then Noise if both offered it.

Sans-I/O, like ``connection``: :class:`Greeting` takes received bytes and returns bytes to
send, until :attr:`Greeting.done`. Then :attr:`Greeting.remote_hello` is the remote's 1.x
handshake frame (for ``Connection.receive_data``), :attr:`Greeting.session` the
encrypted session (or None: plain 1.x follows) and :meth:`Greeting.leftover` what came
after, already opened.

1. Each side sends its hypercore 1.x Handshake, as always. A hyperfs peer lists
   ``SECURE`` among its extensions; the JS reference does not, and ignores ours.
2. If both listed it, everything after the two handshakes is the Noise XX handshake
   (``noise``; the side with the smaller 1.x peer id initiates), then each side's
   secretstream (``secretstream``). The Noise prologue is both handshake frames exactly
   as they travelled, the initiator's first: a relay that changed either (an extension
   removed, added or reordered, a peer id swapped) makes the two prologues differ, so
   the handshake fails to authenticate and the connection ends.
3. If only one side listed it, 1.x follows in plaintext, which is what a JS peer needs.
   A relay can still strip the offer from *both* handshakes; what protects the feeds
   that must stay private then is the policy that never joins them in plaintext
   (``hyperfs.feeds.privacy``). A remote listing other ``hyperfs-`` extensions but not
   this one is a hyperfs peer whose offer was removed: that is an error, never a
   silent fallback.
"""

from __future__ import annotations

from hyperfs.wire.messages import decode_handshake
from hyperfs.wire.noise import KeyPair, NoiseXX
from hyperfs.wire.protobuf import Buffer, ProtocolError, decode_varint
from hyperfs.wire.secretstream import FrameReader, Opener, Sealer, frame

__all__ = ["MAX_HELLO", "SECURE", "Greeting", "Session", "prologue"]

SECURE = "hyperfs-noise-xx"
"""The extension a peer lists to offer the encrypted connection."""
MAX_HELLO = 64 * 1024
"""Bytes a remote's 1.x handshake may take (frame included): ample for 64 extensions."""
_NOISE_FRAME = 1024  # a Noise message with an empty payload is at most 96 bytes
_LABEL = b"hyperfs noise prologue 1\n"


def prologue(initiator_hello: bytes, responder_hello: bytes) -> bytes:
    """What both sides hash first: the two 1.x handshake frames, initiator's first."""
    return (_LABEL + len(initiator_hello).to_bytes(4, "big") + initiator_hello
            + responder_hello)


class Session:
    """An encrypted connection: :meth:`seal` what we send, :meth:`open` what arrives
    (opened pieces, in order, views valid until the next call), :meth:`final` last."""

    def __init__(self, noise: NoiseXX, frames: FrameReader) -> None:
        send_key, receive_key = noise.split()
        self.initiator = noise.initiator
        self.handshake_hash = noise.handshake_hash
        assert noise.remote_static is not None
        self.remote_key = noise.remote_static
        """The remote's node key (its static X25519 public key), authenticated."""
        self._sealer = Sealer(send_key)
        self._opener = Opener(receive_key, frames)
        self.seal = self._sealer.seal
        self.final = self._sealer.final
        self.open = self._opener.receive_data

    @property
    def header(self) -> bytes:
        return self._sealer.header

    @property
    def receiving(self) -> bool:
        """Whether a sealed frame has begun to arrive but is not complete."""
        return self._opener.partial

    @property
    def sealed(self) -> int:
        """Bytes :meth:`seal` has returned (the header not counted)."""
        return self._sealer.sealed

    @property
    def finished(self) -> bool:
        """Whether the remote closed in order (its final frame came): at the end of its
        bytes without it, the stream was cut, even if at a frame boundary."""
        return self._opener.finished

    def open_frames(self, frames: list[Buffer]) -> list[Buffer]:
        return self._opener.open(frames)


class Greeting:
    """The handshakes of one connection. ``hello`` is our 1.x handshake frame (from
    ``Connection.start``); ``keypair`` our node key; ``offer`` whether ``hello`` lists
    :data:`SECURE` (it must, to offer)."""

    def __init__(self, hello: bytes, keypair: KeyPair) -> None:
        self.hello = bytes(hello)
        self._keypair = keypair
        ours = decode_handshake(_payload(self.hello))
        self._our_id = ours.id
        self.offered = SECURE in ours.extensions
        self.remote_hello: bytes | None = None
        self.session: Session | None = None
        self.done = False
        self.sent = self.received = 0
        """Bytes this greeting gave to send, and was given (for a peer's counters)."""
        self._buffer = b""
        self._frames = FrameReader()  # what follows the last Noise message is sealed data
        self._noise: NoiseXX | None = None
        self._leftover = b""

    def start(self) -> bytes:
        """What to send first: our 1.x handshake."""
        self.sent += len(self.hello)
        return self.hello

    def leftover(self) -> bytes:
        """What arrived after the handshakes: opened if encrypted, raw 1.x otherwise."""
        rest, self._leftover = self._leftover, b""
        return rest

    def receive_data(self, data: bytes) -> bytes:
        """Consume received bytes; the bytes to send now. ProtocolError ends it."""
        self.received += len(data)
        out = self._receive(data)
        self.sent += len(out)
        return out

    def _receive(self, data: bytes) -> bytes:
        if self.done:
            raise RuntimeError("the greeting is over")
        if self.remote_hello is None:
            self._buffer += data
            found = _split_hello(self._buffer)
            if found is None:
                return b""
            self.remote_hello, rest = found
            self._buffer = b""
            if not self._negotiate():
                self._leftover, self.done = rest, True
                return b""
            out = self._start_noise()
            return out + self._noise_data(rest)
        return self._noise_data(data)

    def _negotiate(self) -> bool:
        """Whether Noise follows (both offered); ProtocolError for a stripped offer."""
        assert self.remote_hello is not None
        theirs = decode_handshake(_payload(self.remote_hello))
        if not self.offered:
            return False
        if SECURE in theirs.extensions:
            if len(theirs.id) != len(self._our_id) or theirs.id == self._our_id:
                raise ProtocolError("the remote's peer id is ours or malformed")
            self._initiator = self._our_id < theirs.id
            return True
        if any(name.startswith("hyperfs-") for name in theirs.extensions):
            raise ProtocolError("a hyperfs peer without the encryption offer "
                                "(stripped on the way?)")
        return False

    def _start_noise(self) -> bytes:
        assert self.remote_hello is not None
        ordered = ((self.hello, self.remote_hello) if self._initiator
                   else (self.remote_hello, self.hello))
        self._noise = NoiseXX(initiator=self._initiator, static=self._keypair,
                              prologue=prologue(*ordered))
        return frame(self._noise.write_message()) if self._initiator else b""

    def _noise_data(self, data: bytes) -> bytes:
        noise = self._noise
        assert noise is not None
        out = []
        frames = self._frames.feed(data)
        while frames and not noise.complete:
            message = frames.pop(0)
            if len(message) > _NOISE_FRAME:
                raise ProtocolError(f"a Noise message of {len(message)} bytes")
            noise.read_message(bytes(message))
            if noise.writing:
                out.append(frame(noise.write_message()))
        if noise.complete:
            self.session = Session(noise, self._frames)
            out.append(self.session.header)
            self._leftover = b"".join(self.session.open_frames(frames))
            self.done = True
        return b"".join(out)


def _payload(hello: bytes) -> bytes:
    _, pos = decode_varint(hello, 0)
    return hello[pos:]


def _split_hello(buffer: bytes) -> tuple[bytes, bytes] | None:
    """(the first 1.x frame, what follows) once it is complete; None before."""
    try:
        size, pos = decode_varint(buffer, 0)
    except (ProtocolError, IndexError):
        if len(buffer) >= 10:
            raise ProtocolError("the remote's handshake has a malformed length") from None
        return None  # the length prefix is not all here yet
    if size == 0 or pos + size > MAX_HELLO:
        raise ProtocolError(f"the remote's handshake of {size} bytes is empty or too large")
    if len(buffer) < pos + size:
        return None
    return buffer[:pos + size], buffer[pos + size:]
