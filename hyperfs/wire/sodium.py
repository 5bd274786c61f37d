"""libsodium's secretstream called directly, from and into buffers the caller owns.

pynacl's ``bindings.crypto_secretstream_xchacha20poly1305_push``/``pull`` take and return
``bytes``: each call converts its input and copies its output out of a buffer of its own,
which for a 64 KiB message costs about as much again as the cipher (~110 us against
~60 us here). The same libsodium functions reached through pynacl's own cffi module
(``nacl._sodium``, the build pynacl ships) read straight from any buffer (a received
``bytes``, a ``memoryview`` slice of it) and write straight into a ``bytearray``, so a
sealed frame is written once, where it will be sent from, and a received one is opened
once, where the 1.x decoder will read it. cffi releases the GIL for the call.

``nacl._sodium`` is not pynacl's public API: pyproject pins pynacl below its next major
version, and ``tests/test_sodium.py`` checks these calls against pynacl's public ones.
"""

from __future__ import annotations

from nacl._sodium import ffi, lib  # type: ignore[import-not-found]

from hyperfs.wire.protobuf import Buffer, ProtocolError

__all__ = ["HEADER_SIZE", "KEY_SIZE", "OVERHEAD", "TAG_FINAL", "TAG_MESSAGE", "Pull", "Push",
           "StreamError"]

HEADER_SIZE = lib.crypto_secretstream_xchacha20poly1305_headerbytes()
KEY_SIZE = lib.crypto_secretstream_xchacha20poly1305_keybytes()
OVERHEAD = lib.crypto_secretstream_xchacha20poly1305_abytes()
"""Bytes a message grows by when sealed: its tag byte and its MAC."""
TAG_MESSAGE = lib.crypto_secretstream_xchacha20poly1305_tag_message()
TAG_FINAL = lib.crypto_secretstream_xchacha20poly1305_tag_final()
_STATE_SIZE = lib.crypto_secretstream_xchacha20poly1305_statebytes()
_push = lib.crypto_secretstream_xchacha20poly1305_push
_pull = lib.crypto_secretstream_xchacha20poly1305_pull
_NULL = ffi.NULL


class StreamError(ProtocolError):
    """Bytes of an encrypted connection that are not what the remote sealed: altered,
    replayed, reordered or cut."""


def _key(key: bytes) -> bytes:
    if len(key) != KEY_SIZE:
        raise ValueError(f"a secretstream key is {KEY_SIZE} bytes, not {len(key)}")
    return bytes(key)


class Push:
    """Our sending direction: :attr:`header` first, then :meth:`seal_into` each message."""

    __slots__ = ("_state", "header")

    def __init__(self, key: bytes) -> None:
        self._state = ffi.new("unsigned char[]", _STATE_SIZE)
        header = ffi.new("unsigned char[]", HEADER_SIZE)
        lib.crypto_secretstream_xchacha20poly1305_init_push(self._state, header, _key(key))
        self.header = bytes(ffi.buffer(header))

    def seal_into(self, out: bytearray, at: int, message: Buffer,
                  tag: int = TAG_MESSAGE) -> None:
        """Write ``message`` sealed (``len(message) + OVERHEAD`` bytes) at ``out[at:]``."""
        size = len(message)
        if len(out) - at < size + OVERHEAD:
            raise ValueError("no room for the sealed message")
        target = ffi.from_buffer("unsigned char[]", out, require_writable=True) + at
        source = ffi.from_buffer("unsigned char[]", message) if size else _NULL
        if _push(self._state, target, _NULL, source, size, _NULL, 0, tag):
            raise ValueError("libsodium refused to seal the message")  # too long: a bug


class Pull:
    """The remote's sending direction, from its :attr:`Push.header`."""

    __slots__ = ("_state", "_tag")

    def __init__(self, key: bytes, header: Buffer) -> None:
        if len(header) != HEADER_SIZE:
            raise StreamError(f"secretstream header of {len(header)} bytes")
        self._state = ffi.new("unsigned char[]", _STATE_SIZE)
        self._tag = ffi.new("unsigned char *")
        if lib.crypto_secretstream_xchacha20poly1305_init_pull(
                self._state, ffi.from_buffer("unsigned char[]", header), _key(key)):
            raise StreamError("invalid secretstream header")

    def open_into(self, out: bytearray, at: int, sealed: Buffer) -> int:
        """Write what ``sealed`` carries (``len(sealed) - OVERHEAD`` bytes) at ``out[at:]``;
        its tag. StreamError if it is not the remote's next message, unaltered."""
        size = len(sealed) - OVERHEAD
        if size < 0:
            raise StreamError(f"a sealed message of {len(sealed)} bytes")
        if len(out) - at < size:
            raise ValueError("no room for the opened message")
        target = ffi.from_buffer("unsigned char[]", out, require_writable=True) + at
        if _pull(self._state, target, _NULL, self._tag,
                 ffi.from_buffer("unsigned char[]", sealed), len(sealed), _NULL, 0):
            raise StreamError("a frame failed to authenticate (altered, replayed, "
                            "reordered or cut)")
        return int(self._tag[0])
