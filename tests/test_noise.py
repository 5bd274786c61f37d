"""The encrypted wire, sans-I/O: Noise XX, secretstream framing, the greeting, capabilities.

No sockets here: two state machines are wired back to back, and a test stands in for the
relay that alters what passes between them (tests/test_secure.py does it over TCP).
"""

from __future__ import annotations

import os

import pytest

from hyperfs.wire.capabilities import Capabilities, capability, discovery_key
from hyperfs.wire.connection import Connection, ProtocolError
from hyperfs.wire.events import HandshakeReceived, Joined
from hyperfs.wire.noise import KeyPair, NoiseError, NoiseXX
from hyperfs.wire.secretstream import CHUNK, MAX_FRAME, FrameReader, Opener, Sealer, StreamError
from hyperfs.wire.secure import SECURE, Greeting, prologue

# The cacophony test vector for this exact protocol (github.com/haskell-cryptography/
# cacophony, vectors/cacophony.txt, as mirrored in mcginty/snow tests/vectors).
VECTOR = {
    "prologue": "4a6f686e2047616c74",
    "init_static": "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1",
    "init_ephemeral": "893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a",
    "resp_static": "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893",
    "resp_ephemeral": "bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b",
    "handshake_hash": "8cf47d7b3cb5804c0109d48e8bcdbee2cbb65687d8ea2c92994ca361fb86151a"
                      "d93627b98936cbb32de56e8abb21def3925011ac3e35db9cbeea73ab9a4392c2",
    "messages": [
        ("4c756477696720766f6e204d69736573",
         "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944"
         "4c756477696720766f6e204d69736573"),
        ("4d757272617920526f746862617264",
         "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843"
         "0505b6745ce64a5f33f0e8e3b83f11ce8802bca507f4f2d8b564dbe277e19661"
         "16e132faa2dfd70b8b077b9f94b913df5056ae1319469b824a98d54bbaa82c32"
         "5595587064f978c4b6d104f7596e6f"),
        ("462e20412e20486179656b",
         "99579e1c1ee15e422a57ddd6b16d37087b17558e8369c18991b4b2ca3a824abf"
         "904cdcf5458b5431a75af034ca9e9b982de039eaaf156775e2d580cd4e5ebae8"
         "9c3f8cb2594b556d8a8169"),
    ],
    # the first transport message, responder to initiator (ChaChaPoly, nonce 0)
    "transport": ("4361726c204d656e676572",
                  "fc56eea290b3f3a21aac0c70cd5787b5ee99be37d2f4d751329b55"),
}


def _vector_pair() -> tuple[NoiseXX, NoiseXX]:
    h = bytes.fromhex
    initiator = NoiseXX(initiator=True, static=KeyPair.from_secret(h(VECTOR["init_static"])),
                        prologue=h(VECTOR["prologue"]),
                        ephemeral=KeyPair.from_secret(h(VECTOR["init_ephemeral"])))
    responder = NoiseXX(initiator=False, static=KeyPair.from_secret(h(VECTOR["resp_static"])),
                        prologue=h(VECTOR["prologue"]),
                        ephemeral=KeyPair.from_secret(h(VECTOR["resp_ephemeral"])))
    return initiator, responder


def test_noise_xx_matches_the_cacophony_vector() -> None:
    from nacl.bindings import crypto_aead_chacha20poly1305_ietf_encrypt
    initiator, responder = _vector_pair()
    for step, (payload, ciphertext) in enumerate(VECTOR["messages"]):
        writer, reader = (initiator, responder) if step % 2 == 0 else (responder, initiator)
        message = writer.write_message(bytes.fromhex(payload))
        assert message.hex() == ciphertext
        assert reader.read_message(message) == bytes.fromhex(payload)
    assert initiator.complete and responder.complete
    assert initiator.handshake_hash.hex() == VECTOR["handshake_hash"]
    assert responder.handshake_hash == initiator.handshake_hash
    assert initiator.remote_static == KeyPair.from_secret(
        bytes.fromhex(VECTOR["resp_static"])).public
    send, receive = initiator.split()
    assert responder.split() == (receive, send)
    payload, ciphertext = VECTOR["transport"]
    assert crypto_aead_chacha20poly1305_ietf_encrypt(
        bytes.fromhex(payload), b"", bytes(12), receive).hex() == ciphertext


def _handshake(i_prologue: bytes = b"p", r_prologue: bytes = b"p",
               tamper: tuple[int, int] | None = None) -> tuple[NoiseXX, NoiseXX]:
    initiator = NoiseXX(initiator=True, static=KeyPair.generate(), prologue=i_prologue)
    responder = NoiseXX(initiator=False, static=KeyPair.generate(), prologue=r_prologue)
    for step in range(3):
        writer, reader = (initiator, responder) if step % 2 == 0 else (responder, initiator)
        message = bytearray(writer.write_message())
        if tamper is not None and tamper[0] == step:
            message[tamper[1] % len(message)] ^= 0x01
        reader.read_message(bytes(message))
    return initiator, responder


def test_noise_agrees_on_keys_and_learns_the_static_keys() -> None:
    initiator, responder = _handshake()
    assert initiator.split() == tuple(reversed(responder.split()))
    assert initiator.remote_static == responder._static.public
    assert responder.remote_static == initiator._static.public
    assert initiator.handshake_hash != _handshake()[0].handshake_hash  # fresh each time


def test_a_different_prologue_fails_the_handshake() -> None:
    with pytest.raises(NoiseError):
        _handshake(b"hello A", b"hello B")


@pytest.mark.parametrize("step, offset", [(1, 0), (1, 40), (1, 90), (2, 0), (2, 60)])
def test_every_flipped_byte_of_messages_2_and_3_fails(step: int, offset: int) -> None:
    with pytest.raises(NoiseError):
        _handshake(tamper=(step, offset))


def test_a_flipped_ephemeral_in_message_1_fails_later() -> None:
    """Message 1 is unauthenticated by design; its ephemeral key is hashed, so the change
    shows at message 2 (or message 3 for the other side)."""
    with pytest.raises(NoiseError):
        _handshake(tamper=(0, 5))


def test_short_weak_and_out_of_turn_messages() -> None:
    initiator = NoiseXX(initiator=True, static=KeyPair.generate(), prologue=b"")
    responder = NoiseXX(initiator=False, static=KeyPair.generate(), prologue=b"")
    with pytest.raises(NoiseError, match="out of turn"):
        initiator.read_message(bytes(32))
    with pytest.raises(NoiseError, match="too short"):
        responder.read_message(b"x" * 31)
    responder = NoiseXX(initiator=False, static=KeyPair.generate(), prologue=b"")
    responder.read_message(bytes(32))  # the all-zero point: hashed, then refused at DH
    with pytest.raises(NoiseError, match="weak"):
        responder.write_message()
    with pytest.raises(RuntimeError):
        NoiseXX(initiator=False, static=KeyPair.generate(), prologue=b"").split()
    assert "secret" not in repr(KeyPair.generate()).replace("KeyPair(", "")


# -- secretstream ----------------------------------------------------------------------


def _stream() -> tuple[Sealer, Opener]:
    key = os.urandom(32)
    return Sealer(key), Opener(key)


def test_secretstream_round_trip_in_any_chunking() -> None:
    small = [b"a", b"", os.urandom(1000)]
    large = [*small, os.urandom(CHUNK * 2 + 5)]
    for messages, step in ((small, 1), (small, 2), (large, 777), (large, CHUNK + 100)):
        sealer, opener = _stream()
        wire = sealer.header + b"".join(sealer.seal(m) for m in messages)
        pieces = [bytes(piece) for i in range(0, len(wire), step)  # views: copied at once
                  for piece in opener.receive_data(wire[i:i + step])]
        assert b"".join(pieces) == b"".join(messages)
        assert not opener.partial


def test_a_frame_trickling_in_costs_no_more_than_one_arriving_whole() -> None:
    """Byte by byte, a 256 KiB frame: linear work (quadratic would take minutes)."""
    sealer, opener = _stream()
    wire = sealer.header + sealer.seal(os.urandom(CHUNK))
    out = [bytes(piece) for byte in range(len(wire)) for piece in opener.receive_data(
        wire[byte:byte + 1])]
    assert len(b"".join(out)) == CHUNK


def _frames(wire: bytes) -> list[bytes]:
    reader, out = FrameReader(), []
    for piece in reader.feed(wire):
        out.append(len(piece).to_bytes(3, "little") + piece)
    return out


@pytest.mark.parametrize("attack", ["flip", "replay", "reorder", "drop", "swap header"])
def test_secretstream_refuses_altered_streams(attack: str) -> None:
    sealer, opener = _stream()
    frames = _frames(sealer.header + sealer.seal(b"first") + sealer.seal(b"second")
                     + sealer.seal(b"third"))
    if attack == "flip":
        frames[2] = frames[2][:-1] + bytes([frames[2][-1] ^ 1])
    elif attack == "replay":
        frames.insert(2, frames[1])
    elif attack == "reorder":
        frames[1], frames[2] = frames[2], frames[1]
    elif attack == "drop":
        del frames[2]
    else:
        frames[0] = _frames(Sealer(os.urandom(32)).header)[0]
    with pytest.raises(StreamError):
        opener.receive_data(b"".join(frames))


def test_an_orderly_end_is_told_from_a_cut_and_nothing_follows_it() -> None:
    sealer, opener = _stream()
    wire = sealer.header + sealer.seal(b"data")
    assert [bytes(p) for p in opener.receive_data(wire)] == [b"data"]
    assert not opener.finished  # the bytes ending here would be a cut
    assert sealer.sealed == len(wire) - len(sealer.header)
    assert [bytes(p) for p in opener.receive_data(sealer.final())] == [b""]
    assert opener.finished
    with pytest.raises(StreamError, match="after the final"):
        opener.receive_data(sealer.seal(b"more"))


def test_secretstream_limits_frames_before_buffering() -> None:
    _sealer, opener = _stream()
    with pytest.raises(StreamError, match="exceeds"):
        opener.receive_data((MAX_FRAME + 1).to_bytes(3, "little"))


# -- the greeting ----------------------------------------------------------------------


def _greeting(extensions: list[str], keypair: KeyPair | None = None) -> tuple[Connection, Greeting]:
    conn = Connection(os.urandom(32), extensions)
    return conn, Greeting(conn.start(), keypair or KeyPair.generate())


def _deliver(greeting: Greeting, data: bytes) -> bytes:
    """Bytes to a greeting, or once it is done to its session (checked to be opened)."""
    if not greeting.done:
        return greeting.receive_data(data)
    if greeting.session is not None:
        assert greeting.session.open(data) == []  # the remote's secretstream header
    return b""


def _run(a: Greeting, b: Greeting, relay=lambda side, data: data) -> None:  # type: ignore[no-untyped-def]
    """Pass bytes between two greetings until neither has more to say."""
    to_b, to_a = relay("a", a.start()), relay("b", b.start())
    while to_a or to_b:
        to_b, to_a = b"", to_a + relay("b", _deliver(b, to_b))
        to_a, to_b = b"", to_b + relay("a", _deliver(a, to_a))


def test_two_offers_make_an_encrypted_session() -> None:
    ka, kb = KeyPair.generate(), KeyPair.generate()
    (_conn_a, a), (conn_b, b) = _greeting([SECURE, "hyperfs-x"], ka), _greeting([SECURE], kb)
    _run(a, b)
    assert a.done and b.done and a.session and b.session
    assert a.session.initiator != b.session.initiator
    assert a.session.handshake_hash == b.session.handshake_hash
    assert a.session.remote_key == kb.public and b.session.remote_key == ka.public
    assert b.session.open(a.session.seal(b"inner bytes")) == [b"inner bytes"]
    assert a.session.open(b.session.seal(b"back")) == [b"back"]
    assert b.remote_hello is not None
    [event] = conn_b.receive_data(b.remote_hello)
    assert isinstance(event, HandshakeReceived) and SECURE in event.extensions


def _roles() -> tuple[Greeting, Greeting, bytes]:
    """Two greetings past the 1.x handshakes: (initiator, responder, message 1)."""
    (_, a), (_, b) = _greeting([SECURE]), _greeting([SECURE])
    hello_a, hello_b = a.start(), b.start()
    from_a, from_b = a.receive_data(hello_b), b.receive_data(hello_a)
    return (a, b, from_a) if from_a else (b, a, from_b)


def test_sealed_data_right_behind_the_last_noise_message_is_kept() -> None:
    """The initiator sends message 3, its header and its first sealed frames in one go
    (a peer joining many feeds): the responder, reading it all at once, opens them."""
    initiator, responder, first = _roles()
    last = initiator.receive_data(responder.receive_data(first))
    assert initiator.done and initiator.session is not None and not responder.done
    bulk = os.urandom(50_000)
    responder.receive_data(last + initiator.session.seal(bulk))
    assert responder.done and responder.leftover() == bulk


def test_an_oversized_noise_message_is_refused() -> None:
    from hyperfs.wire.secretstream import frame as frame_24
    _initiator, responder, _first = _roles()
    with pytest.raises(ProtocolError, match="Noise message of 2000 bytes"):
        responder.receive_data(frame_24(os.urandom(2000)))


def test_one_offer_is_plaintext_and_keeps_what_followed() -> None:
    _conn_a, a = _greeting([SECURE])
    js = Connection(os.urandom(32), ["some-js-extension"])
    hello = js.start() + js.join(os.urandom(32))
    assert a.receive_data(hello) == b""
    assert a.done and a.session is None
    assert a.leftover() == hello[len(a.remote_hello or b""):]


@pytest.mark.parametrize("change", ["strip one", "strip both", "reorder", "add", "peer id"])
def test_a_changed_or_stripped_offer_never_ends_in_a_session(change: str) -> None:
    """Whatever the relay does to the 1.x handshakes, the two sides never agree on a
    session with different views of the offers: they fail, or (both stripped) neither
    is encrypted, which is what the fail-closed policy is for."""
    (_, a), (_, b) = _greeting([SECURE, "hyperfs-ordered-proofs"]), _greeting(
        [SECURE, "hyperfs-ordered-proofs"])

    def relay(side: str, data: bytes) -> bytes:
        if not data or data not in (a.hello, b.hello):
            return data
        if (change == "strip one" and side == "b") or change == "strip both":
            conn = Connection(os.urandom(32), ["x-other"])
            return conn.start()
        if change in ("reorder", "add") and side == "a":
            names = ["hyperfs-ordered-proofs", SECURE] if change == "reorder" else \
                [SECURE, "hyperfs-ordered-proofs", "zz"]
            from hyperfs.wire.framing import frame
            from hyperfs.wire.messages import Handshake, decode_handshake, encode
            from hyperfs.wire.secure import _payload
            old = decode_handshake(_payload(data))
            return frame(encode(Handshake(old.protocol, old.version, old.id, tuple(names))))
        if change == "peer id" and side == "a":
            return data[:12] + bytes([data[12] ^ 1]) + data[13:]  # a byte of the peer id
        return data

    try:
        _run(a, b, relay)
    except ProtocolError:
        return
    assert change.startswith("strip")  # the others fail in Noise, above
    assert a.session is None or b.session is None


def test_a_hyperfs_peer_without_the_offer_is_refused() -> None:
    _conn, a = _greeting([SECURE])
    other = Connection(os.urandom(32), ["hyperfs-ordered-proofs"])
    with pytest.raises(ProtocolError, match="stripped"):
        a.receive_data(other.start())


def test_oversized_or_malformed_hello() -> None:
    _conn, a = _greeting([SECURE])
    with pytest.raises(ProtocolError, match="too large"):
        a.receive_data(b"\xff\xff\xff\x7f")
    _conn, a = _greeting([SECURE])
    with pytest.raises(ProtocolError):
        a.receive_data(b"\x05hello")  # not a Handshake


def test_prologue_is_unambiguous() -> None:
    assert prologue(b"ab", b"c") != prologue(b"a", b"bc")


# -- capabilities inside the Connection ------------------------------------------------


def _secure_pair(known_a: dict[bytes, bytes], known_b: dict[bytes, bytes],
                 **options: int) -> tuple[Connection, Connection]:
    h = os.urandom(64)
    a = Connection(os.urandom(32), **options)
    b = Connection(os.urandom(32), **options)
    a.use_capabilities(Capabilities(h, True, known_a.get))
    b.use_capabilities(Capabilities(h, False, known_b.get))
    b.receive_data(a.start())
    a.receive_data(b.start())
    return a, b


def test_join_by_discovery_key_and_capability() -> None:
    feed = os.urandom(32)
    a, b = _secure_pair({}, {discovery_key(feed): feed})
    wire = a.join(feed)
    assert feed not in wire and feed.hex().encode() not in wire
    assert b.receive_data(wire) == [Joined(feed)]
    assert b.joined_remotely(feed)


def test_an_unknown_key_or_wrong_capability_learns_nothing() -> None:
    feed = os.urandom(32)
    _a, b = _secure_pair({}, {discovery_key(feed): feed})
    # a knows the discovery key only (it is on the DHT) and guesses capabilities
    from hyperfs.wire.framing import frame
    from hyperfs.wire.messages import Join, encode
    guesses = b"".join(frame(encode(Join(n, discovery_key(feed), os.urandom(32))))
                       for n in range(10))
    assert b.receive_data(guesses) == []
    assert not b.joined_remotely(feed)
    # a capability from another connection (another handshake hash) is no better
    stolen = capability(os.urandom(64), True, feed)
    assert b.receive_data(frame(encode(Join(10, discovery_key(feed), stolen)))) == []
    # the reflected one (b's own direction) neither
    mine = capability(b"\0" * 64, False, feed)
    assert b.receive_data(frame(encode(Join(11, discovery_key(feed), mine)))) == []


def test_a_sealed_join_opens_when_we_join_the_feed_later() -> None:
    feed = os.urandom(32)
    a, b = _secure_pair({}, {})  # b does not know the feed yet
    assert b.receive_data(a.join(feed)) == []
    assert not b.joined_remotely(feed)
    b.join(feed)
    assert b.joined_remotely(feed)


def test_ten_thousand_random_discovery_keys_are_capped() -> None:
    from hyperfs.wire.framing import frame
    from hyperfs.wire.messages import Join, encode
    _a, b = _secure_pair({}, {}, max_channels=1024)
    flood = b"".join(frame(encode(Join(n, os.urandom(32), os.urandom(32))))
                     for n in range(10_000))
    with pytest.raises(ProtocolError, match="more than 1024 channels"):
        b.receive_data(flood)


def test_capabilities_only_before_channels() -> None:
    conn = Connection(os.urandom(32))
    conn.start()
    conn.join(os.urandom(32))
    with pytest.raises(RuntimeError):
        conn.use_capabilities(Capabilities(bytes(64), True, {}.get))
