"""mDNS discovery: on loopback with a non-standard port, and between two network
namespaces joined by a veth pair (the only place multicast leaves loopback: interfaces
that exist only inside the namespaces this test creates).

Waits are bounded by HANG, generous on purpose: they catch a hang; speed is for benchmarks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trio

from hyperfs.net.discovery import DhtOptions, MdnsOptions, open_discovery
from hyperfs.net.discovery.keys import discovery_key
from hyperfs.net.discovery.mdns import (
    MAX_TXT_KEYS,
    MDNS_PORT,
    decode_keys,
    encode_keys,
    open_mdns,
)
from hyperfs.testing.discovery import free_udp_port
from hyperfs.testing.seeds import seeded_random
from hyperfs.testing.zeroconf import PortPatch as _PortPatch

ROOT = Path(__file__).resolve().parent.parent
PEER_SCRIPT = Path(__file__).resolve().parent / "discovery_mdns_peer.py"
HANG = 30  # seconds before a wait counts as hung


@pytest.fixture
def loopback() -> MdnsOptions:
    """mDNS bound to loopback only, on a free port instead of 5353."""
    return MdnsOptions(interfaces=("127.0.0.1",), port=free_udp_port(), refresh=0.5)


def test_txt_roundtrip_and_cap() -> None:
    rnd = seeded_random()  # the keys' bytes are what the TXT encoding must survive
    keys = [rnd.randbytes(20) for _ in range(MAX_TXT_KEYS + 5)]
    props = encode_keys(keys)
    assert all(len(k) + 1 + len(v) <= 255 for k, v in props.items())
    assert decode_keys({**props}) == frozenset(keys[:MAX_TXT_KEYS])
    short: dict[bytes, bytes | None] = {b"v": b"1", b"k0": b"short", b"kx": bytes(20)}
    assert decode_keys(short) == frozenset()
    assert decode_keys({b"v": b"2", b"k0": bytes(20)}) == frozenset()


async def test_loopback_announce_and_browse(loopback: MdnsOptions) -> None:
    key = seeded_random().randbytes(20)
    found = trio.Event()
    peers: list[tuple[str, int]] = []

    def on_peer(k: bytes, peer: tuple[str, int]) -> None:
        assert k == key
        peers.append(peer)
        found.set()

    async with (
        open_mdns(7301, loopback) as announcer,
        open_mdns(7302, loopback, on_peer=on_peer) as browser,
    ):
        assert _PortPatch._port == loopback.port
        announcer.advertise(key)
        browser.want(key)
        with trio.fail_after(HANG):
            await found.wait()
        assert peers[0] == ("127.0.0.1", 7301)
        assert browser.stats()["services_known"] == 1
        assert announcer.stats()["registered"] and announcer.stats()["advertised_keys"] == 1
    assert _PortPatch._port == MDNS_PORT  # zeroconf's defaults are restored


async def test_open_discovery_over_mdns(loopback: MdnsOptions) -> None:
    feed = seeded_random().randbytes(32)
    async with (
        open_discovery(7401, host="127.0.0.1", mdns=loopback) as holder,
        open_discovery(7402, host="127.0.0.1", mdns=loopback) as wanter,
    ):
        holder.hold(feed)
        wanter.want(feed)
        with trio.fail_after(HANG):
            assert await wanter.peers().receive() == (feed, ("127.0.0.1", 7401))
        status = wanter.status()
        assert status["mdns"]["wanted_keys"] == 1
        assert status["feeds"][feed.hex()]["peers_found"] == 1
        # The holder does not look for peers, so it reports none.
        assert holder.status()["feeds"][feed.hex()]["reported"] == 0


# -- two network namespaces joined by a veth pair ------------------------------------------


async def test_mdns_between_network_namespaces(
    netns_pair: tuple[tuple[str, str], tuple[str, str]],
) -> None:
    key = discovery_key(bytes(range(32)))
    procs: list[trio.Process] = []
    try:
        for (ns, addr), port in zip(netns_pair, (7501, 7502), strict=True):
            cmd = [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                str(PEER_SCRIPT),
                "--address",
                addr,
                "--port",
                str(port),
                "--key",
                key.hex(),
            ]
            procs.append(
                await trio.lowlevel.open_process(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT
                )
            )
        found: dict[int, tuple[str, int]] = {}

        async def read_first_peer(i: int, proc: trio.Process) -> None:
            assert proc.stdout is not None
            buf = b""
            while b'"peer"' not in buf:
                chunk = await proc.stdout.receive_some()
                assert chunk, f"peer {i} exited early: {buf!r}"
                buf += chunk
            line = next(x for x in buf.splitlines() if b'"peer"' in x)
            host, port = json.loads(line)["peer"]
            found[i] = (host, port)

        with trio.fail_after(HANG):
            async with trio.open_nursery() as nursery:
                for i, proc in enumerate(procs):
                    nursery.start_soon(read_first_peer, i, proc)
        assert found == {0: ("10.77.0.2", 7502), 1: ("10.77.0.1", 7501)}

        for proc in procs:  # ask them to exit: closing stdin ends their loop
            assert proc.stdin is not None
            await proc.stdin.aclose()
        with trio.fail_after(HANG):
            for proc in procs:
                assert await proc.wait() == 0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()  # only the processes started here, by their handle
                with trio.CancelScope(shield=True):
                    await proc.wait()


async def test_cancel_shuts_everything_down(loopback: MdnsOptions) -> None:
    """Cancelling the owner stops both mechanisms and leaves no worker behind (HANG
    catches a shutdown that never ends; how prompt it is, is not measured here)."""
    dht = DhtOptions.private(bind="127.0.0.30", initial_retry=0.2)
    with trio.fail_after(HANG):
        with trio.CancelScope() as scope:
            async with open_discovery(7601, dht=dht, mdns=loopback) as disc:
                disc.want(os.urandom(32))
                peers = disc.peers()
                assert disc.status()["mdns"]["registered"]
                scope.cancel()
                await trio.sleep_forever()
    assert scope.cancelled_caught
    assert not [t for t in threading.enumerate() if t.name.startswith("hyperfs-mdns")]
    assert _PortPatch._users == 0
    with pytest.raises(trio.EndOfChannel):
        peers.receive_nowait()  # subscriptions end when discovery closes
