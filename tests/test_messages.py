"""Wire messages: round trips, and byte-exact agreement with the JS reference's encoder."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyperfs.wire.messages import (
    Cancel,
    Extension,
    Handshake,
    Have,
    Join,
    Leave,
    Pause,
    ProtocolError,
    Request,
    Response,
    Unpause,
    decode,
    decode_handshake,
    encode,
    parse_request,
)

ENCODE_JS = Path(__file__).parent / "js" / "encode.js"
SAFE_UINT = st.integers(0, 2**53 - 1)  # what the reference's JS numbers hold exactly
ID = st.binary(min_size=32, max_size=32)

MESSAGES = st.one_of(
    st.builds(Join, SAFE_UINT, ID),
    st.builds(Leave, SAFE_UINT),
    st.builds(
        Have,
        SAFE_UINT,
        st.lists(SAFE_UINT, max_size=4).map(tuple),
        st.none() | st.binary(max_size=20),
    ),
    st.builds(Pause, SAFE_UINT),
    st.builds(Unpause, SAFE_UINT),
    st.builds(Request, SAFE_UINT, SAFE_UINT),
    st.builds(
        Response,
        SAFE_UINT,
        SAFE_UINT,
        st.binary(max_size=100),
        st.lists(st.tuples(SAFE_UINT, ID), max_size=4).map(tuple),
    ),
    st.builds(Cancel, SAFE_UINT, SAFE_UINT),
)
HANDSHAKES = st.builds(
    Handshake,
    st.sampled_from(["hypercore", "hyperdrive"]),
    st.none() | SAFE_UINT,
    ID,
    st.lists(st.text(max_size=8), max_size=4).map(lambda names: tuple(sorted(names))),
)


def _js_fields(msg: Any) -> tuple[str, dict[str, Any]]:
    """The message as the reference's encoder takes it (bytes as {"hex": ...})."""

    def conv(value: Any) -> Any:
        if isinstance(value, bytes):
            return {"hex": value.hex()}
        if isinstance(value, tuple):
            return [conv(v) for v in value]
        return value

    fields = {name: conv(getattr(msg, name)) for name in msg.__dataclass_fields__}
    if isinstance(msg, Response):
        fields["proof"] = [{"index": i, "hash": {"hex": h.hex()}} for i, h in msg.proof]
    return type(msg).__name__, {k: v for k, v in fields.items() if v is not None}


def js_encode(msgs: list[Any]) -> list[bytes]:
    """Encode with hypercore 1.8.0's schema.proto and protocol-buffers, via node."""
    out = subprocess.run(
        ["node", str(ENCODE_JS)],
        input=json.dumps([_js_fields(m) for m in msgs]),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [bytes.fromhex(line) for line in out.splitlines()]


@given(MESSAGES)
def test_round_trip(msg: Any) -> None:
    encoded = encode(msg)
    assert encoded[0] < 8
    assert decode(encoded[0], encoded[1:]) == msg
    assert decode(encoded[0], memoryview(encoded)[1:]) == msg


@given(HANDSHAKES)
def test_handshake_round_trip(msg: Handshake) -> None:
    assert decode_handshake(encode(msg)) == msg


def test_type_bytes_follow_the_reference_order() -> None:
    msgs = [Join(0, b"i" * 32), Leave(0), Have(0), Pause(0), Unpause(0), Request(0, 0)]
    msgs += [Response(0, 0, b""), Cancel(0, 0)]
    assert [encode(m)[0] for m in msgs] == list(range(8))
    assert encode(Handshake("hypercore", None, b"p" * 32))[0] == 0x0A  # no type byte


def test_known_encodings() -> None:
    assert encode(Request(1, 2)) == bytes.fromhex("05 0801 1002")
    assert encode(Have(3, (1, 300))) == bytes.fromhex("02 0803 1001 10ac02")
    assert encode(Have(3, (), b"\xf0")) == bytes.fromhex("02 0803 1a01f0")
    assert encode(Extension(65, b"hi")) == b"Ahi"


@pytest.mark.usefixtures("requires_js")
def test_byte_exact_with_the_reference_encoder() -> None:
    msgs: list[Any] = [
        Handshake("hypercore", None, bytes(range(32)), ("ping", "zz")),
        Handshake("hypercore", 1, b"\xff" * 32),
        Join(0, b"\x01" * 32),
        Join(2**40, b"\x02" * 32),
        Leave(7),
        Have(0, (0, 1, 127, 128, 2**35)),
        Have(1, (), b"\xff\xff\xc0"),
        Have(1, (5,), b""),
        Pause(3),
        Unpause(3),
        Request(1, 2**33),
        Response(0, 9, b"hello", ((18, b"a" * 32), (3, b"b" * 32), (2**20, b"c" * 32))),
        Response(1, 0, b"", ()),
        Response(1, 0, bytes(70000), ((1, b"d" * 32),)),
        Cancel(4, 5),
    ]
    assert [encode(m)[1:] if not isinstance(m, Handshake) else encode(m) for m in msgs] == (
        js_encode(msgs)
    )


@pytest.mark.usefixtures("requires_js")
@settings(max_examples=1, database=None, deadline=None)
@given(st.lists(MESSAGES | HANDSHAKES, min_size=150, max_size=150))
def test_byte_exact_with_the_reference_encoder_generated(msgs: list[Any]) -> None:
    ours = [encode(m) if isinstance(m, Handshake) else encode(m)[1:] for m in msgs]
    assert ours == js_encode(msgs)


def test_packed_blocks_are_accepted() -> None:
    assert decode(2, bytes.fromhex("0801 1203 01ac02")) == Have(1, (1, 300))


@pytest.mark.parametrize("type_", [*range(8, 64), *range(128, 256)])
def test_reserved_types_are_ignored(type_: int) -> None:
    assert decode(type_, b"\xff\xff garbage") is None


def test_extension_types_carry_opaque_payloads() -> None:
    assert decode(64, b"\xff\x00") == Extension(64, b"\xff\x00")
    assert decode(127, b"") == Extension(127, b"")
    with pytest.raises(ValueError):
        Extension(128, b"")


@pytest.mark.parametrize(
    ("type_", "body"),
    [
        (0, "0801"),  # Join without id
        (0, "1200"),  # Join without channel
        (1, ""),  # Leave without channel
        (5, "0801"),  # Request without block
        (6, "0801 1001"),  # Response without data
        (6, "0801 1001 1a00 2202 0801"),  # proof Node without hash
        (7, "1001"),  # Cancel without channel
    ],
)
def test_missing_required_fields_are_protocol_errors(type_: int, body: str) -> None:
    with pytest.raises(ProtocolError, match="required"):
        decode(type_, bytes.fromhex(body))


def test_handshake_requires_protocol_and_id() -> None:
    with pytest.raises(ProtocolError):
        decode_handshake(bytes.fromhex("1a0100"))
    with pytest.raises(ProtocolError):
        decode_handshake(bytes.fromhex("0a0178"))


@given(st.integers(0, 255), st.binary(max_size=50))
def test_arbitrary_bodies_raise_only_protocol_error(type_: int, body: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(type_, body)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.binary(max_size=12))
def test_requests_parsed_by_hand_agree_with_the_schema(channel: int, block: int,
                                                       noise: bytes) -> None:
    """The connection's fast path for Requests reads what the schema reads, or defers."""
    body = encode(Request(channel, block))[1:]
    assert parse_request(body) == (channel, block)
    for other in (noise, body + noise, body[: len(noise) % (len(body) + 1)]):
        parsed = parse_request(other)
        if parsed is not None:
            assert decode(5, other) == Request(*parsed)
