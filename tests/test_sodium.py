"""``wire.sodium`` against pynacl's public secretstream: same construction, same bytes.

``sodium`` reaches libsodium through ``nacl._sodium``, which is not pynacl's public API;
if a pynacl release changes it, these fail (pyproject also pins pynacl below 2).
"""

from __future__ import annotations

import os

import pytest
from nacl import bindings

from hyperfs.wire.sodium import (
    HEADER_SIZE,
    KEY_SIZE,
    OVERHEAD,
    TAG_FINAL,
    TAG_MESSAGE,
    Pull,
    Push,
    StreamError,
)

MESSAGES = [b"", b"x", os.urandom(1000), os.urandom(65_536 + 600)]


def test_the_constants_are_libsodiums() -> None:
    assert bindings.crypto_secretstream_xchacha20poly1305_HEADERBYTES == HEADER_SIZE
    assert bindings.crypto_secretstream_xchacha20poly1305_KEYBYTES == KEY_SIZE
    assert bindings.crypto_secretstream_xchacha20poly1305_ABYTES == OVERHEAD
    assert bindings.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE == TAG_MESSAGE
    assert bindings.crypto_secretstream_xchacha20poly1305_TAG_FINAL == TAG_FINAL


def test_what_we_seal_pynacl_opens() -> None:
    key = os.urandom(KEY_SIZE)
    push = Push(key)
    state = bindings.crypto_secretstream_xchacha20poly1305_state()
    bindings.crypto_secretstream_xchacha20poly1305_init_pull(state, push.header, key)
    for message in [*MESSAGES, b"last"]:
        out = bytearray(b"-" * 5 + bytes(len(message) + OVERHEAD) + b"+")
        tag = TAG_FINAL if message == b"last" else TAG_MESSAGE
        push.seal_into(out, 5, memoryview(message), tag)
        assert out[:5] == b"-----" and out[-1:] == b"+"  # nothing written outside
        assert bindings.crypto_secretstream_xchacha20poly1305_pull(
            state, bytes(out[5:-1])) == (message, tag)


def test_what_pynacl_seals_we_open_and_nothing_altered() -> None:
    key = os.urandom(KEY_SIZE)
    state = bindings.crypto_secretstream_xchacha20poly1305_state()
    header = bindings.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    sealed = [bindings.crypto_secretstream_xchacha20poly1305_push(state, m) for m in MESSAGES]
    final = bindings.crypto_secretstream_xchacha20poly1305_push(
        state, b"", tag=TAG_FINAL)
    pull = Pull(key, header)
    for message, frame in zip(MESSAGES, sealed, strict=True):
        out = bytearray(len(message) + 1)
        assert pull.open_into(out, 1, memoryview(frame)) == TAG_MESSAGE
        assert out[1:] == message
    assert pull.open_into(bytearray(), 0, final) == TAG_FINAL
    for alter in (lambda f: f[:-1] + bytes([f[-1] ^ 1]), lambda f: f[:OVERHEAD - 1]):
        fresh = Pull(key, header)
        with pytest.raises(StreamError):
            fresh.open_into(bytearray(len(MESSAGES[0]) + 1000), 0, alter(sealed[0]))
    replayed = Pull(key, header)
    replayed.open_into(bytearray(0), 0, sealed[0])
    with pytest.raises(StreamError):
        replayed.open_into(bytearray(0), 0, sealed[0])


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        Push(b"short")
    with pytest.raises(StreamError):
        Pull(os.urandom(KEY_SIZE), b"short header")
    push = Push(os.urandom(KEY_SIZE))
    with pytest.raises(ValueError, match="no room"):
        push.seal_into(bytearray(10), 0, b"message")
