"""What a `Connection` reports about the remote peer, one value per thing that happened.

Feeds are named by their 32-byte id: the connection has already translated the remote's
channel numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from hyperfs.wire.protobuf import Buffer

__all__ = [
    "CancelReceived",
    "Event",
    "ExtensionReceived",
    "HandshakeReceived",
    "HaveReceived",
    "Joined",
    "Left",
    "Paused",
    "RequestReceived",
    "ResponseReceived",
    "Unpaused",
]


@dataclass(frozen=True, slots=True)
class HandshakeReceived:
    """The remote introduced itself (always the first event)."""

    peer_id: bytes
    protocol: str
    version: int | None
    extensions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Joined:
    """The remote opened a channel for a feed. The reference always joins back."""

    feed_id: bytes


@dataclass(frozen=True, slots=True)
class Left:
    """The remote closed the feed's channel; it is now closed on our side too."""

    feed_id: bytes


@dataclass(frozen=True, slots=True)
class HaveReceived:
    """The remote has `blocks` and/or the blocks set in `bitfield` (MSB first)."""

    feed_id: bytes
    blocks: tuple[int, ...]
    bitfield: bytes | None


@dataclass(frozen=True, slots=True)
class Paused:
    """The remote won't answer requests for this feed (channels start paused)."""

    feed_id: bytes


@dataclass(frozen=True, slots=True)
class Unpaused:
    """The remote answers requests for this feed."""

    feed_id: bytes


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """The remote wants a block."""

    feed_id: bytes
    block: int


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A block with its proof; unverified: check it before storing anything. ``data`` is
    a read-only view of the bytes received (no copy): copy it to keep it."""

    feed_id: bytes
    block: int
    data: Buffer
    proof: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """The remote no longer wants a block it requested."""

    feed_id: bytes
    block: int


@dataclass(frozen=True, slots=True)
class ExtensionReceived:
    """An extension message, for an extension both sides listed."""

    name: str
    payload: bytes


Event = (
    HandshakeReceived
    | Joined
    | Left
    | HaveReceived
    | Paused
    | Unpaused
    | RequestReceived
    | ResponseReceived
    | CancelReceived
    | ExtensionReceived
)
