"""The three SHA-256 hashes of hypercore 1.x.

A type byte goes first in each (leaf 0, parent 1, root 2) so that no leaf can be passed
off as a parent or a tree id: a guard against second-preimage attacks.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import sha256

from hyperfs.base.errors import InvalidId

LEAF = b"\x00"
PARENT = b"\x01"
ROOT = b"\x02"
HASH_SIZE = 32

Node = tuple[int, bytes]
"""A tree node as stored and sent: its flat-tree index and its hash."""


LEAF_STATE = sha256(LEAF)
"""A hasher already fed the leaf type byte; ``.copy()`` it to hash a leaf."""


def leaf_hash(data: bytes | bytearray | memoryview) -> bytes:
    """Copying a hasher already fed the type byte saves concatenating it to the block."""
    h = LEAF_STATE.copy()
    h.update(data)
    return h.digest()


def parent_hash(left: bytes, right: bytes) -> bytes:
    return sha256(PARENT + left + right).digest()


def tree_id(roots: Iterable[tuple[int, bytes]]) -> bytes:
    """The feed id: the hash of every full root with its node index, left to right."""
    h = sha256(ROOT)
    for node, digest in roots:
        h.update(digest)
        h.update(node.to_bytes(8, "big"))
    return h.digest()


def parse_id(value: bytes | bytearray | memoryview | str) -> bytes:
    """A feed id (a :func:`tree_id`) from 32 raw bytes or 64 hex characters.

    Ids arrive both ways (the command line speaks hex), and every layer that takes one
    (the library, the CLI, discovery) checks it by this one rule, so a bad id is always an
    :class:`InvalidId` (a ValueError) with the same message.
    """
    if isinstance(value, str):
        try:
            raw = bytes.fromhex(value) if len(value) == 2 * HASH_SIZE else b""
        except ValueError:
            raw = b""
    elif isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
    else:
        raw = b""
    if len(raw) != HASH_SIZE:
        raise InvalidId(f"a feed id is 32 bytes or 64 hex characters, not {value!r}")
    return raw
