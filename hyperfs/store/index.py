"""The LevelDB index as the data layer below the Store sees it: two small protocols.

:class:`.store.Store` is the index (it satisfies :class:`Index`); :class:`.blockstore.
BlockStore` writes through it. Naming the protocol here, below both, lets the block store
depend on what it uses instead of on the Store, so the two import in one direction only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol


class Batch(Protocol):
    """What :meth:`Store.batch` gives: a plyvel write batch, or inside :meth:`Store.group`
    an object with the same two methods."""

    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...


class Index(Protocol):
    """What the block store needs of the LevelDB index."""

    db: Any
    """The plyvel database, for range scans that must not go through a group."""
    durable: bool
    """Whether a finalize syncs its feed's file (else a later commit does)."""

    def get(self, key: bytes) -> bytes | None: ...
    def scan(self, kind: bytes, num: int) -> Iterator[tuple[int, bytes]]: ...
    def flush(self) -> None: ...
    def batch(self, *, sync: bool = False) -> AbstractContextManager[Batch]: ...
