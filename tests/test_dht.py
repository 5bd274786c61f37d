"""DHT discovery on a private libtorrent DHT bound to 127.0.0.x (never the public DHT).

Every node is created with ``DhtOptions.private``: no routers, LSD/UPnP/NAT-PMP off; the
tests assert this on the configuration and on the live sessions. The waits are bounded by
HANG (generous on purpose: a loaded machine is slow, and speed is the benchmarks' business).
"""

from __future__ import annotations

import trio

from hyperfs.net.discovery import DhtOptions, open_discovery
from hyperfs.net.discovery.dht import PUBLIC_ROUTERS, session_settings
from hyperfs.net.discovery.keys import discovery_key, seed_info_hash
from hyperfs.testing.discovery import FAST, assert_private, private_dht
from hyperfs.testing.seeds import seeded_random

HANG = 30  # seconds before a wait counts as hung


def test_default_options_are_public_but_private_ones_are_not() -> None:
    public = session_settings(DhtOptions())
    for host, port in PUBLIC_ROUTERS:
        assert f"{host}:{port}" in public["dht_bootstrap_nodes"]
    assert public["enable_lsd"] is False  # LSD is never wanted, even in production
    assert_private(session_settings(DhtOptions.private(bind="127.0.0.9")))


async def test_announce_then_lookup_finds_peer() -> None:
    hosts = [f"127.0.0.{i}" for i in range(2, 7)]
    async with private_dht(hosts) as nodes:
        a, b = nodes[0], nodes[-1]  # b knows only 127.0.0.5 and 127.0.0.4
        info_hash = seeded_random().randbytes(20)  # where it lands decides the route
        found = trio.Event()
        peers: list[tuple[str, int]] = []

        def on_peer(h: bytes, peer: tuple[str, int]) -> None:
            if h == info_hash:
                peers.append(peer)
                found.set()

        b.add_listener(on_peer)
        a.announce(info_hash, 4242)
        b.lookup(info_hash)
        with trio.fail_after(HANG):
            await found.wait()
        assert ("127.0.0.2", 4242) in peers
        stats_a, stats_b = await a.refresh_stats(), await b.refresh_stats()
        assert stats_a["announces"] >= 1 and stats_b["lookups"] >= 1
        assert stats_b["nodes"] >= 1
        assert stats_b["peers_found"][info_hash.hex()] == 1


async def test_open_discovery_over_dht() -> None:
    """Two Discovery objects find each other for a feed; never themselves; no repeats."""
    feed = bytes(range(32))
    async with private_dht(["127.0.0.10", "127.0.0.11", "127.0.0.12"]) as boot:
        seeds = ((boot[0].address, boot[0].port), (boot[1].address, boot[1].port))

        def opts(host: str) -> DhtOptions:
            return DhtOptions.private(bind=host, bootstrap_nodes=seeds, **FAST)

        async with (
            open_discovery(7100, host="127.0.0.13", dht=opts("127.0.0.13")) as holder,
            open_discovery(7100, host="127.0.0.14", dht=opts("127.0.0.14")) as wanter,
        ):
            assert_private(holder.dht.settings())  # type: ignore[union-attr]
            holder.hold(feed)
            holder.want(feed)  # holder also looks: it must find wanter, not itself
            wanter.want(feed)
            got_w, got_h = wanter.peers(), holder.peers()
            with trio.fail_after(HANG):
                assert await got_w.receive() == (feed, ("127.0.0.13", 7100))
                assert await got_h.receive() == (feed, ("127.0.0.14", 7100))
            # Both keep re-querying; the same peer is not reported again within backoff
            # (60 s by default: 1 s of silence has a wide margin, and slowness cannot
            # make a report appear).
            with trio.move_on_after(1.0):
                extra = await got_w.receive()
                raise AssertionError(f"reported again within backoff: {extra}")
            status = wanter.status()
            assert status["feeds"][feed.hex()] == {"mode": "want", "peers_found": 1, "reported": 1}
            assert status["suppressed_duplicates"] >= 1
            assert status["dht"]["nodes"] >= 1
            assert holder.status()["ignored_self"] >= 1
            assert discovery_key(feed).hex() in status["dht"]["peers_found"]
            wanter.forget(feed)
            assert wanter.status()["feeds"] == {}


async def test_seed_compat_finds_original_style_announce() -> None:
    """With seed_compat, feed_id[:20] (what the JS implementation announces) is looked up."""
    feed = bytes.fromhex("e1a31bb8716f0a0487377e22dbc7f0491fb47a712ac21519792a4e32cf56fb6f")
    async with private_dht(["127.0.0.20", "127.0.0.21", "127.0.0.22"]) as nodes:
        nodes[0].announce(seed_info_hash(feed), 3282)  # an "original" peer
        seeds = ((nodes[1].address, nodes[1].port),)
        options = DhtOptions.private(bind="127.0.0.23", bootstrap_nodes=seeds, **FAST)
        async with open_discovery(7200, dht=options, seed_compat=True) as disc:
            disc.want(feed)
            with trio.fail_after(HANG):
                assert await disc.peers().receive() == (feed, ("127.0.0.20", 3282))
