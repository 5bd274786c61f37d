"""A connection's start over a trio Stream: the greeting (``wire.secure``), then its result.

The peer runs :func:`greet` before anything else; what it gets back says whether the
connection is encrypted (a ``Session`` through which it then seals and opens every byte)
or plain hypercore 1.x (a JS peer). The node key that authenticates us is the database's
own (:func:`node_keypair`), never a feed's: it says "the same machine as last time", and
nothing about what it stores.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import trio

from hyperfs.base.keyfile import load_or_create_keypair
from hyperfs.wire.capabilities import Capabilities
from hyperfs.wire.connection import Connection
from hyperfs.wire.events import HandshakeReceived
from hyperfs.wire.noise import KeyPair
from hyperfs.wire.secure import Greeting

__all__ = ["NODE_KEY_FILE", "greet", "node_keypair"]

NODE_KEY_FILE = "node.key"
"""The node key's file in a database directory (``base.keyfile``: mode 0600)."""


def node_keypair(directory: str | os.PathLike[str]) -> KeyPair:
    """The node key of the database in ``directory``, made on first use."""
    secret, public = load_or_create_keypair(Path(directory) / NODE_KEY_FILE)
    return KeyPair(secret, public)


async def greet(stream: trio.abc.Stream, greeting: Greeting, conn: Connection,
                resolve: Callable[[bytes], bytes | None],
                receive_size: int) -> tuple[HandshakeReceived, bytes] | None:
    """Exchange the handshakes: the remote's (from ``conn``, which from now on opens
    channels by capability if the greeting made a session, ``resolve`` finding ids by
    discovery key) and the bytes that arrived after them (opened, if encrypted).

    ProtocolError for a bad or tampered handshake; None if the remote closed first. The
    caller's deadlines bound the wait (the handshake's).
    """
    await stream.send_all(greeting.start())
    while not greeting.done:
        data = await stream.receive_some(receive_size)
        if not data:
            return None
        reply = greeting.receive_data(bytes(data))
        if reply:
            await stream.send_all(reply)
    session = greeting.session
    if session is not None:
        conn.use_capabilities(Capabilities(session.handshake_hash, session.initiator, resolve))
    assert greeting.remote_hello is not None
    [handshake] = conn.receive_data(greeting.remote_hello)
    assert isinstance(handshake, HandshakeReceived)
    return handshake, greeting.leftover()
