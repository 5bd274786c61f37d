"""The send half of a connection: messages queued without waiting, written by one task.

The peer queues its replies as it handles the remote's messages and goes on reading; the
writer (:meth:`Outbox.run`, beside the reader in the peer's nursery) sends them in as few
writes as it can. The peer waits (:meth:`Outbox.drain`) only when it chooses to, when
too much is queued, so producing replies and sending them overlap.

Over a plain TCP connection everything queued goes out in one ``sendmsg`` of many
buffers (as many calls as the socket takes): a served block is never copied into a
message (:meth:`Outbox.put_parts`), and a MiB of Responses costs one trip through trio's
scheduler instead of one per block (measured: ~9 us a checkpoint here, the 64 KiB copy
~10 us). Encrypted, each write is sealed, as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

import trio

from hyperfs.replication.deadlines import Clocks
from hyperfs.wire.protobuf import Buffer

SMALL = 16 * 1024
"""Queued buffers below this size are joined into one write (one iovec, one sealed
frame); larger ones (blocks) go as they are."""
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


class Outbox:
    """Messages queued for one stream. ``before_send`` runs each time the writer wakes,
    to add what the peer batches until then (its Haves)."""

    def __init__(self, stream: trio.abc.Stream, clocks: Clocks,
                 before_send: Callable[[], None]) -> None:
        self.stream = stream
        self.clocks = clocks  # its `sending` is stamped while a write is under way
        self.queued = 0  # bytes queued, not yet taken by the writer
        self.sent = 0  # bytes written
        self._before_send = before_send
        self.seal: Callable[[Buffer], Buffer] | None = None
        """Encrypts each write, once the connection is encrypted (``Session.seal``)."""
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._messages: list[Buffer] = []
        self._ready = trio.Event()
        self._drained = trio.Event()

    def put(self, data: Buffer) -> None:
        if data:
            self._messages.append(data)
            self.queued += len(data)
            self._ready.set()

    def put_parts(self, parts: Sequence[Buffer]) -> None:
        """Queue one message given as buffers that follow each other (a Response and its
        block: ``Connection.response_parts``), each kept as it is until it is sent;
        joined when the connection is encrypted (a message is sealed whole) or when
        they are small (a 1 KiB block: one buffer costs less than three)."""
        if self.seal is not None or sum(map(len, parts)) < SMALL:
            self.put(b"".join(parts))
            return
        for data in parts:
            self.put(data)

    def wake(self) -> None:
        """Have the writer run soon (``before_send`` with it), even with nothing queued."""
        self._ready.set()

    async def drain(self) -> None:
        """Wait until the writer has written what is queued (and wakes, when it is idle)."""
        self._drained = trio.Event()
        self._ready.set()
        await self._drained.wait()

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until what is queued has been written."""
        with trio.move_on_after(timeout):
            while self._messages or self.clocks.sending is not None:
                await self.drain()

    async def run(self) -> None:
        """The writer: send what is queued, whenever something is."""
        clocks = self.clocks
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            self._before_send()
            while self._messages:
                messages, self._messages, self.queued = self._messages, [], 0
                clocks.sending = trio.current_time()
                seal, writes = self.seal, list(_coalesce(messages))
                if seal is None and self._socket is not None:
                    self.sent += await _send_buffers(self._socket, writes)
                else:
                    for data in writes:
                        out = data if seal is None else seal(data)
                        await self.stream.send_all(out)
                        self.sent += len(out)
                clocks.sending = None
            self._drained.set()


async def _send_buffers(sock: trio.socket.SocketType, buffers: list[Buffer]) -> int:
    """Write all of ``buffers``, in order, with as few ``sendmsg`` calls as the socket
    takes (each takes what fits in its send buffer); how many bytes. Errors are the
    socket's (OSError), as ``send_all`` would raise them translated."""
    total, first = 0, 0
    while first < len(buffers):
        sent = await sock.sendmsg(buffers[first : first + IOV_MAX])
        total += sent
        while first < len(buffers) and sent >= len(buffers[first]):
            sent -= len(buffers[first])
            first += 1
        if sent:  # a buffer went in part: the rest of it first, next time
            buffers[first] = memoryview(buffers[first])[sent:]
    return total


def _coalesce(messages: list[Buffer]) -> Iterator[Buffer]:
    """The queued messages as few writes: small ones joined, large ones (blocks) as they
    are, so a 64 KiB block is not copied once more on its way to the socket."""
    pending: list[Buffer] = []
    for data in messages:
        if len(data) < SMALL:
            pending.append(data)
            continue
        if pending:
            yield pending[0] if len(pending) == 1 else b"".join(pending)
            pending = []
        yield data
    if pending:
        yield pending[0] if len(pending) == 1 else b"".join(pending)
