"""The protobuf wire-format subset: varints, fields, packed/unpacked, unknown-field skipping."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperfs.wire.protobuf import (
    BYTES,
    MESSAGE,
    STRING,
    VARINT,
    Field,
    ProtocolError,
    Schema,
    decode_varint,
    encode_varint,
)

UINT64 = st.integers(0, 2**64 - 1)
NODE = Schema(Field(1, VARINT, required=True), Field(2, BYTES, required=True))
EXAMPLE = Schema(
    Field(1, VARINT, required=True),
    Field(2, VARINT, repeated=True),
    Field(3, BYTES),
    Field(4, STRING, repeated=True),
    Field(5, MESSAGE, repeated=True, schema=NODE),
)


@given(UINT64)
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded + b"\xff", 0) == (value, len(encoded))
    assert len(encoded) == max(1, (value.bit_length() + 6) // 7)


def test_varint_known_encodings() -> None:
    assert encode_varint(0) == b"\x00"
    assert encode_varint(300) == b"\xac\x02"
    assert encode_varint(2**64 - 1) == b"\xff" * 9 + b"\x01"


def test_varint_rejects_out_of_range_values() -> None:
    with pytest.raises(ValueError):
        encode_varint(-1)
    with pytest.raises(ValueError):
        encode_varint(2**64)


def test_decode_varint_rejects_more_than_64_bits() -> None:
    with pytest.raises(ProtocolError):
        decode_varint(b"\xff" * 9 + b"\x02", 0)
    with pytest.raises(ProtocolError):
        decode_varint(b"\x80" * 10 + b"\x00", 0)


@given(
    UINT64,
    st.lists(UINT64, max_size=5),
    st.none() | st.binary(max_size=40),
    st.lists(st.text(max_size=5), max_size=3),
    st.lists(st.tuples(UINT64, st.binary(max_size=33)), max_size=3),
)
def test_schema_round_trip(a: int, b: list[int], c: bytes | None, d: list[str], e: list) -> None:
    values = (a, tuple(b), c, tuple(d), tuple(e))
    assert EXAMPLE.decode(EXAMPLE.encode(values)) == values
    assert EXAMPLE.decode(memoryview(b"xx" + EXAMPLE.encode(values))[2:]) == values


def test_repeated_varint_is_written_unpacked_and_read_packed_too() -> None:
    unpacked = EXAMPLE.encode((1, (1, 300), None, (), ()))
    assert unpacked == bytes.fromhex("0801 1001 10ac02")
    packed = bytes.fromhex("0801 1203 01ac02")
    assert EXAMPLE.decode(packed) == (1, (1, 300), None, (), ())
    mixed = bytes.fromhex("0801 1007 1202 0809 1008")
    assert EXAMPLE.decode(mixed)[1] == (7, 8, 9, 8)


@pytest.mark.parametrize(
    "unknown",
    [
        "3805",  # field 7, varint
        "39" + "00" * 8,  # field 7, fixed64
        "3a03616263",  # field 7, length-delimited
        "3d" + "00" * 4,  # field 7, fixed32
        "3b 0801 4b 3a0100 4c 08ff01 3c",  # field 7 group holding a nested field 9 group
    ],
)
def test_unknown_fields_of_every_wire_type_are_skipped(unknown: str) -> None:
    body = bytes.fromhex("0801" + unknown + "1a0178")
    assert EXAMPLE.decode(body) == (1, (), b"x", (), ())


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "required field 1 missing"),
        ("1001", "required field 1 missing"),
        ("08", "truncated"),
        ("0880", "truncated"),
        ("08011a05ab", "runs past"),
        ("0a0100", "wrong wire type"),  # field 1 sent length-delimited
        ("080118", "wrong wire type"),  # field 3 sent as varint
        ("0801 2201ff", "UTF-8"),
        ("0801 3e", "wire type"),  # wire type 6
        ("0801 3c", "wire type"),  # end of a group that never started
        ("0801 3b", "truncated"),  # group never ended
        ("0801 39 00", "runs past"),  # fixed64 cut short
        ("0801 2a03 0801", "runs past"),  # nested message longer than the message
        ("0801 2a02 0801", "required field 2 missing"),  # Node without its hash
        ("0801 1202 01ff 1a0178", "runs past"),  # packed varint overruns its field
    ],
)
def test_malformed_input_raises_protocol_error(body: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        EXAMPLE.decode(bytes.fromhex(body))


def test_encoding_without_a_required_field_is_our_bug() -> None:
    with pytest.raises(ValueError):
        EXAMPLE.encode((None, (), None, (), ()))


def test_builder_receives_values_positionally() -> None:
    schema = Schema(Field(1, VARINT), Field(2, STRING), build=lambda n, s: f"{s}{n}")
    assert schema.decode(schema.encode((3, "x"))) == "x3"


@given(st.binary(max_size=60))
def test_arbitrary_bytes_raise_only_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        EXAMPLE.decode(data)
