"""The LevelDB key layout of a hyperfs database, as data and pure functions.

LevelDB holds what is small (tree nodes, bitfields, where each block's bytes are, names);
block data lives in one file per feed under ``<db>/data/`` (see :mod:`.blocks` for why).
Keys are short prefixes followed by big-endian numbers, so each feed's blocks, nodes and
bitfield pages sort together and can be scanned or deleted as ranges. Feeds are stored
under a local number, not their id, because a writable feed has no id until it is
finalized and a feed must not be rewritten to learn its name.

=====================  ==========================  =====================================
key                    value                       meaning
=====================  ==========================  =====================================
``!format``            ``hyperfs 2``               marks a hyperfs database (``hyperfs 1``:
                                                   blocks still in ``d`` keys, migrated
                                                   on open by :mod:`.migrate`)
``!next``              u64                         next local feed number
``i`` id               u64 num                     feed id -> local number
``m`` num              id + u64 blocks             a feed with an id (blocks may be unknown)
``p`` num              (empty)                     a writable feed not yet finalized
``l`` num u64          u64 offset, u32 length,     where block u64's bytes are in the
                       u32 crc32c                  feed's data file, and their checksum
``s`` num              u64 base, u32 size          the feed's slots: block i of a put goes
                                                   at base + i * size (see .blocks)
``d`` num u64          bytes                       (format 1: block data; moved to the
                                                   data files by :mod:`.migrate`)
``h`` num u64          32 bytes                    verified tree node hash, by flat index
``b`` num u32          PAGE_BYTES bytes            bitfield page of blocks held
``e`` path             an Entry (see .entry)       a name: a file (bound to a feed or
                                                   empty) or a directory; path parts
                                                   joined by ``/``
``n`` name             id                          (before names had records: moved to
                                                   ``e`` keys when a database opens)
``o`` num              (empty)                     a feed made here (never evicted)
``k`` num              (empty)                     a pinned feed (kept whole, never evicted)
``r`` num              u64 unix seconds            when the feed was last read (coarse:
                                                   eviction order after a restart)
``!cache``             ``1``                       the ``o`` marks are there (written by
                                                   :mod:`.cache` at the first open)
``v`` num              u64 length, signature       a live feed: its latest signed length
                                                   (see .signed)
``f`` num              u64 length, signature,      fork evidence: another tree its key
                       root hashes                 signed (see .signed)
=====================  ==========================  =====================================

Only :mod:`hyperfs.store` writes these keys; this module is public so that fsck, tests
and benchmarks can name a key without repeating the layout.
"""

from __future__ import annotations

import struct

FORMAT_KEY = b"!format"
FORMAT = b"hyperfs 2"
LEGACY_FORMAT = b"hyperfs 1"
"""Block data inside LevelDB under ``d`` keys (before the data files)."""
NEXT_KEY = b"!next"
UNKNOWN = 2**64 - 1
"""Stored block count of a feed whose length has not been learned yet."""

ID, META, PENDING, HASH, PAGE, ENTRY = b"i", b"m", b"p", b"h", b"b", b"e"
LOCATION, SLOTS = b"l", b"s"
DATA, LEGACY_NAME = b"d", b"n"
OWN, PINNED, READ = b"o", b"k", b"r"
CACHE_KEY = b"!cache"
LIVE, FORK = b"v", b"f"
PER_FEED = (LOCATION, HASH, PAGE, SLOTS, DATA, LIVE, FORK, OWN, PINNED, READ)
"""The kinds of key a feed's contents are stored under (deleted as ranges with it; ``d``
too, so that a feed deleted half way through a migration leaves nothing behind)."""

U64 = struct.Struct(">Q")
LOCATION_VALUE = struct.Struct(">QII")
"""A ``l`` value: offset in the data file, length, crc32c of the bytes."""
SLOTS_VALUE = struct.Struct(">QI")
"""A ``s`` value: where slot 0 begins in the data file, and the size of a slot."""
U32 = struct.Struct(">I")
KEY = struct.Struct(">9sQ")
"""A per-feed key: the 9-byte prefix (kind letter + feed number), then a u64."""


def prefix(kind: bytes, num: int) -> bytes:
    """The prefix of every key of ``kind`` that belongs to feed ``num``."""
    return kind + U64.pack(num)


def block_key(num: int, index: int) -> bytes:
    """Format 1's key of block data (read only by the migration, and its tests)."""
    return KEY.pack(prefix(DATA, num), index)


def location_key(num: int, index: int) -> bytes:
    return KEY.pack(prefix(LOCATION, num), index)


def data_name(num: int) -> str:
    """The file name, under ``<db>/data/``, of feed ``num``'s block data."""
    return f"{num:016x}"


def node_key(num: int, node: int) -> bytes:
    return KEY.pack(prefix(HASH, num), node)


def page_key(num: int, page: int) -> bytes:
    return prefix(PAGE, num) + U32.pack(page)


def id_key(feed_id: bytes) -> bytes:
    return ID + feed_id


def entry_key(path: bytes) -> bytes:
    return ENTRY + path


def feed_number(key: bytes) -> int:
    """The feed number of a ``m``, ``p``, ``l``, ``s``, ``h``, ``b`` or ``d`` key."""
    return U64.unpack_from(key, 1)[0]


def key_index(key: bytes) -> int:
    """The block index, node index or page number that ends a per-feed key."""
    if key[:1] == PAGE:
        return U32.unpack_from(key, 9)[0]
    return U64.unpack_from(key, 9)[0]


def meta_value(feed_id: bytes, blocks: int | None) -> bytes:
    return feed_id + U64.pack(UNKNOWN if blocks is None else blocks)


def parse_meta(value: bytes) -> tuple[bytes, int | None]:
    """(feed id, blocks or None) from a ``m`` value."""
    blocks = U64.unpack_from(value, 32)[0]
    return value[:32], None if blocks == UNKNOWN else blocks
