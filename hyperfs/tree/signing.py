"""Signed lengths of a live feed: what its writer signs, and how a receiver checks it.

A live feed's id is an ed25519 public key; the tree of its blocks is the same SHA-256
Merkle tree as a static feed's (:mod:`.merkle`), and each time the writer appends it signs
the new length together with the full roots of the tree at that length. A receiver that
checks the signature can then trust those roots exactly as a static feed's roots are
trusted by hashing to its id, and every block below the length verifies against them
as today. One signature per length, never one per block.

What is signed (like hypercore 9's ``tree || u64 length``, under a prefix as hypercore 10
does): ``PREFIX || u64be(length) || for each full root: u64be(index) || u64be(span) ||
hash``. ``span`` is the number of blocks under the root: 1.x's tree nodes carry no byte
sizes (hypercore 4+ nodes do), so a root's size here is the blocks it covers; it follows
from the index, and is signed so the message reads the same as hypercore's. There is no
fork counter (hypercore 10): nothing here ever truncates a feed, so a fork is an error to
detect (:mod:`hyperfs.feeds.live`), not a state to move to.

Pure functions over bytes (pynacl's ed25519 is computation only), so the rules can be
tested without a database or a network.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

import nacl.bindings
import nacl.exceptions
import nacl.signing

from hyperfs.base.errors import BadSignature
from hyperfs.tree import flat_tree
from hyperfs.tree.hashes import HASH_SIZE, Node

PREFIX = b"hyperfs live feed length v1\x00"
"""Domain separation: a signature made for this can never be passed off as one over any
other message of the same key (an ed25519 key must sign one kind of thing)."""
SIGNATURE_SIZE = 64
SEED_SIZE = 32
MAX_LENGTH = 1 << 40
"""Longest signed length accepted (a trillion blocks): a larger one is a lie meant to make
us allocate or loop, so it is refused before the signature is even checked."""
_U64 = struct.Struct(">Q")
_ROOT = struct.Struct(">QQ32s")


def signable(length: int, roots: Sequence[Node]) -> bytes:
    """The bytes signed for ``length`` with these full roots (see the module docstring)."""
    pack = _ROOT.pack
    # A node at depth d spans 2**d blocks, and 2**d is the lowest set bit of node + 1.
    return b"".join([PREFIX, _U64.pack(length),
                     *[pack(node, (node + 1) & -(node + 1), digest) for node, digest in roots]])


def check_roots(length: int, roots: Sequence[Node]) -> None:
    """Raise BadSignature unless ``roots`` are the full roots of a tree of ``length``."""
    if isinstance(length, bool) or not isinstance(length, int) or not 0 < length <= MAX_LENGTH:
        raise BadSignature(f"signed length {length!r} is out of range (1 .. {MAX_LENGTH})")
    if [node for node, _ in roots] != flat_tree.full_roots(length):
        raise BadSignature(f"the roots sent are not the full roots of {length} blocks")
    if any(len(digest) != HASH_SIZE for _, digest in roots):
        raise BadSignature("a root hash is not 32 bytes")


def verify(public_key: bytes, length: int, roots: Sequence[Node], signature: bytes) -> None:
    """Raise BadSignature unless ``signature`` is ``public_key``'s over ``length``/``roots``."""
    check_roots(length, roots)
    if len(signature) != SIGNATURE_SIZE:
        raise BadSignature(f"a signature is {SIGNATURE_SIZE} bytes, not {len(signature)}")
    try:
        nacl.signing.VerifyKey(public_key).verify(signable(length, roots), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        raise BadSignature(f"the signature of length {length} is not the feed's") from None


class Signer:
    """The writer's half: an ed25519 key made from a 32-byte seed (the secret kept on disk)."""

    __slots__ = ("_secret", "public_key")

    def __init__(self, seed: bytes) -> None:
        public, self._secret = nacl.bindings.crypto_sign_seed_keypair(seed)
        self.public_key: bytes = public

    @classmethod
    def generate(cls) -> tuple[Signer, bytes]:
        """A new key pair: the signer and the seed to store."""
        seed = os.urandom(SEED_SIZE)
        return cls(seed), seed

    def sign(self, length: int, roots: Sequence[Node]) -> bytes:
        """The signature of ``length`` with ``roots`` (the writer's own tree: trusted).
        libsodium's call directly, as it is a fifth of an append's cost."""
        return nacl.bindings.crypto_sign(signable(length, roots), self._secret)[:SIGNATURE_SIZE]
