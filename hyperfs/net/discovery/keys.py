"""What we announce instead of feed ids.

A feed id is a capability: whoever knows it can fetch and verify the feed. The DHT and the
local network are public, so announcing the id itself (as the original implementation did
with its first 20 bytes) tells every observer which feeds exist and lets them download
them. We announce a *discovery key* instead: a one-way function of the id. Peers that know
the id compute the same key and find each other; an observer of the DHT or of mDNS learns
only opaque 20-byte values (it can still test a feed id it already knows, which is
inherent to any rendezvous scheme).

Construction (follows later hypercore versions, which key BLAKE2b with the feed's key)::

    discovery_key(id) = BLAKE2b(message=b"hyperfs-discovery", key=id, digest_size=20)

i.e. BLAKE2b-160 used as a PRF keyed by the 32-byte feed id over a fixed, versioned
message. The 20-byte size is BLAKE2b's own output-length parameter (bound into its
parameter block), the length of a BitTorrent info-hash; it is *not* a prefix of the 64-byte
digest. Changing the message string changes every key, so it must stay fixed.
"""

from __future__ import annotations

import hashlib

from hyperfs.tree.hashes import parse_id

__all__ = ["DISCOVERY_MESSAGE", "KEY_SIZE", "discovery_key", "seed_info_hash"]

#: Fixed message hashed under the feed id; part of the on-network format.
DISCOVERY_MESSAGE = b"hyperfs-discovery"
#: Size of an announced key: a BitTorrent info-hash (SHA-1 sized, 160 bits).
KEY_SIZE = 20


def discovery_key(feed_id: bytes | bytearray | memoryview | str) -> bytes:
    """The 20-byte key announced on the DHT and over mDNS for ``feed_id``.

    Keyed BLAKE2b so that the announced value reveals nothing about the id (see module doc).
    An id that :func:`~hyperfs.tree.hashes.parse_id` refuses is an ``InvalidId``, never a
    wrong key announced.
    """
    raw = parse_id(feed_id)
    return hashlib.blake2b(DISCOVERY_MESSAGE, key=raw, digest_size=KEY_SIZE).digest()


def seed_info_hash(feed_id: bytes | bytearray | memoryview | str) -> bytes:
    """The info-hash the original (JavaScript) implementation announces: ``feed_id[:20]``.

    Only announced/looked up when compatibility with those peers is asked for, because it
    leaks most of the id.
    """
    return parse_id(feed_id)[:KEY_SIZE]
