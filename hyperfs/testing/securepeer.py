"""A raw encrypted peer: hyperfs's own greeting and Connection, driven by hand.

For attacks from inside an encrypted connection (a peer that guesses capabilities, opens
thousands of random discovery keys): it completes the handshakes like any hyperfs peer
and then sends whatever the test builds, sealed, and reads back what the victim says.
"""

from __future__ import annotations

import os

import trio

from hyperfs.replication.secure import greet
from hyperfs.testing.network import RawPeer
from hyperfs.wire.capabilities import Capabilities, discovery_key
from hyperfs.wire.connection import Connection
from hyperfs.wire.events import Event
from hyperfs.wire.noise import KeyPair
from hyperfs.wire.secure import SECURE, Greeting, Session

__all__ = ["SecurePeer", "open_secure_peer"]


class SecurePeer(RawPeer):
    """A :class:`RawPeer` whose bytes are sealed: an encrypted connection to a hyperfs
    node, its Connection in capability mode. What came with the end of the greeting is
    already in :attr:`events`."""

    def __init__(self, stream: trio.SocketStream, conn: Connection, session: Session,
                 capabilities: Capabilities, known: dict[bytes, bytes]) -> None:
        super().__init__(stream)
        self.conn = conn
        self.session = session
        self.capabilities = capabilities
        """This connection's capabilities: ``ours(id)`` proves an id we know."""
        self.known = known
        """Discovery key -> feed id of the feeds this peer knows (add to it)."""

    def know(self, feed_id: bytes) -> None:
        """Let this peer open ``feed_id``'s channel (by its discovery key)."""
        self.known[discovery_key(feed_id)] = feed_id

    async def send(self, data: bytes) -> None:
        """Seal ``data`` (1.x frames built with :attr:`conn`) and send it."""
        await self.stream.send_all(self.session.seal(data))

    def decode(self, data: bytes) -> list[Event]:
        return [event for piece in self.session.open(data)
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
        peer.events = conn.receive_data(leftover)
    return peer
