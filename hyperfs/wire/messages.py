"""Hypercore 1.x wire messages as values, and their byte encodings.

Each message is a frozen, slotted dataclass whose fields are in protobuf declaration order
(the order of the reference's schema.proto), so one `Schema` per class encodes it and builds
it back. A message on the wire (inside a frame) is `type byte || protobuf body`; the
Handshake, always the first message each way, has no type byte. Types 64..127 are
`Extension` messages whose payload is opaque; types 8..63 and 128..255 are reserved and
ignored (decoded as None), as the reference does.

Channel numbers here are raw wire values; mapping them to feeds is the connection's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from hyperfs.wire.protobuf import (
    BYTES,
    MESSAGE,
    STRING,
    VARINT,
    Buffer,
    Field,
    ProtocolError,
    Schema,
    decode_varint,
    encode_varint,
)

__all__ = [
    "EXTENSION_TYPES",
    "Cancel",
    "Extension",
    "Handshake",
    "Have",
    "Join",
    "Leave",
    "Message",
    "Pause",
    "ProtocolError",
    "Request",
    "Response",
    "Unpause",
    "decode",
    "decode_handshake",
    "encode",
    "encode_request",
    "encode_requests",
    "encode_response",
    "parse_request",
    "parse_response",
    "response_parts",
]

EXTENSION_TYPES = range(64, 128)

_CHANNEL = Field(1, VARINT, required=True)
_BLOCK = Field(2, VARINT, required=True)
_NODE = Schema(Field(1, VARINT, required=True), Field(2, BYTES, required=True))


@dataclass(frozen=True, slots=True)
class Handshake:
    """The first message each way: who we are and which extensions we speak."""

    protocol: str
    version: int | None
    id: bytes
    extensions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Join:
    """Open our channel number `channel` for the feed `id`.

    Inside an encrypted connection `id` is the feed's discovery key and `capability`
    proves the sender knows the feed id (``hyperfs.wire.capabilities``); the field is
    ours (hypercore 1.x has fields 1 and 2 only) and a JS peer never sees it.
    """

    channel: int
    id: bytes
    capability: bytes | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    """Close a channel (both directions)."""

    channel: int


@dataclass(frozen=True, slots=True)
class Have:
    """The sender has these blocks: listed, and/or as a bitfield (MSB first)."""

    channel: int
    blocks: tuple[int, ...] = ()
    bitfield: bytes | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    """The sender won't answer requests on this channel for now."""

    channel: int


@dataclass(frozen=True, slots=True)
class Unpause:
    """The sender answers requests on this channel again."""

    channel: int


@dataclass(frozen=True, slots=True)
class Request:
    """Ask for one block."""

    channel: int
    block: int


@dataclass(frozen=True, slots=True)
class Response:
    """One block with the Merkle proof nodes (index, hash) that verify it."""

    channel: int
    block: int
    data: Buffer
    """Decoded, a read-only view of the received frame (no copy of the block): copy it
    to keep it beyond handling the message."""
    proof: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Cancel:
    """Withdraw a request."""

    channel: int
    block: int


@dataclass(frozen=True, slots=True)
class Extension:
    """An extension message: type 64 + the sender's index of the extension name."""

    type: int
    payload: bytes

    def __post_init__(self) -> None:
        if self.type not in EXTENSION_TYPES:
            raise ValueError(f"extension type must be in 64..127, got {self.type}")


Message = Join | Leave | Have | Pause | Unpause | Request | Response | Cancel

# The schema of each message type, in type-byte order (Join is 0 ... Cancel is 7).
_SCHEMAS: dict[type[Any], Schema] = {
    Join: Schema(_CHANNEL, Field(2, BYTES, required=True), Field(3, BYTES), build=Join),
    Leave: Schema(_CHANNEL, build=Leave),
    Have: Schema(_CHANNEL, Field(2, VARINT, repeated=True), Field(3, BYTES), build=Have),
    Pause: Schema(_CHANNEL, build=Pause),
    Unpause: Schema(_CHANNEL, build=Unpause),
    Request: Schema(_CHANNEL, _BLOCK, build=Request),
    Response: Schema(
        _CHANNEL,
        _BLOCK,
        Field(3, BYTES, required=True),
        Field(4, MESSAGE, repeated=True, schema=_NODE),
        build=Response,
    ),
    Cancel: Schema(_CHANNEL, _BLOCK, build=Cancel),
}
_HANDSHAKE = Schema(
    Field(1, STRING, required=True),
    Field(2, VARINT),
    Field(3, BYTES, required=True),
    Field(4, STRING, repeated=True),
    build=Handshake,
)
_DECODERS = tuple(_SCHEMAS.values())
_ENCODERS = {
    cls: (bytes((type_,)), schema, tuple(f.name for f in fields(cls)))
    for type_, (cls, schema) in enumerate(_SCHEMAS.items())
}
_ENCODERS[Handshake] = (b"", _HANDSHAKE, tuple(f.name for f in fields(Handshake)))


def encode(msg: Message | Extension | Handshake) -> bytes:
    """The message's bytes as they go inside a frame (type byte first, except Handshake)."""
    if type(msg) is Extension:
        return bytes((msg.type,)) + msg.payload
    if type(msg) is Response:
        return encode_response(msg.channel, msg.block, msg.data, msg.proof)
    if type(msg) is Request:
        return encode_request(msg.channel, msg.block)
    prefix, schema, names = _ENCODERS[type(msg)]
    return schema.encode([getattr(msg, name) for name in names], prefix)


def decode_handshake(body: Buffer) -> Handshake:
    """Decode the first message of a stream; ProtocolError if malformed."""
    return _HANDSHAKE.decode(body)


def encode_request(channel: int, block: int) -> bytes:
    """A Request's bytes, written out by hand: one goes out for every block fetched."""
    return _request_head(channel) + encode_varint(block)


def encode_requests(channel: int, blocks: Iterable[int]) -> bytes:
    """Requests for ``blocks``, each framed (its length first), in one string: a fetcher
    asks for many at once."""
    head = _request_head(channel)
    return b"".join(bytes((len(head) + len(number),)) + head + number  # (< 128 bytes)
                    for number in map(encode_varint, blocks))


def _request_head(channel: int) -> bytes:
    return b"\x05\x08" + encode_varint(channel) + b"\x10"


def encode_response(
    channel: int, block: int, data: Buffer, proof: Sequence[tuple[int, bytes]],
    framed: bool = False,
) -> bytes:
    """A Response, written out by hand: the hot path of every upload.

    ``framed`` puts the frame's length prefix in front in the same pass, so the block's
    bytes are copied once, not once more by :func:`hyperfs.framing.frame`.
    """
    head, tail = _response_around(channel, block, len(data), proof)
    if framed:
        head = encode_varint(len(head) + len(data) + len(tail)) + head
    return b"".join((head, data, tail))


def response_parts(channel: int, block: int, data: Buffer,
                   proof: Sequence[tuple[int, bytes]]) -> tuple[bytes, Buffer, bytes]:
    """A framed Response as three buffers that follow each other on the wire: what goes
    before the block's bytes, ``data`` itself (not copied), and the proof after it. For
    a writer that sends many buffers in one call (``sendmsg``): the block then goes from
    its read straight to the socket, never copied into a message."""
    head, tail = _response_around(channel, block, len(data), proof)
    return encode_varint(len(head) + len(data) + len(tail)) + head, data, tail


def _response_around(channel: int, block: int, size: int,
                     proof: Sequence[tuple[int, bytes]]) -> tuple[bytes, bytes]:
    """A Response's bytes before its block of ``size`` bytes (from the type byte) and
    after it (the proof nodes)."""
    head = b"".join((b"\x06\x08", encode_varint(channel), b"\x10", encode_varint(block),
                     b"\x1a", encode_varint(size)))
    parts: list[bytes] = []
    for index, digest in proof:
        if len(digest) == 32:  # (a hash: the node's length and its own fit in a byte)
            number = encode_varint(index)
            parts += (bytes((0x22, 35 + len(number), 0x08)), number, b"\x12\x20", digest)
            continue
        node = b"\x08" + encode_varint(index) + b"\x12" + encode_varint(len(digest)) + digest
        parts += (b"\x22", encode_varint(len(node)), node)
    return head, b"".join(parts)


def _decode_response(body: Buffer) -> Response | None:
    """The common layout of a Response, parsed by hand (:func:`parse_response`)."""
    parsed = parse_response(body)
    return None if parsed is None else Response(*parsed)


def parse_response(body: Buffer) -> tuple[int, int, Buffer,
                                          tuple[tuple[int, bytes], ...]] | None:
    """The common layout of a Response (fields in order, 32-byte hashes), parsed by hand:
    its (channel, block, data, proof), ``data`` a view of ``body``.

    None for anything else, which the generic schema then parses (or rejects). Public
    for the connection, which makes a download's events straight from it.
    """
    try:
        head = _head(body)
        if head is None:
            return None
        channel, block, pos = head
        if body[pos] != 0x1A:
            return None
        size, pos = decode_varint(body, pos + 1)
        end = pos + size
        if end > len(body):
            return None
        data = body[pos:end]  # a view: hashed and written as it is, never copied here
        proof = []
        pos, total = end, len(body)
        while pos < total:
            if body[pos] != 0x22 or body[pos + 1] >= 0x80 or body[pos + 2] != 0x08:
                return None
            end = pos + 2 + body[pos + 1]
            index, pos = decode_varint(body, pos + 3)
            if body[pos] != 0x12 or body[pos + 1] != 32 or pos + 34 != end:
                return None
            proof.append((index, bytes(body[pos + 2 : end])))
            pos = end
    except (IndexError, ProtocolError):
        return None
    return channel, block, data, tuple(proof)


def parse_request(body: Buffer) -> tuple[int, int] | None:
    """A Request's (channel, block) in its usual layout, parsed by hand (every upload
    reads one per block); None for anything else, which the schema then parses."""
    try:
        head = _head(body)
    except (IndexError, ProtocolError):
        return None
    return None if head is None or head[2] != len(body) else (head[0], head[1])


def _head(body: Buffer) -> tuple[int, int, int] | None:
    """A Request's or Response's first fields, channel and block, in order: (channel,
    block, where the rest begins), or None. IndexError or ProtocolError when cut short."""
    if body[0] != 0x08:
        return None
    channel, pos = decode_varint(body, 1)
    if body[pos] != 0x10:
        return None
    block, pos = decode_varint(body, pos + 1)
    return channel, block, pos


def decode(type: int, body: Buffer) -> Message | Extension | None:
    """Decode a message body (the bytes after its type byte); None for ignored types.

    `body` may be a memoryview into the frame: only the fields are copied out.
    """
    if type == 6:
        response = _decode_response(body)
        if response is not None:
            return response
    if type < len(_DECODERS):
        return _DECODERS[type].decode(body)
    if type in EXTENSION_TYPES:
        return Extension(type, bytes(body))
    return None
