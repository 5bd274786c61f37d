"""A node on the network: a swarm plus TCP listening, dialing and reconnecting.

``open_node`` is what the CLI and the filesystem run: it serves every stored feed to
whoever names it and fetches what local readers want from every connected peer. Dialed
addresses are redialed with exponential back-off for as long as the node runs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial

import trio

from .core import Core
from .swarm import Swarm

log = logging.getLogger("hyperfs.network")

BACKOFF_FIRST, BACKOFF_MAX = 0.25, 30.0


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """HOST:PORT (or :PORT, or PORT) as a (host, port) pair; ValueError says what's wrong."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"bad address {text!r}: expected HOST:PORT") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"bad address {text!r}: port must be 0-65535")
    return host, number


class Node:
    """A swarm with its listening socket and the addresses it keeps connected to."""

    def __init__(self, swarm: Swarm, nursery: trio.Nursery) -> None:
        self.swarm = swarm
        self.core = swarm.core
        self._nursery = nursery
        self.address: tuple[str, int] | None = None
        self._dialing: set[tuple[str, int]] = set()

    async def listen(self, address: str) -> tuple[str, int]:
        host, port = parse_address(address)
        serve = partial(trio.serve_tcp, self._accept, port, host=host)
        listeners = await self._nursery.start(serve)
        sockname = listeners[0].socket.getsockname()
        self.address = (sockname[0], sockname[1])
        return self.address

    async def _accept(self, stream: trio.SocketStream) -> None:
        host, port = stream.socket.getpeername()[:2]
        await self.swarm.replicate(stream, f"{host}:{port}")

    def connect(self, address: str | tuple[str, int], *, redial: bool = True) -> None:
        """Keep a connection to ``address`` (redialed with back-off while the node runs)."""
        target = parse_address(address) if isinstance(address, str) else address
        if target in self._dialing or target == self.address:
            return
        self._dialing.add(target)
        self._nursery.start_soon(self._dial, target, redial)

    async def _dial(self, target: tuple[str, int], redial: bool) -> None:
        host, port = target
        backoff = BACKOFF_FIRST
        try:
            while True:
                try:
                    stream = await trio.open_tcp_stream(host, port)
                except OSError as exc:
                    log.info("cannot connect to %s:%d: %s", host, port, exc.strerror or exc)
                else:
                    started = trio.current_time()
                    peer = await self.swarm.replicate(stream, f"{host}:{port}")
                    if trio.current_time() - started > 10 or peer.blocks_in:
                        backoff = BACKOFF_FIRST
                if not redial:
                    return
                await trio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            self._dialing.discard(target)

    def status(self) -> dict[str, object]:
        status = self.swarm.status()
        status["listening"] = f"{self.address[0]}:{self.address[1]}" if self.address else None
        status["dialing"] = [f"{host}:{port}" for host, port in sorted(self._dialing)]
        return status


@asynccontextmanager
async def open_node(core: Core, *, listen: str | None = None, peers: Sequence[str] = (),
                    request_timeout: float = 10.0) -> AsyncIterator[Node]:
    """Run a node for ``core`` (listening on ``listen``, dialing ``peers``) for the block."""
    async with trio.open_nursery() as nursery:
        swarm = Swarm(core, nursery, request_timeout=request_timeout)
        node = Node(swarm, nursery)
        try:
            if listen is not None:
                await node.listen(listen)
            for address in peers:
                node.connect(address)
            yield node
        finally:
            swarm.close()
            nursery.cancel_scope.cancel()
