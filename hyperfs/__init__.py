"""hyperfs: hypercore 1.x feeds, replicated peer to peer, as a FUSE filesystem."""

from .core import Core, FeedInfo, WriteStream, open_core, parse_id
from .errors import (
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
from .feed import Feed

__all__ = [
    "BadProof", "BlockUnavailable", "Core", "CorruptDatabase", "EmptyFeed", "Feed",
    "FeedFinalized", "FeedInfo", "HyperfsError", "InvalidId", "InvalidIndex", "NameTaken",
    "StorageLocked", "WriteStream", "open_core", "parse_id",
]
