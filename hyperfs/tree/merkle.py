"""The Merkle logic of a feed, free of storage: building the tree, proofs, verification.

Everything here is a pure function of its arguments (stored hashes are passed in as a
lookup function), so the rules that keep unverified bytes out of storage can be tested
exhaustively without a database or a network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from hashlib import sha256

from hyperfs.base.errors import BadProof
from hyperfs.tree import flat_tree
from hyperfs.tree.hashes import HASH_SIZE, PARENT, Node, leaf_hash, parent_hash, tree_id

"""A tree node as it travels: (flat-tree index, 32-byte hash)."""


class TreeBuilder:
    """Grows the tree as blocks are appended, keeping only the pending roots in memory.

    Memory is O(log n) whatever the feed's size, which is what lets a 10 GiB file stream
    into a feed.
    """

    __slots__ = ("blocks", "roots")

    def __init__(self) -> None:
        self.roots: list[Node] = []
        self.blocks = 0

    def push(self, data: bytes | memoryview) -> list[Node]:
        """Add one block; return the nodes it creates (its leaf, then new parents)."""
        return self.extend((data,))

    def extend(self, blocks: Iterable[bytes | memoryview]) -> list[Node]:
        """Add blocks; return every node created (each leaf, then its new parents)."""
        return self.extend_leaves(leaf_hash(data) for data in blocks)

    def extend_leaves(self, leaves: Iterable[bytes]) -> list[Node]:
        """Add blocks by their leaf hashes (hashed elsewhere: in worker threads, while
        their bytes are written); return every node created, as :meth:`extend` does.

        The append hot path, so the flat-tree steps are done inline: after leaf ``b`` the
        pending roots merge once per trailing 1-bit of ``b``, and the parent of a left
        child at depth ``d`` is ``left + 2**d``.
        """
        created: list[Node] = []
        add, roots, block = created.append, self.roots, self.blocks
        for digest in leaves:
            node = 2 * block
            add((node, digest))
            carry, step = block, 1
            while carry & 1:
                left, left_digest = roots.pop()
                node, digest = left + step, sha256(PARENT + left_digest + digest).digest()
                add((node, digest))
                carry >>= 1
                step <<= 1
            roots.append((node, digest))
            block += 1
        self.blocks = block
        return created


def proof_indexes(
    block: int, blocks: int, knows: Callable[[int, int], bool] | None = None
) -> list[int]:
    """The node indexes a responder sends with ``block``, in order (PROTOCOL.md, Proofs).

    ``knows(start, end)`` says whether the receiver holds any block in ``start .. end-1``,
    and so every node above it (a peer stores the whole verified path of each block it
    holds); nodes it knows are left out, and the list ends as soon as the receiver can
    verify from what it holds (it then needs no roots either). Spans, not nodes, are asked
    because the climb has them at hand: a proof is on the hot path of every upload.
    Without ``knows`` this is the full, canonical form.
    """
    limit = 2 * blocks
    indexes = []
    node, step = 2 * block, 1  # climbing from the leaf; step = 2**depth(node)
    while True:
        sibling, parent = _family(node, step)
        if sibling + step - 1 >= limit:  # right_span(sibling) is past the end: node is a root
            break
        if knows is None:
            indexes.append(sibling)
        else:  # a node of step s covers blocks (node + 1 - s) / 2 .. (node + s - 1) / 2
            if not knows((sibling + 1 - step) >> 1, ((sibling + step - 1) >> 1) + 1):
                indexes.append(sibling)
            up = step << 1
            if knows((parent + 1 - up) >> 1, ((parent + up - 1) >> 1) + 1):
                return indexes
        node, step = parent, step << 1
    indexes.extend(flat_tree.full_roots(blocks))
    return indexes


def within(block: int, blocks: int, proof: Sequence[Node]) -> list[Node]:
    """The nodes of ``proof`` that a tree of ``blocks`` blocks can use for ``block``.

    A live feed's responder may hold a longer signed length than the receiver: its proof
    climbs past the receiver's root to roots the receiver does not know yet. The path
    below the receiver's root is the same in both trees, so the receiver keeps the
    nodes of its own canonical proof, in order. Leaving nodes out can only make
    :func:`verify` fail, never pass, so this is safe on anything a peer sends.
    """
    wanted = set(proof_indexes(block, blocks)) if block < blocks else set()
    return [node for node in proof if node[0] in wanted]


def _family(node: int, step: int) -> tuple[int, int]:
    """(sibling, parent) of ``node`` at depth d, where ``step`` is 2**d: flat-tree inline.

    A node is a right child when bit d+1 of ``node + 1`` is set (its offset is odd).
    """
    if (node + 1) & (step << 1):
        return node - (step << 1), node - step
    return node + (step << 1), node + step


@dataclass(frozen=True, slots=True)
class Verified:
    """What a verified block adds to storage."""

    nodes: list[Node]
    """Nodes now known to be genuine: the leaf, the parents computed and siblings used."""
    blocks: int
    """The feed's length (newly learned if ``roots`` is set)."""
    roots: list[Node] | None
    """The full roots, when this proof was the one that taught us the feed's length."""


def verify(
    feed_id: bytes,
    block: int,
    data: bytes | bytearray | memoryview,
    proof: Sequence[Node],
    *,
    blocks: int | None,
    roots: Sequence[Node] = (),
    stored: Callable[[int], bytes | None] = lambda _index: None,
) -> Verified:
    """Check ``data`` as block ``block`` of feed ``feed_id`` against ``proof``.

    ``blocks`` and ``roots`` are what the receiver already trusts (None and () before
    the first block), ``stored`` looks up other nodes it has verified before. Raises
    :class:`BadProof` for anything that does not verify; the caller stores nothing then.

    One function on purpose: it is the whole security argument of the project (every
    byte from the network passes here), and read top to bottom it is one climb from the
    leaf to a trusted node, with every way out a rejection.
    """
    if block < 0:
        raise BadProof(f"negative block index {block}")
    for node, digest in proof:
        if node < 0 or len(digest) != HASH_SIZE:
            raise BadProof("malformed proof node")
    trusted: dict[int, bytes] = dict(roots)
    new_roots = None
    if blocks is None:
        blocks, new_roots = _roots_from_proof(feed_id, proof)
        trusted = dict(new_roots)
    elif roots:
        for node, digest in proof:
            if node in trusted and trusted[node] != digest:
                raise BadProof(f"proof root {node} does not match the feed")
    if block >= blocks:
        raise BadProof(f"block {block} is past the end of the feed ({blocks} blocks)")
    # Climb from the leaf, taking siblings from the proof in order (as the reference
    # does) or from what is stored, until a node we trust matches.
    node, digest = 2 * block, leaf_hash(data)
    learned: list[Node] = [(node, digest)]
    limit, step, used = 2 * blocks, 1, 0
    while True:
        known = trusted.get(node)
        if known is None:
            known = stored(node)
        if known is not None:
            if known != digest:
                raise BadProof(f"block {block} does not match the feed's hashes")
            break
        sibling, parent = _family(node, step)
        if sibling + step - 1 >= limit:  # an untrusted root
            raise BadProof(f"block {block}: proof does not reach a trusted node")
        if used < len(proof) and proof[used][0] == sibling:
            sibling_digest = proof[used][1]
            used += 1
            learned.append((sibling, sibling_digest))
        else:
            found = stored(sibling)
            if found is None:
                raise BadProof(f"block {block}: proof lacks node {sibling}")
            sibling_digest = found
        if sibling < node:
            digest = parent_hash(sibling_digest, digest)
        else:
            digest = parent_hash(digest, sibling_digest)
        node, step = parent, step << 1
        learned.append((node, digest))
    if used < len(proof):  # the rest must still be in the canonical order
        _check_order(proof, proof_indexes(block, blocks))
    learned.pop()  # the node we matched is stored already (or is a root stored below)
    if new_roots is not None:
        learned.extend(new_roots)
    return Verified(learned, blocks, new_roots)


def _roots_from_proof(feed_id: bytes, proof: Sequence[Node]) -> tuple[int, list[Node]]:
    """Learn the feed's length from the trailing full roots of a proof, checked by the id."""
    if not proof:
        raise BadProof("an empty proof cannot teach the feed's length")
    blocks = flat_tree.blocks_below(proof[-1][0])
    indexes = flat_tree.full_roots(blocks)
    if len(indexes) > len(proof):
        raise BadProof("proof lacks the feed's roots")
    new_roots = list(proof[len(proof) - len(indexes) :])
    if [node for node, _ in new_roots] != indexes:
        raise BadProof("proof roots are not the full roots of any feed length")
    if tree_id(new_roots) != feed_id:
        raise BadProof("proof roots do not hash to the feed id")
    return blocks, new_roots


def _check_order(proof: Sequence[Node], canonical: list[int]) -> None:
    """Check the proof is the canonical list with some nodes left out.

    A responder may skip nodes the receiver has, but never reorder or invent them.
    """
    position = 0
    for node, _digest in proof:
        try:
            position = canonical.index(node, position) + 1
        except ValueError:
            raise BadProof(f"proof node {node} is out of place") from None
