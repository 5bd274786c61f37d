"""The slice of the protobuf (proto2) wire format that hypercore's messages use.

Why not the `protobuf` package: the schema is eight tiny messages, the hot paths (Request,
Response, Have) must be cheap in pure Python, and we need full control over what counts as
an error. A message type is described once by a `Schema` (its fields) and that description
drives both directions, so no per-message codec code exists.

What is supported, and why:
- scalar kinds: `VARINT` (uint64), `BYTES`, `STRING` (UTF-8), and `MESSAGE` (a nested
  schema, e.g. a proof Node); each optionally `required` or `repeated`.
- a repeated `VARINT` is written unpacked (one key per element, like the reference) but is
  read in both the unpacked and the packed form, as proto2 parsers must.
- unknown fields of every wire type (varint, fixed64, length-delimited, groups, fixed32) are
  skipped, so a newer peer may add fields.
- anything malformed (truncated input, a varint over 64 bits, a known field with the wrong
  wire type, a missing required field, invalid UTF-8, wire types 6 and 7) raises
  `ProtocolError`, never anything else.

Decoded values are positional: `Schema.decode` returns `schema.build(*values)` with one
value per field in declaration order (`None` for an absent optional, a tuple for a
repeated field), so a dataclass or plain `tuple` can be the builder without a dict in
between. `Schema.encode` takes the values in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

__all__ = [
    "BYTES",
    "MESSAGE",
    "STRING",
    "VARINT",
    "Buffer",
    "Field",
    "Kind",
    "ProtocolError",
    "Schema",
    "decode_varint",
    "encode_varint",
]

Buffer = bytes | bytearray | memoryview


class ProtocolError(Exception):
    """The remote peer sent bytes that violate the wire protocol; drop the connection.

    Defined here (the lowest protocol layer) so that framing, message decoding and the
    connection state machine all raise the one type a caller has to catch.
    """


_WIRE_VARINT, _WIRE_FIXED64, _WIRE_LEN, _WIRE_START, _WIRE_END, _WIRE_FIXED32 = 0, 1, 2, 3, 4, 5
_UINT64_LIMIT = 1 << 64
_SMALL_VARINTS = tuple(bytes((i,)) for i in range(128))


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128, the encoding of protobuf varints and of hypercore's frame lengths."""
    if value < 128:
        if value < 0:
            raise ValueError(f"varint must be non-negative, got {value}")
        return _SMALL_VARINTS[value]
    if value >= _UINT64_LIMIT:
        raise ValueError(f"varint must fit in 64 bits, got {value}")
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: Buffer, pos: int, end: int = 0) -> tuple[int, int]:
    """Read a uint64 varint at `pos`; return (value, position after it).

    `end` is ignored: it lets this function be a field reader, whose callers check for an
    overrun once after their field loop. Raises IndexError when `buf` ends inside the
    varint (callers turn that into a ProtocolError once, around their whole parse) and
    ProtocolError beyond 64 bits.
    """
    byte = buf[pos]
    if byte < 0x80:
        return byte, pos + 1
    value = byte & 0x7F
    shift = 7
    while True:
        pos += 1
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >= _UINT64_LIMIT:
                raise ProtocolError("varint exceeds 64 bits")
            return value, pos + 1
        shift += 7
        if shift >= 70:
            raise ProtocolError("varint longer than 10 bytes")


class Kind(Enum):
    """How a field's value is represented on the wire and in Python."""

    VARINT = auto()  # int
    BYTES = auto()  # bytes
    STRING = auto()  # str (UTF-8 on the wire)
    MESSAGE = auto()  # whatever the nested schema builds


VARINT, BYTES, STRING, MESSAGE = Kind
_SET, _APPEND, _EXTEND = range(3)  # how a decoded value lands in its field


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a message: its number, kind and cardinality."""

    number: int
    kind: Kind
    required: bool = False
    repeated: bool = False
    schema: Schema | None = None  # for Kind.MESSAGE

    @property
    def key(self) -> int:
        """The key (field number and wire type) that precedes every value."""
        return self.number << 3 | (_WIRE_VARINT if self.kind is VARINT else _WIRE_LEN)


class Schema:
    """A message type: its fields (in declaration order) and how to build a decoded value.

    `build` receives the decoded field values positionally; by default a message decodes
    to the tuple of its values (so a proof Node is simply `(index, hash)`).

    Each field gets a reader and a writer function for its kind once, here, so the hot
    loops below do one dict lookup and one call per field and no kind dispatch.
    """

    __slots__ = ("_by_key", "_numbers", "_repeated", "_required", "_writers", "build", "fields")

    def __init__(self, *fields: Field, build: Callable[..., Any] | None = None) -> None:
        self.fields = fields
        self.build = build
        self._by_key: dict[int, tuple[int, Reader, int]] = {}
        self._writers: list[tuple[bytes, Writer, bool]] = []
        read: Reader
        write: Writer
        for i, f in enumerate(fields):
            if f.kind is MESSAGE:
                assert f.schema is not None, "a MESSAGE field needs its schema"
                read, write = f.schema._read, f.schema._write
            else:
                read, write = _READERS[f.kind], _WRITERS[f.kind]
            self._by_key[f.key] = (i, read, _APPEND if f.repeated else _SET)
            if f.kind is VARINT and f.repeated:  # proto2 parsers must accept packed too
                self._by_key[f.number << 3 | _WIRE_LEN] = (i, _read_packed, _EXTEND)
            self._writers.append((encode_varint(f.key), write, f.repeated))
        self._numbers = frozenset(f.number for f in fields)
        self._required = tuple(i for i, f in enumerate(fields) if f.required)
        self._repeated = tuple(i for i, f in enumerate(fields) if f.repeated)

    def encode(self, values: Sequence[Any], prefix: bytes = b"") -> bytes:
        """Encode one value per field, in declaration order (None omits an optional field).

        `prefix` is emitted first, in the same single join (a message type byte costs no
        extra copy of a 64 KiB block). Raises ValueError for a missing required field: that
        is our bug, not the peer's.
        """
        out = [prefix]
        self._write_fields(values, out.append)
        return b"".join(out)

    def decode(self, buf: Buffer) -> Any:
        """Decode a whole message; raise ProtocolError if it is malformed.

        Length-delimited values are copied out as `bytes`, so `buf` may be a memoryview of a
        larger frame (that is how a Response's 64 KiB block is read with a single copy).
        """
        try:
            return self._decode(buf, 0, len(buf))
        except IndexError:
            raise ProtocolError("message truncated") from None
        except UnicodeDecodeError:
            raise ProtocolError("string field is not valid UTF-8") from None

    def _write_fields(self, values: Sequence[Any], append: Callable[[bytes], None]) -> None:
        if None in values:
            for i in self._required:
                if values[i] is None:
                    raise ValueError(f"required field {self.fields[i].number} missing")
        for (key, write, repeated), value in zip(self._writers, values, strict=True):
            if value is None:
                continue
            if repeated:
                for item in value:
                    append(key)
                    write(item, append)
            else:
                append(key)
                write(value, append)

    def _decode(self, buf: Buffer, pos: int, end: int) -> Any:
        """Decode the message in buf[pos:end]."""
        values: list[Any] = [None] * len(self.fields)
        for i in self._repeated:
            values[i] = []
        by_key = self._by_key
        while pos < end:
            key = buf[pos]
            if key < 0x80:
                pos += 1
            else:
                key, pos = decode_varint(buf, pos)
            spec = by_key.get(key)
            if spec is None:
                if key >> 3 in self._numbers:
                    raise ProtocolError(f"field {key >> 3} has wrong wire type {key & 7}")
                pos = _skip(buf, pos, key & 7, key >> 3)
                continue
            index, read, mode = spec
            value, pos = read(buf, pos, end)
            if mode is _SET:
                values[index] = value
            elif mode is _APPEND:
                values[index].append(value)
            else:
                values[index].extend(value)
        if pos != end:
            raise ProtocolError("field runs past the message")
        if None in values:
            for i in self._required:
                if values[i] is None:
                    raise ProtocolError(f"required field {self.fields[i].number} missing")
        for i in self._repeated:
            values[i] = tuple(values[i])
        return tuple(values) if self.build is None else self.build(*values)

    def _read(self, buf: Buffer, pos: int, end: int) -> tuple[Any, int]:
        """Reader of this schema as a nested, length-delimited field."""
        pos, stop = _span(buf, pos, end)
        return self._decode(buf, pos, stop), stop

    def _write(self, value: Sequence[Any], append: Callable[[bytes], None]) -> None:
        """Writer of this schema as a nested, length-delimited field."""
        body = self.encode(value)
        append(encode_varint(len(body)))
        append(body)


# A reader takes (buf, pos, end) at a field's value and returns (value, position after it);
# a writer appends a value's bytes (those after the key) through `append`.
Reader = Callable[[Buffer, int, int], tuple[Any, int]]
Writer = Callable[[Any, Callable[[bytes], None]], None]


def _span(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """Read a length prefix; return where the value starts and stops."""
    length = buf[pos]
    if length < 0x80:
        pos += 1
    else:
        length, pos = decode_varint(buf, pos)
    stop = pos + length
    if stop > end:
        raise ProtocolError("length-delimited field runs past the message")
    return pos, stop


def _read_bytes(buf: Buffer, pos: int, end: int) -> tuple[bytes, int]:
    pos, stop = _span(buf, pos, end)
    return bytes(buf[pos:stop]), stop


def _read_string(buf: Buffer, pos: int, end: int) -> tuple[str, int]:
    pos, stop = _span(buf, pos, end)
    return str(buf[pos:stop], "utf-8"), stop


def _read_packed(buf: Buffer, pos: int, end: int) -> tuple[list[int], int]:
    pos, stop = _span(buf, pos, end)
    values = []
    while pos < stop:
        value, pos = decode_varint(buf, pos)
        values.append(value)
    if pos != stop:
        raise ProtocolError("packed varint runs past its field")
    return values, stop


def _write_varint(value: int, append: Callable[[bytes], None]) -> None:
    append(encode_varint(value))


def _write_bytes(value: bytes, append: Callable[[bytes], None]) -> None:
    append(encode_varint(len(value)))
    append(value)


def _write_string(value: str, append: Callable[[bytes], None]) -> None:
    _write_bytes(value.encode(), append)


_READERS: dict[Kind, Reader] = {VARINT: decode_varint, BYTES: _read_bytes, STRING: _read_string}
_WRITERS: dict[Kind, Writer] = {VARINT: _write_varint, BYTES: _write_bytes, STRING: _write_string}


def _skip(buf: Buffer, pos: int, wire: int, number: int) -> int:
    """Skip an unknown field's value (groups included, iteratively so depth can't hurt)."""
    groups: list[int] = []
    while True:
        if wire == _WIRE_VARINT:
            _, pos = decode_varint(buf, pos)
        elif wire == _WIRE_FIXED64:
            pos += 8
        elif wire == _WIRE_LEN:
            length, pos = decode_varint(buf, pos)
            pos += length
        elif wire == _WIRE_FIXED32:
            pos += 4
        elif wire == _WIRE_START:
            groups.append(number)
        elif wire == _WIRE_END and groups and groups[-1] == number:
            groups.pop()
        else:
            raise ProtocolError(f"invalid wire type {wire} for field {number}")
        if pos > len(buf):
            raise ProtocolError("unknown field runs past the message")
        if not groups:
            return pos
        key, pos = decode_varint(buf, pos)
        wire, number = key & 7, key >> 3
