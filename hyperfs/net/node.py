"""A node on the network: a swarm plus TCP listening, dialing and reconnecting.

``open_node`` is what the CLI and the filesystem run: it serves every stored feed to
whoever names it and fetches what local readers want from every connected peer. Dialed
addresses are redialed with exponential back-off for as long as the node runs.

With a :class:`~hyperfs.net.node_discovery.DiscoveryConfig`, the node also finds its peers
on the DHT and the local network (:mod:`hyperfs.net.node_discovery`): it announces its
listening port for every feed it holds or wants, and dials (once, not redialing) every peer
found for a feed it wants. Discovery needs a port to announce, so a node without ``listen``
then listens on an ephemeral port of the DHT's address: a reader is also a seed while it
runs, which is what lets two readers of the same feed help each other.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

import trio

from hyperfs.feeds.core import Core
from hyperfs.feeds.feed import Feed
from hyperfs.net.address import Address, parse_address
from hyperfs.replication.swarm import Swarm

if TYPE_CHECKING:  # (imported when used: a node without discovery never loads its modules)
    from hyperfs.net.node_discovery import DiscoveryConfig, NodeDiscovery

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 0.25, 30.0
MAX_PEERS = 512
"""Connections at once; more are closed as they are accepted. With the handshake
timeout, this bounds what a flood of connections can hold (each peer may keep about
``peer.HIGH_WATER`` of replies queued: ~0.5 GiB at worst, ~10 MB when idle)."""


class BlockTimeout(TimeoutError):
    """No peer sent a block in time; the message says what discovery found."""


class Node:
    """A swarm with its listening socket and the addresses it keeps connected to."""

    def __init__(self, swarm: Swarm, nursery: trio.Nursery) -> None:
        self.swarm = swarm
        self.core = swarm.core
        self._nursery = nursery
        self.address: Address | None = None
        self._dialing: set[Address] = set()
        self.discovery: NodeDiscovery | None = None
        self.max_peers = MAX_PEERS
        self.refused = 0

    async def listen(self, address: str) -> Address:
        host, port = parse_address(address)
        serve = partial(trio.serve_tcp, self._accept, port, host=host)
        try:
            listeners = await self._nursery.start(serve)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
        sockname = listeners[0].socket.getsockname()
        self.address = (sockname[0], sockname[1])
        return self.address

    async def _accept(self, stream: trio.SocketStream) -> None:
        try:
            host, port = stream.socket.getpeername()[:2]
        except OSError:  # reset before we got to it
            await trio.aclose_forcefully(stream)
            return
        if len(self.swarm.peers) >= self.max_peers:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("refusing %s:%d: %d peers connected already (%d refused)",
                            host, port, len(self.swarm.peers), self.refused)
            await trio.aclose_forcefully(stream)
            return
        await self.swarm.replicate(stream, f"{host}:{port}")

    def connect(self, address: str | Address, *, redial: bool = True) -> None:
        """Keep a connection to ``address`` (redialed with back-off while the node runs)."""
        target = parse_address(address) if isinstance(address, str) else address
        if target in self._dialing or target == self.address:
            return
        self._dialing.add(target)
        self._nursery.start_soon(self._dial, target, redial)

    async def _dial(self, target: Address, redial: bool) -> None:
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

    async def get(self, feed: Feed, index: int, timeout: float | None) -> bytes | None:
        """``feed.get(index)``, failing with :class:`BlockTimeout` after ``timeout`` seconds.

        With discovery, the ``timeout`` starts once one discovery round for the feed is
        over (see :mod:`hyperfs.net.node_discovery`): a feed nobody is known to have is given up
        after a round plus ``timeout``, never sooner, and the error says what was found.
        """
        if timeout is None or feed.id is None or feed.has(index):
            return await feed.get(index, timeout=timeout)
        discovery = self.discovery
        if discovery is None or discovery.round_over(feed.id):
            try:
                return await feed.get(index, timeout=timeout)
            except TimeoutError:
                why = ("(is a peer that has it connected? see --peer, or turn discovery on)"
                       if discovery is None else f"({discovery.explain(feed.id)})")
                raise BlockTimeout(f"no peer sent block {index} of {feed.hex} within "
                                   f"{timeout:g} s {why}") from None
        result: list[bytes | None] = []
        async with trio.open_nursery() as nursery:
            async def fetch() -> None:
                result.append(await feed.get(index))
                nursery.cancel_scope.cancel()

            nursery.start_soon(fetch)
            await discovery.wait_round(feed.id)
            await trio.sleep(timeout)
            nursery.cancel_scope.cancel()
        if result:
            return result[0]
        raise BlockTimeout(f"block {index} of {feed.hex}: {discovery.explain(feed.id)} "
                           f"within {timeout:g} s after one discovery round")

    def status(self) -> dict[str, object]:
        status = self.swarm.status()
        status["listening"] = f"{self.address[0]}:{self.address[1]}" if self.address else None
        status["dialing"] = [f"{host}:{port}" for host, port in sorted(self._dialing)]
        status["discovery"] = self.discovery.status() if self.discovery is not None else None
        return status


@asynccontextmanager
async def open_node(core: Core, *, listen: str | None = None, peers: Sequence[str] = (),
                    request_timeout: float = 10.0, handshake_timeout: float = 10.0,
                    message_timeout: float = 60.0,
                    discovery: DiscoveryConfig | None = None, secure_only: bool = False,
                    encrypt: bool = True) -> AsyncIterator[Node]:
    """Run a node for ``core`` (listening on ``listen``, dialing ``peers``, discovering
    peers as ``discovery`` says) for the block. The timeouts, ``secure_only`` and
    ``encrypt`` are the swarm's."""
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        swarm = Swarm(core, nursery, request_timeout=request_timeout,
                      handshake_timeout=handshake_timeout, message_timeout=message_timeout,
                      secure_only=secure_only, encrypt=encrypt)
        node = Node(swarm, nursery)
        try:
            if discovery is not None and discovery.enabled:
                from hyperfs.net.node_discovery import open_node_discovery

                if listen is None:
                    listen = f"{_discovery_host(discovery) or '0.0.0.0'}:0"
                await node.listen(listen)
                assert node.address is not None
                host, port = node.address
                node.discovery = await stack.enter_async_context(open_node_discovery(
                    core, swarm, discovery, port=port, host=host,
                    connect=partial(node.connect, redial=False)))
            elif listen is not None:
                await node.listen(listen)
            for address in peers:
                node.connect(address)
            yield node
        finally:
            swarm.close()
            nursery.cancel_scope.cancel()


def _discovery_host(config: DiscoveryConfig) -> str | None:
    """The address a listener must have for what discovery announces to reach it: the
    DHT's (peers see our DHT packets' source), else mDNS's single interface, else any."""
    if config.dht is not None:
        return None if config.dht.bind in ("0.0.0.0", "::") else config.dht.bind
    if config.mdns is not None and len(config.mdns.interfaces) == 1:
        return config.mdns.interfaces[0]
    return None
