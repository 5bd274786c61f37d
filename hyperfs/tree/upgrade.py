"""Upgrade proofs: the nodes that tie a live feed's tree at one length to its tree at a
longer one.

A receiver trusts the full roots of the length it verified. When a longer length arrives,
signed, its new roots are genuine (the signature says so) but that alone does not say they
extend the tree already trusted: a copied secret key can sign a different history. So the
sender adds the nodes to climb from the old roots to the new root that covers them, and
the receiver recomputes that root. Only the old roots that are not new roots need it, and
they all sit under one new root: the climb starts at the smallest old root, takes left
siblings from the older old roots (always full roots, so never sent) and right siblings
from the proof, one per level.

Pure functions, like :mod:`.merkle`.
"""

from __future__ import annotations

from collections.abc import Sequence

from hyperfs.base.errors import BadProof
from hyperfs.tree import flat_tree
from hyperfs.tree.hashes import HASH_SIZE, Node, parent_hash


def upgrade_indexes(old: int, new: int) -> list[int]:
    """The nodes, in order, that a tree of ``old`` blocks needs to reach ``new`` blocks'."""
    if old <= 0 or new <= old:
        return []
    targets = set(flat_tree.full_roots(new))
    node, needed = flat_tree.full_roots(old)[-1], []
    while node not in targets:
        sibling = flat_tree.sibling(node)
        if sibling > node:
            needed.append(sibling)
        node = flat_tree.parent(node)
    return needed


def verify_upgrade(old_roots: Sequence[Node], new_roots: Sequence[Node],
                   nodes: Sequence[Node]) -> list[Node]:
    """Check that ``new_roots`` extend the tree whose full roots are ``old_roots``.

    ``nodes`` are the right siblings of :func:`upgrade_indexes`. Returns every node the
    climb computed or used (to store: they are now verified); raises BadProof when the
    trees do not match. Both root lists must be full roots (the caller checked).
    """
    new = dict(new_roots)
    for node, digest in old_roots:
        if node in new and new[node] != digest:
            raise BadProof(f"the new tree's root {node} differs from the one verified")
    if not old_roots:
        if nodes:
            raise BadProof("an upgrade proof from an empty tree has no nodes")
        return []
    node, digest = old_roots[-1]
    older = list(old_roots[:-1])
    learned: list[Node] = []
    given = iter(nodes)
    while node not in new:
        sibling = flat_tree.sibling(node)
        if sibling < node:  # the left sibling of a climb from the end is an older root
            if not older or older[-1][0] != sibling:
                raise BadProof("the old roots are not the full roots of a tree")
            digest = parent_hash(older.pop()[1], digest)
        else:
            index, sibling_digest = next(given, (None, b""))
            if index != sibling or len(sibling_digest) != HASH_SIZE:
                raise BadProof(f"the upgrade proof lacks node {sibling}")
            learned.append((sibling, sibling_digest))
            digest = parent_hash(digest, sibling_digest)
        node = flat_tree.parent(node)
        learned.append((node, digest))
    if next(given, None) is not None:
        raise BadProof("the upgrade proof has nodes left over")
    if new[node] != digest:
        raise BadProof("the new tree does not extend the one verified")
    return learned
