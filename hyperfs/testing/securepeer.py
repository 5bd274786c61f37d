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
        self.events: list[Event] = []

    async def send(self, inner: bytes) -> None:
        """Seal ``inner`` (1.x frames built with :attr:`conn`) and send it."""
        await self.stream.send_all(self.session.seal(inner))

    async def receive(self) -> bytes:
        """The next opened bytes from the victim; b"" once it has closed (or reset)."""
        while True:
            try:
                data = await self.stream.receive_some(1 << 16)
            except trio.BrokenResourceError:
                return b""
            if not data:
                return b""
            inner = b"".join(self.session.open(bytes(data)))
            if inner:
                self.events += self.conn.receive_data(inner)
                return inner


async def open_secure_peer(port: int, extensions: tuple[str, ...] = ()) -> SecurePeer:
    """Connect to 127.0.0.1:``port`` and complete the encrypted greeting."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
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
        peer.events += conn.receive_data(leftover)
    return peer
