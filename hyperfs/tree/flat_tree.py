"""Flat-tree numbering: a binary tree laid out in a flat list, as hypercore uses it.

Leaves (blocks) sit at even indexes (block ``b`` is node ``2b``); parents are odd, one
level up per trailing 1-bit. Every function is pure integer arithmetic so the Merkle
logic above it can stay free of any tree object.
"""

from __future__ import annotations


def depth(index: int) -> int:
    """Number of trailing 1-bits: 0 for leaves, 1 for their parents, and so on."""
    low = (index + 1) & -(index + 1)
    return low.bit_length() - 1


def offset(index: int) -> int:
    """Position of the node among the nodes of its depth, counted from the left."""
    return index >> (depth(index) + 1)


def index(depth_: int, offset_: int) -> int:
    """The flat index of the node at ``depth_`` and ``offset_``."""
    return ((2 * offset_ + 1) << depth_) - 1


def parent(index_: int) -> int:
    d = depth(index_)
    return index(d + 1, (index_ >> (d + 1)) >> 1)


def sibling(index_: int) -> int:
    d = depth(index_)
    return index(d, (index_ >> (d + 1)) ^ 1)


def children(index_: int) -> tuple[int, int] | None:
    """The (left, right) children of a parent node, or None for a leaf."""
    d = depth(index_)
    if d == 0:
        return None
    o = (index_ >> (d + 1)) * 2
    return index(d - 1, o), index(d - 1, o + 1)


def left_span(index_: int) -> int:
    """The leftmost leaf index under the node (the node itself for a leaf)."""
    d = depth(index_)
    if d == 0:
        return index_
    return (index_ >> (d + 1)) << (d + 1)


def right_span(index_: int) -> int:
    """The rightmost leaf index under the node (the node itself for a leaf)."""
    d = depth(index_)
    if d == 0:
        return index_
    return (((index_ >> (d + 1)) + 1) << (d + 1)) - 2


def full_roots(blocks: int) -> list[int]:
    """Roots of the perfect subtrees covering blocks ``0 .. blocks-1``, left to right.

    This is ``full_roots(2 * blocks)`` of the reference's flat-tree module, taking the
    block count directly because that is what every caller holds.
    """
    if blocks < 0:
        raise ValueError("block count must not be negative")
    roots: list[int] = []
    start = 0
    while blocks:
        size = 1 << (blocks.bit_length() - 1)
        roots.append(start + size - 1)
        start += 2 * size
        blocks -= size
    return roots


def blocks_below(index_: int) -> int:
    """How many blocks a feed has if ``index_`` is its last full root."""
    return (right_span(index_) + 2) // 2
