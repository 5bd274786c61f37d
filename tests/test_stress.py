"""CI run of the stress script, plus the peer deadlines it relies on, one case each.

``scripts/stress.py --quick`` exercises every case of issue 6 at small scale (hostile
peers, fuzzing, SIGKILLs, vanishing seeders, a full disk, corruption, load, local
security) with real processes and mounts; here we only assert that every case held.
The tests below pin the deadlines added for it (handshake, slowloris message, peer cap)
against an in-process node, where the drop reason is visible directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import trio

from hyperfs import open_core
from hyperfs.net.node import open_node
from hyperfs.replication.peer import Peer
from hyperfs.testing import rawwire
from hyperfs.testing.jsref import js_encode
from hyperfs.wire.connection import Connection

ROOT = Path(__file__).resolve().parent.parent


def test_stress_quick_every_case_holds() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "stress.py"), "--quick",
                             "--json"], capture_output=True, timeout=170, check=False)
    report = json.loads(result.stdout)
    failed = [case for case in report["cases"] if not case["ok"]]
    assert not failed, json.dumps(failed, indent=1)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert len(report["cases"]) >= 30


def test_hand_built_bytes_are_what_the_reference_encodes(requires_js: None) -> None:
    """The stress suite's independent encoder (hyperfs.testing.rawwire) agrees with the JS
    reference's own schema encoder, so attacks built with it say what they claim."""
    peer, feed = os.urandom(32), os.urandom(32)
    js = js_encode([
        ("Handshake", {"protocol": "hypercore", "id": peer, "extensions": ["a", "b"]}),
        ("Handshake", {"protocol": "hypercore", "version": 1, "id": peer}),
        ("Join", {"channel": 3, "id": feed}),
        ("Request", {"channel": 300, "block": 2**40 + 5}),
    ])
    assert js[0] == rawwire.frames(rawwire.handshake(peer, ["b", "a"]))[0][0]
    assert js[1] == rawwire.frames(rawwire.handshake(peer, version=1))[0][0]
    assert bytes([rawwire.JOIN]) + js[2] == rawwire.frames(rawwire.join(3, feed))[0][0]
    assert bytes([rawwire.REQUEST]) + js[3] == rawwire.frames(
        rawwire.request(300, 2**40 + 5))[0][0]
    (payload,), rest = rawwire.frames(rawwire.join(3, feed) + b"\x05")
    assert dict(rawwire.fields(payload[1:])) == {1: 3, 2: feed} and rest == b"\x05"


async def _closed_peer(node_peers: set[Peer], before: set[Peer]) -> Peer:
    """The one peer that appeared since ``before``, once it has closed. (Its 'peer' event
    comes only after a handshake, so we poll the swarm's set, bounded by the caller.)"""
    while True:
        new = [p for p in node_peers if p not in before]
        if new:
            break
        await trio.sleep(0.01)
    (peer,) = new
    await peer.closed.wait()
    return peer


async def test_handshake_and_message_deadlines(tmp_path: Path) -> None:
    async with open_core(tmp_path / "db") as core, \
            open_node(core, listen="127.0.0.1:0", handshake_timeout=0.5,
                      message_timeout=0.5) as node:
        assert node.address is not None
        port = node.address[1]
        peers = node.swarm.peers
        with trio.fail_after(10):
            before = set(peers)  # silent after connecting: no handshake
            silent = await trio.open_tcp_stream("127.0.0.1", port)
            started = trio.current_time()
            peer = await _closed_peer(peers, before)
            assert peer.close_reason == "no handshake within 0.5 s"
            assert trio.current_time() - started < 3
            before = set(peers)  # a handshake, then half a message that never completes
            slow = await trio.open_tcp_stream("127.0.0.1", port)
            conn = Connection(os.urandom(32))
            await slow.send_all(conn.start() + conn.join(os.urandom(32))[:5])
            peer = await _closed_peer(peers, before)
            assert peer.close_reason == "a message took longer than 0.5 s to arrive"
        await silent.aclose()
        await slow.aclose()


async def test_peer_cap_refuses_connections_beyond_it(tmp_path: Path) -> None:
    async with open_core(tmp_path / "db") as core, \
            open_node(core, listen="127.0.0.1:0") as node:
        assert node.address is not None
        node.max_peers = 3
        streams = [await trio.open_tcp_stream("127.0.0.1", node.address[1])
                   for _ in range(5)]
        with trio.fail_after(10):
            while node.refused < 2:  # the last two are closed at accept
                await trio.sleep(0.01)
            for stream in streams[3:]:
                assert await stream.receive_some(10) == b""
        assert len(node.swarm.peers) == 3
        for stream in streams:
            await stream.aclose()
