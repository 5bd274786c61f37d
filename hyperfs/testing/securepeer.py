"""A raw encrypted peer: hyperfs's own greeting and Connection, driven by hand.

For attacks from inside an encrypted connection (a peer that guesses capabilities, opens
thousands of random discovery keys): it completes the handshakes like any hyperfs peer
and then sends whatever the test builds, sealed, and reads back what the victim says.
"""

from __future__ import annotations

import os

import trio

from hyperfs.replication.secure import greet
from hyperfs.wire.capabilities import Capabilities
from hyperfs.wire.connection import Connection
from hyperfs.wire.events import Event
from hyperfs.wire.noise import KeyPair
from hyperfs.wire.secure import SECURE, Greeting, Session

__all__ = ["SecurePeer", "open_secure_peer"]


class SecurePeer:
    """An encrypted connection to a hyperfs node, its Connection in capability mode."""

    def __init__(self, stream: trio.SocketStream, conn: Connection, session: Session,
                 capabilities: Capabilities, known: dict[bytes, bytes]) -> None:
        self.stream = stream
        self.conn = conn
        self.session = session
        self.capabilities = capabilities
        """This connection's capabilities: ``ours(id)`` proves an id we know."""
        self.known = known
        """Discovery key -> feed id of the feeds this peer knows (add to it)."""
        self.first: list[Event] = []
        """What came with the end of the greeting (hand it on before :meth:`receive`)."""

    async def send(self, inner: bytes) -> None:
        """Seal ``inner`` (1.x frames built with :attr:`conn`) and send it."""
        await self.stream.send_all(self.session.seal(inner))

    async def receive(self) -> list[Event] | None:
        """What the victim said in its next bytes; None once it has closed (or reset)."""
        try:
            data = await self.stream.receive_some(1 << 18)
        except trio.BrokenResourceError:
            return None
        if not data:
            return None
        return [event for piece in self.session.open(bytes(data))
                for event in self.conn.receive_data(piece)]


async def open_secure_peer(port: int, extensions: tuple[str, ...] = (),
                           host: str = "127.0.0.1") -> SecurePeer:
    """Connect to ``host``:``port`` and complete the encrypted greeting."""
    stream = await trio.open_tcp_stream(host, port)
    conn = Connection(os.urandom(32), [SECURE, *extensions])
    greeting = Greeting(conn.start(), KeyPair.generate())
    known: dict[bytes, bytes] = {}
    greeted = await greet(stream, greeting, conn, known.get, 1 << 16)
    session = greeting.session
    if greeted is None or session is None:
        raise ConnectionError("the node closed, or did not encrypt")
    _handshake, leftover = greeted
    capabilities = Capabilities(session.handshake_hash, session.initiator, known.get)
    peer = SecurePeer(stream, conn, session, capabilities, known)
    if leftover:
        peer.first = conn.receive_data(leftover)
    return peer
