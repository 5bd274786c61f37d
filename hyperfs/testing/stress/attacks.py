"""The hostile clients' attacks: what each one sends, the reason the victim must log when
it drops it, and the bound on how long that may take."""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable

import trio

from hyperfs.testing import rawwire
from hyperfs.testing.stress.common import Config
from hyperfs.wire.connection import Connection
from hyperfs.wire.framing import MAX_MESSAGE, frame
from hyperfs.wire.messages import Join, Leave, Request, encode
from hyperfs.wire.protobuf import encode_varint

Sender = Callable[[trio.SocketStream, Connection], Awaitable[None]]
"""Writes an attack to the victim; ``conn`` is a fresh Connection it may use."""
Attack = tuple[Callable[[int], Sender], str, float]
"""(the sender for repetition i, the reason the victim logs, bound in seconds)."""
NEVER_READS = "requests everything, never reads"


async def _slow(stream: trio.SocketStream, data: bytes) -> None:
    """Slowloris: one byte a second."""
    for i in range(len(data)):
        await stream.send_all(data[i:i + 1])
        await trio.sleep(1)


def _garbage(rng: random.Random) -> bytes:
    """Random frames (some may even parse), then one that cannot: a field whose length
    runs past the frame's end."""
    frames = [frame(bytes([rng.randrange(0, 8)]) + rng.randbytes(rng.randrange(1, 200)))
              for _ in range(rng.randrange(1, 20))]
    return b"".join(frames) + frame(b"\x01\x12\xff\xff\x03\x00")


def channel_abuse(variant: int, fid: bytes) -> tuple[bytes, str]:
    """A message that misuses channel numbers, and the reason the victim must give."""
    other = os.urandom(32)
    cases = [
        (frame(b"\x02\x08\x07\x10\x01"), "never opened"),  # Have-like on channel 7
        (frame(encode(Join(1 << 62, other))), "skipping ahead"),
        (frame(encode(Join(0, other))) + frame(encode(Join(0, os.urandom(32)))),
         "reused live channel"),
        (frame(encode(Join(0, other))) + frame(encode(Join(1, other))), "already has open"),
        (frame(encode(Leave(9))), "never opened"),
        (frame(encode(Join(0, fid))) + frame(encode(Request(5, 0))), "never opened"),
    ]
    return cases[variant % len(cases)]


def hostile_client_attacks(cfg: Config, fid: bytes, blocks: int
                           ) -> dict[str, Attack]:
    """name -> (make the sender for repetition i, reason the victim logs, bound in s).

    One table of every attack, each a few lines, reads better than the same split over
    functions: hence its length."""
    hs, mt = cfg.handshake_timeout, cfg.message_timeout

    def nothing(_i: int) -> Sender:
        async def send(stream: trio.SocketStream, conn: Connection) -> None:
            pass
        return send

    def slow_handshake(_i: int) -> Sender:
        async def send(stream: trio.SocketStream, conn: Connection) -> None:
            await _slow(stream, conn.start())
        return send

    def slow_message(_i: int) -> Sender:
        async def send(stream: trio.SocketStream, conn: Connection) -> None:
            await stream.send_all(conn.start())
            await _slow(stream, conn.join(fid))
        return send

    def raw_after_handshake(make: Callable[[int, Connection], bytes]) -> Callable[[int], Sender]:
        def sender(i: int) -> Sender:
            async def send(stream: trio.SocketStream, conn: Connection) -> None:
                await stream.send_all(conn.start() + make(i, conn))
            return send
        return sender

    # built once: building them per connection would make this process the bottleneck
    joins = b"".join(frame(encode(Join(n, os.urandom(32)))) for n in range(5000))
    have = Connection(os.urandom(32))
    have.start()
    have.join(fid)
    huge = have.have(fid, bitfield=b"\xff" * (100 * 1000 * 1000))

    def many_joins(_i: int) -> Sender:
        async def send(stream: trio.SocketStream, conn: Connection) -> None:
            await stream.send_all(conn.start() + joins)
        return send

    def big_bitfield(_i: int) -> Sender:
        async def send(stream: trio.SocketStream, conn: Connection) -> None:
            await stream.send_all(conn.start() + conn.join(fid))
            await stream.send_all(huge)  # its channel is 0, as conn's
        return send

    def never_reads(_i: int) -> Sender:
        async def send(stream: trio.SocketStream, conn: Connection) -> None:
            await stream.send_all(conn.start() + conn.join(fid))
            requests = b"".join(conn.request(fid, b) for b in range(blocks))
            while True:  # asks for everything again and again, reads nothing
                await stream.send_all(requests)
        return send

    rng = random.Random(7)
    return {
        "connects, never sends a handshake": (nothing, "no handshake", hs + 5),
        "slowloris handshake (1 byte/s)": (slow_handshake, "no handshake", hs + 5),
        "slowloris message after handshake (1 byte/s)": (slow_message, "took longer",
                                                          mt + 5),
        "message over the 5 MiB limit": (raw_after_handshake(
            lambda i, c: encode_varint(MAX_MESSAGE + 1) + b"\0" * 4096), "message larger", 5),
        "varint length that never ends": (raw_after_handshake(
            lambda i, c: b"\xff" * 64), "message larger", 5),
        "garbage protobuf": (raw_after_handshake(lambda i, c: _garbage(rng)),
                             "protocol error", 5),
        "channel-number abuse (6 kinds)": (raw_after_handshake(
            lambda i, c: channel_abuse(i, fid)[0]), "protocol error", 5),
        "5,000 Joins for random ids": (many_joins, "more than 1024 channels", 15),
        "Have with a 100 MB bitfield": (big_bitfield, "message larger", 15),
        NEVER_READS: (never_reads, "not reading|took longer", mt + 15),
        **independent_attacks(fid, blocks),
    }


def independent_attacks(fid: bytes, blocks: int) -> dict[str, Attack]:
    """Malformed messages after a handshake, all bytes built by :mod:`hyperfs.testing.rawwire`
    (not by the victim's own encoder), with the reason the victim must give."""

    def hand_built(payload: bytes) -> Callable[[int], Sender]:
        def sender(_i: int) -> Sender:
            async def send(stream: trio.SocketStream, conn: Connection) -> None:
                await stream.send_all(rawwire.handshake(os.urandom(32)) + payload)
            return send
        return sender

    no_id = rawwire.message(rawwire.JOIN, rawwire.uint(1, 0))
    cut = rawwire.message(rawwire.JOIN, rawwire.uint(1, 0) + rawwire.blob(2, fid)[:-5])
    beyond = rawwire.join(0, fid) + rawwire.request(0, blocks + 10)
    return {
        "hand-built Join without its id": (hand_built(no_id), "required field 2 missing", 5),
        "hand-built Join cut inside its id": (hand_built(cut), "protocol error", 5),
        "hand-built Request past the feed's end": (hand_built(beyond), "past the end", 5),
    }
