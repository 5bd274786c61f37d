"""hyperfs: hypercore 1.x feeds, replicated peer to peer, as a FUSE filesystem."""

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
