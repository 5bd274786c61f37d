"""Length-prefixed framing: splitting at any byte, limits, and robustness to garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperfs.wire.framing import MAX_MESSAGE, FrameDecoder, ProtocolError, frame
from hyperfs.wire.protobuf import encode_varint

PAYLOADS = [b"a", b"", b"hello world", bytes(range(200)), b"z"]  # 200: a 2-byte prefix
STREAM = b"".join(frame(p) for p in PAYLOADS)
NON_EMPTY = [p for p in PAYLOADS if p]  # empty frames are skipped, like the reference


def test_frame_prefixes_the_length() -> None:
    assert frame(b"abc") == b"\x03abc"
    assert frame(bytes(300))[:2] == b"\xac\x02"


def test_whole_stream_in_one_chunk() -> None:
    assert FrameDecoder().feed(STREAM) == NON_EMPTY


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_split_at_every_byte_boundary(cut: int) -> None:
    decoder = FrameDecoder()
    assert decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:]) == NON_EMPTY


def test_one_byte_at_a_time() -> None:
    decoder = FrameDecoder()
    out = []
    for i in range(len(STREAM)):
        out += decoder.feed(STREAM[i : i + 1])
    assert out == NON_EMPTY


@given(st.lists(st.binary(max_size=300), max_size=10), st.data())
def test_arbitrary_chunking(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder()
    out = []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += decoder.feed(stream[start:stop])
    assert out == [p for p in payloads if p]


def test_large_payload_in_many_chunks_accepts_any_buffer_type() -> None:
    payload = bytes(range(256)) * 256  # 64 KiB
    stream = frame(payload) + frame(b"next")
    decoder = FrameDecoder()
    out = []
    buffer = bytearray(1000)
    for i in range(0, len(stream), 1000):
        chunk = stream[i : i + 1000]
        buffer[: len(chunk)] = chunk
        out += decoder.feed(memoryview(buffer)[: len(chunk)])  # reused by the "transport"
    assert out == [payload, b"next"]
    assert all(type(p) is bytes for p in out)


def test_limit_is_inclusive() -> None:
    assert FrameDecoder(limit=5).feed(frame(b"12345")) == [b"12345"]


def test_oversized_length_fails_before_the_payload_arrives() -> None:
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="larger"):
        decoder.feed(encode_varint(MAX_MESSAGE + 1))
    with pytest.raises(ProtocolError):  # and the stream stays failed
        decoder.feed(frame(b"ok"))


def test_oversized_length_fails_on_its_first_telling_byte() -> None:
    decoder = FrameDecoder(limit=100)
    with pytest.raises(ProtocolError):
        decoder.feed(b"\xe5")  # already 101 whatever follows


def test_prefix_longer_than_the_limit_needs_is_rejected() -> None:
    # 5 MiB needs a 4-byte varint; the reference rejects a fifth prefix byte, even if the
    # value would be small (non-canonical zero padding).
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x81\x80\x80\x80")
    assert FrameDecoder().feed(b"\x81\x80\x80\x00x") == [b"x"]


def test_varint_longer_than_ten_bytes_rejected_whatever_the_limit() -> None:
    decoder = FrameDecoder(limit=2**64 - 1)
    with pytest.raises(ProtocolError):
        decoder.feed(b"\x80" * 10)


@given(st.lists(st.binary(max_size=40), max_size=6))
def test_garbage_raises_only_protocol_error(chunks: list[bytes]) -> None:
    decoder = FrameDecoder(limit=1000)
    try:
        for chunk in chunks:
            for payload in decoder.feed(chunk):
                assert 0 < len(payload) <= 1000
    except ProtocolError:
        pass
