"""What the store keeps of a live feed: its latest signed length, and fork evidence.

``v`` num holds ``u64 length || signature``: the feed is live, and ``length`` is the
longest length verified (or signed here). It is written in the same batch as the blocks,
nodes and ``m`` record of that length, so a kill at any moment never leaves a signed
length ahead of what is stored. The roots it signs are stored nodes (``h`` keys at the
full roots of the length), so they are not repeated here.

``f`` num holds fork evidence: ``u64 length || signature || root hashes`` of a second,
different tree that the feed's key signed for a length whose roots we hold. It is kept
(never overwritten by a later one) until the feed is deleted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hyperfs.store.index import Batch, Index
from hyperfs.store.layout import FORK, LIVE, prefix
from hyperfs.tree.flat_tree import full_roots
from hyperfs.tree.hashes import Node
from hyperfs.tree.signing import SIGNATURE_SIZE

_HEAD = struct.Struct(f">Q{SIGNATURE_SIZE}s")


@dataclass(frozen=True, slots=True)
class Signed:
    """A length of a live feed and the writer's signature over it (and its roots)."""

    length: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Fork:
    """A signed tree that contradicts the one stored: the evidence of a fork."""

    length: int
    signature: bytes
    roots: list[Node]


def signed(index: Index, num: int) -> Signed | None:
    """The latest signed length of feed ``num``; None if it is not a live feed."""
    raw = index.get(prefix(LIVE, num))
    return None if raw is None else Signed(*_HEAD.unpack(raw))


def put_signed(batch: Batch, num: int, value: Signed) -> None:
    batch.put(prefix(LIVE, num), _HEAD.pack(value.length, value.signature))


def fork(index: Index, num: int) -> Fork | None:
    """The fork evidence kept for feed ``num``, if any."""
    raw = index.get(prefix(FORK, num))
    if raw is None:
        return None
    length, signature = _HEAD.unpack_from(raw)
    hashes = raw[_HEAD.size:]
    roots = [(node, hashes[32 * i: 32 * i + 32]) for i, node in enumerate(full_roots(length))]
    return Fork(length, signature, roots)


def put_fork(batch: Batch, num: int, evidence: Fork) -> None:
    head = _HEAD.pack(evidence.length, evidence.signature)
    batch.put(prefix(FORK, num), head + b"".join(digest for _, digest in evidence.roots))
