"""hyperfs: hypercore 1.x feeds, replicated peer to peer, as a FUSE filesystem.

The names below are loaded when first used (PEP 562): importing a module of one layer
(``hyperfs.base.checksum`` in a hash worker) does not load the feeds and trio with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hyperfs.base.errors import (
        BadProof,
        BlockUnavailable,
        CorruptDatabase,
        EmptyFeed,
        FeedFinalized,
        HyperfsError,
        InvalidId,
        InvalidIndex,
        NameTaken,
        StorageLocked,
    )
    from hyperfs.feeds.core import Core, FeedInfo, Held, open_core, parse_id
    from hyperfs.feeds.feed import Feed
    from hyperfs.feeds.streams import WriteStream

_HOMES = {
    **dict.fromkeys(["BadProof", "BlockUnavailable", "CorruptDatabase", "EmptyFeed",
                     "FeedFinalized", "HyperfsError", "InvalidId", "InvalidIndex",
                     "NameTaken", "StorageLocked"], "hyperfs.base.errors"),
    **dict.fromkeys(["Core", "FeedInfo", "Held", "open_core", "parse_id"],
                    "hyperfs.feeds.core"),
    "Feed": "hyperfs.feeds.feed",
    "WriteStream": "hyperfs.feeds.streams",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'hyperfs' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)

__all__ = [
    "BadProof",
    "BlockUnavailable",
    "Core",
    "CorruptDatabase",
    "EmptyFeed",
    "Feed",
    "FeedFinalized",
    "FeedInfo",
    "Held",
    "HyperfsError",
    "InvalidId",
    "InvalidIndex",
    "NameTaken",
    "StorageLocked",
    "WriteStream",
    "open_core",
    "parse_id",
]
