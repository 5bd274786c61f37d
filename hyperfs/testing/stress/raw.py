"""Raw TCP attackers and plumbing for the hostile-peer cases: a connection run against
a victim until it closes, a gated relay, and a listener for nursery.start."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from hyperfs.testing.stress.common import HOST
from hyperfs.wire.connection import Connection, ProtocolError


async def read_until_closed(stream: trio.SocketStream, conn: Connection | None = None,
                            events: list[Any] | None = None) -> None:
    """Read (and decode, if ``conn``) until the remote closes or resets the stream."""
    while True:
        try:
            data = await stream.receive_some(1 << 16)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            return
        if conn is not None:
            with contextlib.suppress(ProtocolError):
                found = conn.receive_data(data)
                if events is not None:
                    events.extend(found)


async def attack(port: int, send: Callable[[trio.SocketStream, Connection], Awaitable[None]],
                 bound: float, *, read: bool = True) -> float | None:
    """Connect, run ``send`` while reading (unless not ``read``: then the victim's close
    shows as a failed send); seconds until the victim closed (None: not within ``bound``)."""
    stream = await trio.open_tcp_stream(HOST, port)
    conn = Connection(os.urandom(32))
    started = trio.current_time()
    closed_after: list[float] = []
    async with trio.open_nursery() as nursery:
        async def sender() -> None:
            try:
                await send(stream, conn)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                if not read:
                    closed_after.append(trio.current_time() - started)
                    nursery.cancel_scope.cancel()
            await trio.sleep_forever()

        async def reader() -> None:
            await read_until_closed(stream)
            closed_after.append(trio.current_time() - started)
            nursery.cancel_scope.cancel()

        nursery.start_soon(sender)
        if read:
            nursery.start_soon(reader)
        with trio.move_on_after(bound):
            await trio.sleep_forever()
        nursery.cancel_scope.cancel()
    await trio.aclose_forcefully(stream)
    return closed_after[0] if closed_after else None


async def relay(client: trio.SocketStream, port: int, gate: trio.Event) -> None:
    """Pipe ``client`` to the local ``port`` once ``gate`` is set."""
    await gate.wait()
    try:
        server = await trio.open_tcp_stream(HOST, port)
    except OSError:
        return
    async def pipe(a: trio.SocketStream, b: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await a.receive_some(1 << 16):
                await b.send_all(data)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await b.send_eof()
    async with server, trio.open_nursery() as nursery:
        nursery.start_soon(pipe, client, server)
        nursery.start_soon(pipe, server, client)


def partial_serve(handler: Callable[[trio.SocketStream], Awaitable[None]]) -> Callable:
    """trio.serve_tcp on an ephemeral loopback port, for nursery.start."""
    async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await trio.serve_tcp(handler, 0, host=HOST, task_status=task_status)
    return serve
