"""Opening a channel without naming the feed: discovery key plus capability.

In plain hypercore 1.x a Join carries the feed id, and the id is all anyone needs to
fetch the feed: whoever reads the wire can take it. Inside an encrypted connection a
Join carries instead

    discovery key = BLAKE2b-256(key = feed id, message = "hyperfs channel")
    capability    = BLAKE2b-256(key = Noise handshake hash,
                                message = "hyperfs capability " + role || feed id)

where ``role`` is the sender's ("initiator" or "responder"). The discovery key lets the
receiver find the feed among the ones it knows; the capability proves the sender knows
the id itself, for this connection only (the handshake hash is unique to it, so a
capability seen once is worth nothing elsewhere, nor reflected back: each direction has
its own). A receiver that does not know the discovery key, or whose check of the
capability fails, learns nothing and answers nothing; the check is constant-time
(``sodium_memcmp``). This follows hypercore 10's ``caps.js`` (capability keyed by the
handshake hash, one namespace per side).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from nacl.bindings import sodium_memcmp

__all__ = ["CAPABILITY_SIZE", "Capabilities", "capability", "discovery_key"]

CAPABILITY_SIZE = 32
_CHANNEL = b"hyperfs channel"
_ROLES = {True: b"hyperfs capability initiator", False: b"hyperfs capability responder"}


def discovery_key(feed_id: bytes) -> bytes:
    """What a Join names inside an encrypted connection instead of the feed id."""
    return hashlib.blake2b(_CHANNEL, key=feed_id, digest_size=32).digest()


def capability(handshake_hash: bytes, initiator: bool, feed_id: bytes) -> bytes:
    """The proof that the sender (the ``initiator`` side or not) knows ``feed_id``."""
    return hashlib.blake2b(_ROLES[initiator] + feed_id, key=handshake_hash,
                           digest_size=CAPABILITY_SIZE).digest()


class Capabilities:
    """One encrypted connection's capabilities, for ``Connection.use_capabilities``.

    ``resolve(discovery_key)`` is the feed id among those we would serve or want, or
    None; it is asked once per remote Join, so it must be cheap (a dict).
    """

    def __init__(self, handshake_hash: bytes, initiator: bool,
                 resolve: Callable[[bytes], bytes | None]) -> None:
        self._hash = bytes(handshake_hash)
        self._initiator = initiator
        self.resolve = resolve

    def ours(self, feed_id: bytes) -> bytes:
        """The capability we send in our Join of ``feed_id``."""
        return capability(self._hash, self._initiator, feed_id)

    def check(self, feed_id: bytes, proof: bytes | None) -> bool:
        """Whether ``proof`` is the remote's capability for ``feed_id`` (constant time)."""
        if proof is None or len(proof) != CAPABILITY_SIZE:
            return False
        return sodium_memcmp(proof, capability(self._hash, not self._initiator, feed_id))
