"""The LevelDB key layout of a hyperfs database, as data and pure functions.

Keys are short prefixes followed by big-endian numbers, so each feed's blocks, nodes and
bitfield pages sort together and can be scanned or deleted as ranges. Feeds are stored
under a local number, not their id, because a writable feed has no id until it is
finalized and a feed must not be rewritten to learn its name.

=====================  ==========================  =====================================
key                    value                       meaning
=====================  ==========================  =====================================
``!format``            ``hyperfs 1``               marks a hyperfs database
``!next``              u64                         next local feed number
``i`` id               u64 num                     feed id -> local number
``m`` num              id + u64 blocks             a feed with an id (blocks may be unknown)
``p`` num              (empty)                     a writable feed not yet finalized
``d`` num u64          bytes                       block data
``h`` num u64          32 bytes                    verified tree node hash, by flat index
``b`` num u32          PAGE_BYTES bytes            bitfield page of blocks held
``e`` path             an Entry (see .entry)       a name: a file (bound to a feed or
                                                   empty) or a directory; path parts
                                                   joined by ``/``
``n`` name             id                          (before names had records: moved to
                                                   ``e`` keys when a database opens)
=====================  ==========================  =====================================

Only :mod:`hyperfs.store` writes these keys; this module is public so that fsck, tests
and benchmarks can name a key without repeating the layout.
"""

from __future__ import annotations

import struct

FORMAT_KEY = b"!format"
FORMAT = b"hyperfs 1"
NEXT_KEY = b"!next"
UNKNOWN = 2**64 - 1
"""Stored block count of a feed whose length has not been learned yet."""

ID, META, PENDING, DATA, HASH, PAGE, ENTRY = b"i", b"m", b"p", b"d", b"h", b"b", b"e"
LEGACY_NAME = b"n"
PER_FEED = (DATA, HASH, PAGE)
"""The kinds of key a feed's contents are stored under (deleted as ranges with it)."""

U64 = struct.Struct(">Q")
U32 = struct.Struct(">I")
KEY = struct.Struct(">9sQ")
"""A per-feed key: the 9-byte prefix (kind letter + feed number), then a u64."""


def prefix(kind: bytes, num: int) -> bytes:
    """The prefix of every key of ``kind`` that belongs to feed ``num``."""
    return kind + U64.pack(num)


def block_key(num: int, index: int) -> bytes:
    return KEY.pack(prefix(DATA, num), index)


def node_key(num: int, node: int) -> bytes:
    return KEY.pack(prefix(HASH, num), node)


def page_key(num: int, page: int) -> bytes:
    return prefix(PAGE, num) + U32.pack(page)


def id_key(feed_id: bytes) -> bytes:
    return ID + feed_id


def entry_key(path: bytes) -> bytes:
    return ENTRY + path


def feed_number(key: bytes) -> int:
    """The feed number of a ``m``, ``p``, ``d``, ``h`` or ``b`` key."""
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
