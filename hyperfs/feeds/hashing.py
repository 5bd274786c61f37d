"""Appended blocks: what an append accepts (:func:`as_block`), and their leaf hashes,
computed beside the writing of their bytes (:func:`hash_beside`).

SHA-256 of every block is most of what an append costs; hashlib runs it without the GIL,
so two worker threads hash a large append while the caller writes the same blocks to
their data file (see :meth:`hyperfs.feeds.feed.Feed.append`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

from hyperfs.tree.hashes import leaf_hash


def as_block(item: object) -> bytes | memoryview:
    """A block to append: bytes as they are, a bytearray as a view (it is written
    before append returns, so it needs no copy); TypeError for anything else."""
    if isinstance(item, bytes | memoryview):
        return item
    if isinstance(item, bytearray):
        return memoryview(item)
    raise TypeError(f"blocks must be bytes, not {type(item).__name__}")


_HASHERS = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="hyperfs-hash")
HASH_BESIDE_BYTES = 1 << 20
"""Appends at least this large are hashed by two worker threads while their bytes are
written (hashlib's SHA-256 runs without the GIL): a big append then costs about the
larger of writing and half the hashing, not their sum."""


def hash_beside(blocks: list[bytes | memoryview]) -> Callable[[], list[bytes]]:
    """The leaf hashes of ``blocks``: a function that waits for them. Large blocks are
    hashed in two halves by the worker threads; small ones at once."""
    if sum(len(block) for block in blocks) < HASH_BESIDE_BYTES:
        leaves = [leaf_hash(block) for block in blocks]
        return lambda: leaves
    half = len(blocks) // 2
    parts = [_HASHERS.submit(_leaf_hashes, part) for part in (blocks[:half], blocks[half:])]
    return lambda: parts[0].result() + parts[1].result()


def _leaf_hashes(blocks: list[bytes | memoryview]) -> list[bytes]:
    return [leaf_hash(block) for block in blocks]
