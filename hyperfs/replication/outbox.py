"""The send half of a connection: messages queued without waiting, written by one task.

The peer queues its replies as it handles the remote's messages and goes on reading; the
writer (:meth:`Outbox.run`, beside the reader in the peer's nursery) sends them in as few
writes as it can. The peer waits (:meth:`Outbox.drain`) only when it chooses to, when
too much is queued, so producing replies and sending them overlap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import trio

from hyperfs.replication.deadlines import Clocks
from hyperfs.wire.protobuf import Buffer


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
        self.seal: Callable[[bytes], Buffer] | None = None
        """Encrypts each write, once the connection is encrypted (``Session.seal``)."""
        self._messages: list[bytes] = []
        self._ready = trio.Event()
        self._drained = trio.Event()

    def put(self, data: bytes) -> None:
        if data:
            self._messages.append(data)
            self.queued += len(data)
            self._ready.set()

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
                seal = self.seal
                for data in _coalesce(messages):
                    out = data if seal is None else seal(data)
                    await self.stream.send_all(out)
                    self.sent += len(out)
                clocks.sending = None
            self._drained.set()


def _coalesce(messages: list[bytes], small: int = 16 * 1024) -> Iterator[bytes]:
    """The queued messages as few writes: small ones joined, large ones (blocks) as they
    are, so a 64 KiB block is not copied once more on its way to the socket."""
    pending: list[bytes] = []
    for data in messages:
        if len(data) < small:
            pending.append(data)
            continue
        if pending:
            yield b"".join(pending)
            pending = []
        yield data
    if pending:
        yield b"".join(pending)
