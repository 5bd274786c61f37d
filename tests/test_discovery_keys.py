"""Discovery keys: fixed vectors (they are an on-network format) and their properties."""

from __future__ import annotations

import hashlib

import nacl.encoding
import nacl.hash
import pytest

from hyperfs.net.discovery.keys import DISCOVERY_MESSAGE, discovery_key, seed_info_hash

# The feed id of blocks "hello", "world" (PROTOCOL.md test vector).
HELLO_WORLD = bytes.fromhex("e1a31bb8716f0a0487377e22dbc7f0491fb47a712ac21519792a4e32cf56fb6f")

VECTORS = [
    (bytes(32), "42176e8782808462895ccf9f22bea0be30d6dc2b"),
    (bytes(range(32)), "402b13350d3c20e7eae6032d73492d335c575626"),
    (HELLO_WORLD, "5079baac6584fddd52afdb9c363fe736110e835a"),
]


@pytest.mark.parametrize(("feed_id", "expected"), VECTORS)
def test_vectors(feed_id: bytes, expected: str) -> None:
    assert discovery_key(feed_id).hex() == expected
    assert discovery_key(feed_id.hex()).hex() == expected  # hex ids are accepted too


@pytest.mark.parametrize(("feed_id", "_expected"), VECTORS)
def test_matches_libsodium(feed_id: bytes, _expected: str) -> None:
    """An independent BLAKE2b (libsodium via pynacl) agrees on the construction."""
    sodium = nacl.hash.blake2b(
        DISCOVERY_MESSAGE, digest_size=20, key=feed_id, encoder=nacl.encoding.RawEncoder
    )
    assert discovery_key(feed_id) == sodium


def test_shape_and_privacy() -> None:
    key = discovery_key(HELLO_WORLD)
    assert len(key) == 20
    assert key != HELLO_WORLD[:20]
    assert HELLO_WORLD[:4] not in key
    # BLAKE2b-160 is its own function, not a prefix of the 64-byte digest.
    full = hashlib.blake2b(DISCOVERY_MESSAGE, key=HELLO_WORLD).digest()
    assert key != full[:20]
    # Different ids give different keys.
    assert len({discovery_key(bytes([i]) * 32) for i in range(64)}) == 64


def test_seed_info_hash() -> None:
    assert seed_info_hash(HELLO_WORLD) == HELLO_WORLD[:20]
    assert seed_info_hash(HELLO_WORLD.hex()) == HELLO_WORLD[:20]


@pytest.mark.parametrize("bad", [b"", bytes(20), bytes(33), "zz" * 32, "ab" * 31])
def test_rejects_bad_ids(bad: bytes | str) -> None:
    with pytest.raises(ValueError):
        discovery_key(bad)
    with pytest.raises(ValueError):
        seed_info_hash(bad)
