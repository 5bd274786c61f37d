"""Wire bytes assembled by hand from PROTOCOL.md's message table, independently of
:mod:`hyperfs.wire`.

Every other hostile peer is built on hyperfs's own Connection, so an encoder bug would be
shared by attacker and victim and go unseen. This module imports nothing from hyperfs:
frames are ``varint(length) || payload``; the handshake is a bare protobuf message and
every later one is ``type byte || protobuf body``. :func:`fields` reads a body back the
same independent way, to check what a victim answered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

JOIN, LEAVE, HAVE, PAUSE, UNPAUSE, REQUEST, RESPONSE, CANCEL = range(8)


def varint(n: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, least significant first, high bit = more."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def uint(number: int, value: int) -> bytes:
    """A varint field (wire type 0)."""
    return varint(number << 3) + varint(value)


def blob(number: int, value: bytes) -> bytes:
    """A length-delimited field (wire type 2): bytes, strings, embedded messages."""
    return varint(number << 3 | 2) + varint(len(value)) + value


def frame(payload: bytes) -> bytes:
    return varint(len(payload)) + payload


def handshake(peer_id: bytes, extensions: Iterable[str] = (), version: int | None = None,
              protocol: str = "hypercore") -> bytes:
    """The first frame each way: a bare Handshake (no type byte), extensions sorted."""
    body = blob(1, protocol.encode()) + (b"" if version is None else uint(2, version))
    body += blob(3, peer_id) + b"".join(blob(4, e.encode()) for e in sorted(extensions))
    return frame(body)


def message(kind: int, body: bytes) -> bytes:
    """A framed message after the handshake: its type byte, then its protobuf body."""
    return frame(bytes([kind]) + body)


def join(channel: int, feed_id: bytes) -> bytes:
    return message(JOIN, uint(1, channel) + blob(2, feed_id))


def request(channel: int, block: int) -> bytes:
    return message(REQUEST, uint(1, channel) + uint(2, block))


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at ``data[at:]`` and where it ends; IndexError if it is cut short."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def fields(body: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf body: an int for varints, bytes otherwise."""
    at = 0
    while at < len(body):
        key, at = read_varint(body, at)
        if key & 7 == 0:
            value, at = read_varint(body, at)
            yield key >> 3, value
        elif key & 7 == 2:
            size, at = read_varint(body, at)
            yield key >> 3, body[at:at + size]
            at += size
        else:
            raise ValueError(f"wire type {key & 7} is not used by hypercore")


def frames(data: bytes) -> tuple[list[bytes], bytes]:
    """The payloads of the complete frames at the start of ``data``, and the rest."""
    out = []
    at = 0
    while at < len(data):
        try:
            size, start = read_varint(data, at)
        except IndexError:
            break
        if start + size > len(data):
            break
        out.append(data[start:start + size])
        at = start + size
    return out, data[at:]
