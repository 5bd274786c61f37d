"""The hyperfs extension that carries live feeds' signed lengths, sans-I/O.

Live feeds travel between hyperfs peers only. Both sides list :data:`LIVE` in their 1.x
handshake's extensions; a hypercore 1.8 peer does not, so it is never sent one of these
(nor joined on a live feed: it could not verify one), and 1.8 ignores extension names it
does not share. Blocks of a live feed then move as any feed's do (Request, Response with
a Merkle proof); this one message adds what 1.x lacks, the length and its signature:

``feed id (32) || u64 length || u64 old || signature (64) || root hashes || upgrade hashes``

``old`` is the length the sender believes the receiver holds (``NO_OLD``: unknown, no
upgrade proof): the upgrade hashes are the nodes of ``upgrade_indexes(old, length)`` and
the roots are ``full_roots(length)``, so no index travels, and a message's size follows
from its two lengths: anything else is a protocol error.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hyperfs.tree.flat_tree import full_roots
from hyperfs.tree.hashes import Node
from hyperfs.tree.signing import MAX_LENGTH, SIGNATURE_SIZE
from hyperfs.tree.upgrade import upgrade_indexes
from hyperfs.wire.protobuf import ProtocolError

LIVE = "hyperfs-live"
NO_OLD = 2**64 - 1
_HEAD = struct.Struct(f">32sQQ{SIGNATURE_SIZE}s")


@dataclass(frozen=True, slots=True)
class SignedLength:
    """A live feed's length as its writer signed it, with an upgrade proof from ``old``."""

    feed_id: bytes
    length: int
    signature: bytes
    roots: list[Node]
    old: int | None = None
    nodes: tuple[Node, ...] = ()


def encode(message: SignedLength) -> bytes:
    old = NO_OLD if message.old is None else message.old
    head = _HEAD.pack(message.feed_id, message.length, old, message.signature)
    return head + b"".join(digest for _, digest in (*message.roots, *message.nodes))


def decode(payload: bytes) -> SignedLength:
    """The message in ``payload``; ProtocolError if it is malformed or its length is
    beyond :data:`MAX_LENGTH` (checked before anything is computed from it)."""
    if len(payload) < _HEAD.size:
        raise ProtocolError(f"a signed length of {len(payload)} bytes is too short")
    feed_id, length, old, signature = _HEAD.unpack_from(payload)
    if not 0 < length <= MAX_LENGTH:
        raise ProtocolError(f"signed length {length} is out of range (1 .. {MAX_LENGTH})")
    start = None if old == NO_OLD else old
    if start is not None and start > MAX_LENGTH:
        raise ProtocolError(f"upgrade from length {start} is out of range")
    root_indexes = full_roots(length)
    node_indexes = [] if start is None else upgrade_indexes(start, length)
    hashes = payload[_HEAD.size:]
    if len(hashes) != 32 * (len(root_indexes) + len(node_indexes)):
        raise ProtocolError(f"a signed length of {length} blocks with {len(hashes)} bytes"
                            " of hashes (the roots and upgrade proof do not fit)")
    digests = [hashes[i: i + 32] for i in range(0, len(hashes), 32)]
    roots = list(zip(root_indexes, digests, strict=False))
    nodes = tuple(zip(node_indexes, digests[len(root_indexes):], strict=True))
    return SignedLength(feed_id, length, signature, roots, start, nodes)
