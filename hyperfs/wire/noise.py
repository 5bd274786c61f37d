"""The Noise XX handshake (Noise_XX_25519_ChaChaPoly_BLAKE2b), sans-I/O and pure.

Two hyperfs peers run it right after their hypercore 1.x handshakes (see ``secure``)::

    -> e
    <- e, ee, s, es
    -> s, se

so each learns the other's static X25519 key (its node key) and both agree on keys
nobody on the path can compute, with forward secrecy (the ephemeral keys are thrown
away). The prologue, hashed into every key, is what both sides must already agree on:
here, the two 1.x handshakes exactly as they travelled, so a changed offer fails the
handshake instead of quietly changing what was negotiated.

It follows revision 34 of the Noise specification to the letter (checked against the
cacophony test vectors in ``tests/test_noise.py``): BLAKE2b-512 as HASH (HASHLEN 64),
HMAC-BLAKE2b for HKDF, ChaCha20-Poly1305 IETF with a 64-bit little-endian counter after
four zero bytes as nonce, X25519 from libsodium (which refuses all-zero results, i.e. the
small-order points an attacker could send to force a known secret).

A message that fails to authenticate raises :class:`NoiseError` (a ``ProtocolError``: the
connection is dropped); the handshake object is dead afterwards.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

from nacl import bindings
from nacl.exceptions import CryptoError

from hyperfs.wire.protobuf import ProtocolError

__all__ = ["DH_SIZE", "HASH_SIZE", "PROTOCOL_NAME", "KeyPair", "NoiseError", "NoiseXX"]

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_BLAKE2b"
HASH_SIZE = 64
DH_SIZE = 32
TAG_SIZE = 16
_NONCE = struct.Struct("<4xQ")


class NoiseError(ProtocolError):
    """A handshake message that is malformed, out of turn or fails to authenticate."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An X25519 key pair (a node key, or an ephemeral one)."""

    secret: bytes
    public: bytes

    @classmethod
    def from_secret(cls, secret: bytes) -> KeyPair:
        return cls(bytes(secret), bindings.crypto_scalarmult_base(bytes(secret)))

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_secret(os.urandom(DH_SIZE))

    def __repr__(self) -> str:  # never print a secret key in a log or a traceback
        return f"KeyPair(public={self.public.hex()})"


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASH_SIZE).digest()


def _hkdf(chaining_key: bytes, material: bytes) -> tuple[bytes, bytes]:
    """Noise's HKDF with two outputs (HMAC-BLAKE2b)."""
    temp = hmac.new(chaining_key, material, hashlib.blake2b).digest()
    first = hmac.new(temp, b"\x01", hashlib.blake2b).digest()
    second = hmac.new(temp, first + b"\x02", hashlib.blake2b).digest()
    return first, second


def _dh(secret: bytes, public: bytes) -> bytes:
    try:
        return bindings.crypto_scalarmult(secret, public)
    except CryptoError:
        raise NoiseError("the remote sent a weak (small-order) key") from None


class _Symmetric:
    """Noise's SymmetricState with its CipherState: h, ck, k and the nonce."""

    def __init__(self, prologue: bytes) -> None:
        self.h = PROTOCOL_NAME.ljust(HASH_SIZE, b"\0")
        self.ck = self.h
        self.key: bytes | None = None
        self.nonce = 0
        self.mix_hash(prologue)

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, material: bytes) -> None:
        self.ck, key = _hkdf(self.ck, material)
        self.key, self.nonce = key[:32], 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        if self.key is None:
            out = plaintext
        else:
            out = bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
                plaintext, self.h, _NONCE.pack(self.nonce), self.key)
            self.nonce += 1
        self.mix_hash(out)
        return out

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        if self.key is None:
            out = ciphertext
        else:
            try:
                out = bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                    ciphertext, self.h, _NONCE.pack(self.nonce), self.key)
            except CryptoError:
                raise NoiseError("handshake message failed to authenticate") from None
            self.nonce += 1
        self.mix_hash(ciphertext)
        return out

    def split(self) -> tuple[bytes, bytes]:
        first, second = _hkdf(self.ck, b"")
        return first[:32], second[:32]


class NoiseXX:
    """One side of a Noise XX handshake.

    Call :meth:`write_message` and :meth:`read_message` in turn (the initiator writes
    first); after three messages :attr:`complete` is true and :meth:`split` gives the
    two transport keys. ``ephemeral`` is for test vectors only.
    """

    def __init__(self, *, initiator: bool, static: KeyPair, prologue: bytes,
                 ephemeral: KeyPair | None = None) -> None:
        self.initiator = initiator
        self._static = static
        self._ephemeral = ephemeral or KeyPair.generate()
        self._state = _Symmetric(bytes(prologue))
        self._step = 0  # messages done: 0, 1, 2, 3
        self.remote_static: bytes | None = None
        self._remote_ephemeral = b""
        self._dead = False

    @property
    def complete(self) -> bool:
        return self._step == 3

    @property
    def writing(self) -> bool:
        """Whether the next message is ours to write."""
        return not self.complete and (self._step % 2 == 0) == self.initiator

    @property
    def handshake_hash(self) -> bytes:
        """h after the last message: unique to this session, known to both sides."""
        if not self.complete:
            raise RuntimeError("the handshake is not complete")
        return self._state.h

    def split(self) -> tuple[bytes, bytes]:
        """(our sending key, our receiving key)."""
        if not self.complete:
            raise RuntimeError("the handshake is not complete")
        first, second = self._state.split()
        return (first, second) if self.initiator else (second, first)

    def write_message(self, payload: bytes = b"") -> bytes:
        if self._dead or not self.writing:
            raise RuntimeError("not our turn to write a handshake message")
        state, step = self._state, self._step
        out = []
        if step < 2:  # e
            out.append(self._ephemeral.public)
            state.mix_hash(self._ephemeral.public)
        if step == 1:  # <- e, ee, s, es
            state.mix_key(_dh(self._ephemeral.secret, self._remote_ephemeral))
            out.append(state.encrypt_and_hash(self._static.public))
            state.mix_key(_dh(self._static.secret, self._remote_ephemeral))
        elif step == 2:  # -> s, se
            out.append(state.encrypt_and_hash(self._static.public))
            state.mix_key(_dh(self._static.secret, self._remote_ephemeral))
        out.append(state.encrypt_and_hash(bytes(payload)))
        self._step += 1
        return b"".join(out)

    def read_message(self, message: bytes) -> bytes:
        """The payload of the remote's next message; NoiseError if it is not genuine."""
        if self._dead or self.writing or self.complete:
            raise NoiseError("a handshake message out of turn")
        try:
            return self._read(bytes(message))
        except NoiseError:
            self._dead = True
            raise

    def _read(self, message: bytes) -> bytes:
        state, step = self._state, self._step
        expected = {0: DH_SIZE, 1: DH_SIZE + DH_SIZE + TAG_SIZE, 2: DH_SIZE + TAG_SIZE}[step]
        payload_min = TAG_SIZE if step else 0
        if len(message) < expected + payload_min:
            raise NoiseError(f"handshake message {step + 1} is too short ({len(message)} bytes)")
        pos = 0
        if step < 2:  # e
            self._remote_ephemeral = message[:DH_SIZE]
            state.mix_hash(self._remote_ephemeral)
            pos = DH_SIZE
        if step == 1:  # <- e, ee, s, es (we are the initiator)
            state.mix_key(_dh(self._ephemeral.secret, self._remote_ephemeral))
            self.remote_static = state.decrypt_and_hash(message[pos:pos + DH_SIZE + TAG_SIZE])
            pos += DH_SIZE + TAG_SIZE
            state.mix_key(_dh(self._ephemeral.secret, self.remote_static))
        elif step == 2:  # -> s, se (we are the responder)
            self.remote_static = state.decrypt_and_hash(message[:DH_SIZE + TAG_SIZE])
            pos = DH_SIZE + TAG_SIZE
            state.mix_key(_dh(self._ephemeral.secret, self.remote_static))
        payload = state.decrypt_and_hash(message[pos:])
        self._step += 1
        return payload
