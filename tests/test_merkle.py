"""TreeBuilder, proofs and verify as pure functions, against a from-scratch reference."""

from __future__ import annotations

from hashlib import sha256

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperfs.base.errors import BadProof
from hyperfs.tree import flat_tree, merkle
from hyperfs.tree.hashes import leaf_hash, parent_hash, tree_id

HELLO_WORLD = "e1a31bb8716f0a0487377e22dbc7f0491fb47a712ac21519792a4e32cf56fb6f"


def reference_nodes(blocks: list[bytes]) -> dict[int, bytes]:
    """Every node of the tree, hashed straight from PROTOCOL.md's formulas."""
    nodes = {2 * i: sha256(b"\0" + b).digest() for i, b in enumerate(blocks)}
    depth = 1
    while True:
        made = False
        for index in range((1 << depth) - 1, 2 * len(blocks), 1 << (depth + 1)):
            left, right = index - (1 << (depth - 1)), index + (1 << (depth - 1))
            if left in nodes and right in nodes:
                nodes[index] = sha256(b"\1" + nodes[left] + nodes[right]).digest()
                made = True
        if not made:
            return nodes
        depth += 1


def reference_id(blocks: list[bytes]) -> bytes:
    nodes = reference_nodes(blocks)
    h = sha256(b"\2")
    for root in flat_tree.full_roots(len(blocks)):
        h.update(nodes[root] + root.to_bytes(8, "big"))
    return h.digest()


def build(blocks: list[bytes], chunk: int = 1) -> tuple[merkle.TreeBuilder, dict[int, bytes]]:
    builder, nodes = merkle.TreeBuilder(), {}
    for i in range(0, len(blocks), chunk):
        for node, digest in builder.extend(blocks[i : i + chunk]):
            assert node not in nodes
            nodes[node] = digest
    return builder, nodes


def test_seed_vector() -> None:
    builder, _ = build([b"hello", b"world"])
    assert tree_id(builder.roots).hex() == HELLO_WORLD
    assert reference_id([b"hello", b"world"]).hex() == HELLO_WORLD


def test_hash_type_bytes() -> None:
    assert leaf_hash(b"x") == sha256(b"\0x").digest()
    assert leaf_hash(memoryview(b"y" * 10000)) == sha256(b"\0" + b"y" * 10000).digest()
    assert parent_hash(b"a" * 32, b"b" * 32) == sha256(b"\1" + b"a" * 32 + b"b" * 32).digest()


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=200), st.integers(1, 17))
def test_builder_matches_reference(blocks: list[bytes], chunk: int) -> None:
    builder, nodes = build(blocks, chunk)
    assert nodes == reference_nodes(blocks)  # every node created once, with the right hash
    assert [n for n, _ in builder.roots] == flat_tree.full_roots(len(blocks))
    assert tree_id(builder.roots) == reference_id(blocks)
    single, _ = build(blocks, 1)
    assert single.roots == builder.roots and single.blocks == builder.blocks == len(blocks)


def test_push_returns_leaf_then_parents() -> None:
    builder = merkle.TreeBuilder()
    assert [n for n, _ in builder.push(b"a")] == [0]
    assert [n for n, _ in builder.push(b"b")] == [2, 1]
    assert [n for n, _ in builder.push(b"c")] == [4]
    assert [n for n, _ in builder.push(b"d")] == [6, 5, 3]


def test_proof_indexes_follow_spec() -> None:
    assert merkle.proof_indexes(0, 2) == [2, 1]
    assert merkle.proof_indexes(0, 3) == [2, 1, 4]
    assert merkle.proof_indexes(2, 3) == [1, 4]
    assert merkle.proof_indexes(5, 8) == [8, 13, 3, 7]


def _proof(nodes: dict[int, bytes], block: int, blocks: int) -> list[merkle.Node]:
    return [(i, nodes[i]) for i in merkle.proof_indexes(block, blocks)]


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70), st.data())
def test_verify_accepts_genuine_and_rejects_tampering(blocks: list[bytes], data) -> None:
    nodes = reference_nodes(blocks)
    feed_id, n = reference_id(blocks), len(blocks)
    block = data.draw(st.integers(0, n - 1))
    proof = _proof(nodes, block, n)
    verified = merkle.verify(feed_id, block, blocks[block], proof, blocks=None)
    assert verified.blocks == n
    assert all(nodes[i] == d for i, d in verified.nodes)
    assert verified.roots is not None  # the length was learned from this proof
    assert [i for i, _ in verified.roots] == flat_tree.full_roots(n)
    with pytest.raises(BadProof):
        merkle.verify(feed_id, block, blocks[block] + b"x", proof, blocks=None)
    pos = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 255))
    flipped = list(proof)
    digest = bytearray(flipped[pos][1])
    digest[bit // 8] ^= 0x80 >> (bit % 8)
    flipped[pos] = (flipped[pos][0], bytes(digest))
    with pytest.raises(BadProof):
        merkle.verify(feed_id, block, blocks[block], flipped, blocks=None)
    with pytest.raises(BadProof):
        merkle.verify(feed_id, block, blocks[block], proof[:pos] + proof[pos + 1 :], blocks=None)
    with pytest.raises(BadProof):
        merkle.verify(feed_id, n, b"", proof, blocks=None)


def test_verify_rejects_bad_shapes() -> None:
    blocks = [b"a", b"b", b"c"]
    nodes = reference_nodes(blocks)
    feed_id = reference_id(blocks)
    proof = _proof(nodes, 0, 3)
    for bad in ([], [(2, b"short")], [(-1, nodes[2])], proof[::-1], [proof[1], proof[0], proof[2]]):
        with pytest.raises(BadProof):
            merkle.verify(feed_id, 0, b"a", bad, blocks=None)
    with pytest.raises(BadProof):
        merkle.verify(feed_id, -1, b"a", proof, blocks=None)
