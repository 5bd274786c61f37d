"""flat_tree against a brute-force reference: an explicit in-order-numbered binary tree.

The flat-tree layout is the in-order numbering of a perfect binary tree whose leaves are
the blocks, so building such a tree node by node gives every relation to compare with,
independently of the bit tricks in hyperfs.flat_tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hyperfs.tree import flat_tree

HEIGHT = 12  # 4096 leaves, 8191 nodes


@dataclass
class RefNode:
    index: int
    depth: int
    offset: int
    parent: int | None = None
    left: int | None = None
    right: int | None = None
    lo: int = 0  # leftmost leaf index below
    hi: int = 0  # rightmost leaf index below


def _reference(height: int) -> dict[int, RefNode]:
    """Build the perfect tree of 2**height leaves, numbering nodes in order."""
    nodes: dict[int, RefNode] = {}
    counter = iter(range(2 ** (height + 1)))
    offsets = [0] * (height + 1)

    def build(d: int) -> int:
        if d == 0:
            index = next(counter)
            node = nodes[index] = RefNode(index, 0, offsets[0], lo=index, hi=index)
            offsets[0] += 1
            return index
        left = build(d - 1)
        index = next(counter)
        node = nodes[index] = RefNode(index, d, offsets[d], left=left)
        offsets[d] += 1
        node.right = build(d - 1)
        nodes[left].parent = nodes[node.right].parent = index
        node.lo, node.hi = nodes[left].lo, nodes[node.right].hi
        return index

    build(height)
    return nodes


REF = _reference(HEIGHT)


def test_relations_match_reference() -> None:
    for i, ref in REF.items():
        assert flat_tree.depth(i) == ref.depth
        assert flat_tree.offset(i) == ref.offset
        assert flat_tree.index(ref.depth, ref.offset) == i
        assert flat_tree.left_span(i) == ref.lo
        assert flat_tree.right_span(i) == ref.hi
        if ref.left is None:
            assert flat_tree.children(i) is None
        else:
            assert flat_tree.children(i) == (ref.left, ref.right)
        if ref.parent is not None:
            assert flat_tree.parent(i) == ref.parent
            siblings = REF[ref.parent].left, REF[ref.parent].right
            assert flat_tree.sibling(i) == (siblings[1] if siblings[0] == i else siblings[0])


def _reference_roots(blocks: int) -> list[int]:
    """Merge sibling pairs that are both present until nothing merges: the full roots."""
    present = {2 * b for b in range(blocks)}
    changed = True
    while changed:
        changed = False
        for i in sorted(present):
            parent = REF[i].parent
            if parent is None or i not in present:
                continue
            other = REF[parent].right if REF[parent].left == i else REF[parent].left
            if other in present:
                present -= {i, other}
                present.add(parent)
                changed = True
    return sorted(present)


@pytest.mark.parametrize("blocks", [*range(0, 70), 127, 128, 129, 1000, 2047, 2048, 3000, 4095])
def test_full_roots_match_reference(blocks: int) -> None:
    roots = flat_tree.full_roots(blocks)
    assert roots == _reference_roots(blocks)
    if roots:
        assert flat_tree.blocks_below(roots[-1]) == blocks


def test_full_roots_every_count_is_perfect_cover() -> None:
    """For every length up to a few thousand: the roots are perfect trees covering exactly
    the blocks, left to right, largest first (cheap check, all counts)."""
    for blocks in range(1, 4097):
        expected_lo = 0
        last_size = None
        for root in flat_tree.full_roots(blocks):
            ref = REF[root]
            assert ref.lo == 2 * expected_lo
            size = (ref.hi - ref.lo) // 2 + 1
            assert last_size is None or size < last_size
            last_size = size
            expected_lo += size
        assert expected_lo == blocks


def test_spec_examples() -> None:
    assert flat_tree.full_roots(2) == [1]
    assert flat_tree.full_roots(3) == [1, 4]
    assert flat_tree.parent(0) == 1 and flat_tree.parent(2) == 1 and flat_tree.parent(1) == 3
    with pytest.raises(ValueError):
        flat_tree.full_roots(-1)
