"""The Connection state machine: two of them back to back, and every protocol error."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hyperfs.wire.connection import Connection, ProtocolError
from hyperfs.wire.events import (
    CancelReceived,
    ExtensionReceived,
    HandshakeReceived,
    HaveReceived,
    Joined,
    Left,
    Paused,
    RequestReceived,
    ResponseReceived,
    Unpaused,
)
from hyperfs.wire.framing import frame
from hyperfs.wire.messages import Extension, Handshake, Have, Join, Leave, Request, encode

A_ID, B_ID = b"A" * 32, b"B" * 32
FEED, OTHER, THIRD = b"f" * 32, b"o" * 32, b"t" * 32


def pair(a_ext: tuple[str, ...] = (), b_ext: tuple[str, ...] = ()) -> tuple[Connection, Connection]:
    """Two connections that have exchanged handshakes."""
    a, b = Connection(A_ID, a_ext), Connection(B_ID, b_ext)
    assert b.receive_data(a.start()) == [HandshakeReceived(A_ID, "hypercore", None, a.extensions)]
    assert a.receive_data(b.start()) == [HandshakeReceived(B_ID, "hypercore", None, b.extensions)]
    return a, b


def remote(*msgs: object, handshake: bool = True) -> bytes:
    """Bytes a hand-made remote sends (after its handshake)."""
    out = frame(encode(Handshake("hypercore", None, B_ID))) if handshake else b""
    return out + b"".join(frame(encode(m)) for m in msgs)  # type: ignore[arg-type]


def test_handshake_state() -> None:
    a, b = Connection(A_ID, ["z", "ping"]), Connection(B_ID, ["ping"])
    assert not a.handshaken
    a.receive_data(b.start())
    assert a.handshaken and a.remote_id == B_ID and a.remote_extensions == ("ping",)
    assert a.remote_supports("ping") and not a.remote_supports("z")
    assert a.extensions == ("ping", "z")


def test_full_exchange_back_to_back() -> None:
    a, b = pair()
    assert b.receive_data(a.join(FEED)) == [Joined(FEED)]
    assert a.receive_data(b.join(FEED)) == [Joined(FEED)]
    assert a.joined_locally(FEED) and a.joined_remotely(FEED)
    sent = b.have(FEED, bitfield=b"\xc0") + b.have(FEED, blocks=[7]) + b.unpause(FEED)
    assert a.receive_data(sent) == [
        HaveReceived(FEED, (), b"\xc0"),
        HaveReceived(FEED, (7,), None),
        Unpaused(FEED),
    ]
    assert b.receive_data(a.request(FEED, 1) + a.cancel(FEED, 0)) == [
        RequestReceived(FEED, 1),
        CancelReceived(FEED, 0),
    ]
    proof = [(3, b"h" * 32), (8, b"r" * 32)]
    assert a.receive_data(b.response(FEED, 1, b"data", proof) + b.pause(FEED)) == [
        ResponseReceived(FEED, 1, b"data", tuple(proof)),
        Paused(FEED),
    ]


@given(st.integers(0, 2**64 - 1), st.integers(0, 300))
def test_requests_written_by_hand_are_the_schema_bytes(block: int, channels: int) -> None:
    """Connection.request skips building the message: its bytes must be the schema's."""
    a = Connection(A_ID)
    a.start()
    feeds = [bytes([i >> 8, i & 0xFF]) * 16 for i in range(channels + 1)]
    for feed in feeds:
        a.join(feed)
    assert a.request(feeds[-1], block) == frame(encode(Request(channels, block)))
    many = [block, 0, 127, 128, 2**64 - 1 - block]
    assert a.requests(feeds[-1], many) == b"".join(
        frame(encode(Request(channels, each))) for each in many)
    assert a.requests(feeds[-1], []) == b""


def test_any_chunking_gives_the_same_events() -> None:
    a, b = pair()
    stream = a.join(FEED) + a.request(FEED, 5) + a.response(FEED, 5, bytes(70000), [])
    events = []
    for i in range(0, len(stream), 7):
        events += b.receive_data(stream[i : i + 7])
    assert events == [
        Joined(FEED),
        RequestReceived(FEED, 5),
        ResponseReceived(FEED, 5, bytes(70000), ()),
    ]


def test_channel_numbers_lowest_free_first() -> None:
    a, b = pair()
    x = b"x" * 32
    assert a.join(FEED) == frame(encode(Join(0, FEED)))
    assert a.join(FEED) == b""  # already open
    joins = a.join(OTHER) + a.join(THIRD)
    assert joins == frame(encode(Join(1, OTHER))) + frame(encode(Join(2, THIRD)))
    b.receive_data(frame(encode(Join(0, FEED))) + joins)
    a.receive_data(b.join(OTHER))
    assert a.leave(OTHER) == frame(encode(Leave(1)))  # b had joined: 1 is free at once
    assert a.leave(OTHER) == b""
    assert a.join(x) == frame(encode(Join(1, x)))
    assert a.join(b"y" * 32) == frame(encode(Join(3, b"y" * 32)))


def test_remote_leave_closes_both_directions_and_frees_numbers() -> None:
    a, b = pair()
    b.receive_data(a.join(FEED))
    a.receive_data(b.join(FEED))
    assert a.receive_data(b.leave(FEED)) == [Left(FEED)]
    assert not a.joined_locally(FEED) and not a.joined_remotely(FEED)
    assert not b.joined_locally(FEED) and not b.joined_remotely(FEED)
    # Both sides' number 0 is free again: rejoining reuses it on both sides.
    assert a.join(OTHER) == frame(encode(Join(0, OTHER)))
    assert b.receive_data(frame(encode(Join(0, OTHER)))) == [Joined(OTHER)]
    with pytest.raises(ValueError):
        a.request(FEED, 0)


def test_messages_crossing_a_leave_are_ignored() -> None:
    a, b = pair()
    b.receive_data(a.join(FEED))
    a.receive_data(b.join(FEED))
    in_flight = b.request(FEED, 3)  # b sends this before a's Leave arrives
    b.receive_data(a.leave(FEED))
    assert a.receive_data(in_flight) == []


def test_leave_before_the_remote_joined_swallows_its_answering_join() -> None:
    a, b = pair()
    join, leave = a.join(FEED), a.leave(FEED)
    assert b.receive_data(join) == [Joined(FEED)]
    answer = b.join(FEED)  # the reference joins back at once, before seeing our Leave
    assert b.receive_data(leave) == [Left(FEED)]
    assert a.receive_data(answer) == []  # closes the channel; our number 0 is free now
    assert a.join(OTHER) == frame(encode(Join(0, OTHER)))
    assert b.receive_data(frame(encode(Join(0, OTHER)))) == [Joined(OTHER)]
    assert a.receive_data(b.join(OTHER)) == [Joined(OTHER)]  # b reused its 0 as well


def test_remote_may_skip_numbers_it_still_holds() -> None:
    a = Connection(A_ID)
    a.start()
    events = a.receive_data(remote(Join(0, FEED), Leave(0), Join(1, OTHER), Join(0, THIRD)))
    assert events[1:] == [Joined(FEED), Left(FEED), Joined(OTHER), Joined(THIRD)]


def test_extensions_map_through_both_sorted_lists() -> None:
    a, b = pair(("b-only", "common", "zeta"), ("a-only", "common", "zeta"))
    assert a.extensions == ("b-only", "common", "zeta")
    assert a.extension("zeta", b"hi")[1:2] == bytes([64 + 2])
    assert b.receive_data(a.extension("zeta", b"hi")) == [ExtensionReceived("zeta", b"hi")]
    assert a.receive_data(b.extension("common", b"")) == [ExtensionReceived("common", b"")]
    with pytest.raises(ValueError):
        a.extension("b-only", b"x")
    # An extension the sender listed but we don't: ignored, like the reference.
    assert a.receive_data(frame(encode(Extension(64, b"?")))) == []


def test_extensions_sort_in_javascript_order() -> None:
    # U+FF5E sorts after U+1F600 by code point, before it by UTF-16 code unit.
    assert Connection(A_ID, ["\U0001f600", "\uff5e"]).extensions == ("\U0001f600", "\uff5e")


def test_local_misuse_raises_value_or_runtime_errors() -> None:
    a = Connection(A_ID)
    with pytest.raises(RuntimeError):
        a.join(FEED)
    a.start()
    with pytest.raises(RuntimeError):
        a.start()
    with pytest.raises(ValueError):
        a.join(b"short")
    with pytest.raises(ValueError):
        a.have(FEED, [1])
    with pytest.raises(ValueError):
        a.extension("x", b"")
    with pytest.raises(ValueError):
        Connection(b"short")
    with pytest.raises(ValueError):
        Connection(A_ID, [str(i) for i in range(65)])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (frame(encode(Join(0, FEED))), "wire type"),  # a message before the handshake
        (frame(encode(Handshake("hyperswarm", None, B_ID))), "protocol"),
        (frame(encode(Handshake("hypercore", None, b"short"))), "peer id"),
        (remote(Join(1, FEED)), "skipping"),
        (remote(Join(0, FEED), Join(0, OTHER)), "reused"),
        (remote(Join(0, FEED), Join(1, FEED)), "already"),
        (remote(Join(0, b"short")), "feed id"),
        (remote(Request(0, 1)), "never opened"),
        (remote(Join(0, FEED), Have(1, (1,))), "never opened"),
        (remote(Leave(0)), "never opened"),
        (remote(Extension(64, b"x")), "extension"),
        (remote(Join(0, FEED), Have(0, (), bytes(2 * 1024 * 1024 + 1))), "bitfield"),
        (remote(Join(0, FEED), Have(0, (16 * 1024 * 1024,))), "beyond"),
        (remote(Handshake("hypercore", None, B_ID)), "second handshake"),
        (remote() + b"\x02\x06\x08", "truncated"),
        (remote() + b"\xff\xff\xff\x7f", "larger"),
    ],
)
def test_protocol_errors(data: bytes, reason: str) -> None:
    a = Connection(A_ID)
    a.start()
    with pytest.raises(ProtocolError, match=reason):
        a.receive_data(data)
    with pytest.raises(ProtocolError):  # dead for good
        a.receive_data(b"")


def test_remote_channel_cap() -> None:
    a = Connection(A_ID, max_channels=2)
    a.start()
    a.receive_data(remote(Join(0, FEED), Join(1, OTHER)))
    with pytest.raises(ProtocolError, match="more than 2"):
        a.receive_data(frame(encode(Join(2, THIRD))))


def test_reserved_types_and_empty_frames_are_ignored() -> None:
    a = Connection(A_ID)
    a.start()
    assert a.receive_data(remote() + frame(b"\x08junk") + frame(b"\x80") + frame(b"")) == [
        HandshakeReceived(B_ID, "hypercore", None, ())
    ]


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
def test_garbage_raises_only_protocol_error(data: bytes, cuts: list[int]) -> None:
    a = Connection(A_ID, ["x"])
    a.start()
    cuts = sorted(cuts)
    try:
        for start, stop in zip([0, *cuts], [*cuts, len(data)], strict=True):
            a.receive_data(data[start:stop])
    except ProtocolError:
        pass


@given(
    st.lists(
        st.one_of(
            st.builds(Join, st.integers(0, 3), st.sampled_from([FEED, OTHER, b"s"])),
            st.builds(Leave, st.integers(0, 3)),
            st.builds(Have, st.integers(0, 3), st.lists(st.integers(0, 99)).map(tuple)),
            st.builds(Request, st.integers(0, 3), st.integers(0, 9)),
            st.builds(Extension, st.integers(64, 66), st.binary(max_size=3)),
        ),
        max_size=12,
    )
)
def test_plausible_message_sequences_raise_only_protocol_error(msgs: list[object]) -> None:
    a = Connection(A_ID, ["x"])
    a.start()
    with contextlib.suppress(ProtocolError):
        a.receive_data(remote(*msgs))
