"""The outbox's writer over real TCP on 127.0.0.1: what is queued arrives whole and in
order, also when the socket takes a ``sendmsg`` of many buffers only in part (a small
send buffer, a reader that takes a little at a time), and a Response queued in parts
(its block as it was read) is the same bytes as the Response joined."""

from __future__ import annotations

import random
import socket

import trio

from hyperfs.replication.deadlines import Clocks, Timeouts
from hyperfs.replication.outbox import Outbox
from hyperfs.wire.messages import encode_response, response_parts


async def _connected() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    sender = await trio.open_tcp_stream("127.0.0.1", port)
    receiver = await listeners[0].accept()
    await listeners[0].aclose()
    return sender, receiver


async def _read(stream: trio.SocketStream, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        chunk = await stream.receive_some(4096)  # a little at a time: the sender waits
        assert chunk, "the connection ended early"
        got += chunk
    return bytes(got)


async def test_writes_queued_buffers_whole_and_in_order_through_partial_sends() -> None:
    rng = random.Random(5)
    sender, receiver = await _connected()
    sender.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    outbox = Outbox(sender, Clocks(Timeouts()), before_send=lambda: None)
    expected = bytearray()
    for block in range(120):
        data = rng.randbytes(rng.choice([0, 1, 1024, 16 * 1024, 65536, 70000]))
        proof = [(2 * block + 2, rng.randbytes(32))][: block % 2]
        parts = response_parts(3, block, data, proof)
        assert b"".join(parts) == encode_response(3, block, data, proof, framed=True)
        outbox.put_parts(parts)
        outbox.put(b"\x01" * (block % 5))  # small messages between (some empty)
        expected += encode_response(3, block, data, proof, framed=True)
        expected += b"\x01" * (block % 5)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.run)
            got = await _read(receiver, len(expected))
            await outbox.drain()
            nursery.cancel_scope.cancel()
    assert got == expected
    assert outbox.sent == len(expected) and outbox.queued == 0
    await sender.aclose()
    await receiver.aclose()


async def test_an_encrypted_outbox_seals_each_response_whole() -> None:
    sender, receiver = await _connected()
    outbox = Outbox(sender, Clocks(Timeouts()), before_send=lambda: None)
    sealed: list[bytes] = []
    outbox.seal = lambda data: sealed.append(bytes(data)) or bytes(data)
    data = bytes(range(256)) * 256
    message = encode_response(0, 7, data, [], framed=True)
    outbox.put_parts(response_parts(0, 7, data, []))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(outbox.run)
            got = await _read(receiver, len(message))
            nursery.cancel_scope.cancel()
    assert sealed == [message] == [got]
    await sender.aclose()
    await receiver.aclose()
