"""Discovery end to end: real `hyperfs serve` and `hyperfs cat` processes that know only a
feed id and how to reach a private DHT (libtorrent nodes on 127.0.0.x started here), or
that share a link between two network namespaces created here (mDNS alone).

Nothing leaves 127.0.0.0/8 or those namespaces: every process gets ``--bootstrap`` with
private nodes and ``--no-mdns`` or namespace-only mDNS, and runs with HYPERFS_LOCAL_ONLY=1,
which makes any other configuration an error before a packet is sent (see
:func:`hyperfs.cli.network.check_local_only`, tested below on the parsed defaults).

Waits are bounded by HANG, generous on purpose (a loaded machine is slow): they catch a
hang. How fast discovery is belongs to the benchmarks; only "not before a round" is a
behaviour, and is checked.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from hyperfs.cli.main import build_parser
from hyperfs.cli.network import LOCAL_ONLY_ENV, check_local_only, discovery_config
from hyperfs.feeds.core import open_core
from hyperfs.net.discovery import DhtOptions, MdnsOptions
from hyperfs.net.discovery.dht import PUBLIC_ROUTERS, DhtNode, session_settings
from hyperfs.net.discovery.keys import discovery_key
from hyperfs.net.node import BlockTimeout, open_node
from hyperfs.net.node_discovery import DiscoveryConfig
from hyperfs.testing.discovery import FAST, assert_private, private_dht
from hyperfs.testing.discovery import free_udp_port as _free_udp_port
from hyperfs.testing.mounts import Mounts
from hyperfs.testing.requirements import fuse_available, require
from hyperfs.testing.seeds import seeded_random

HYPERFS = str(Path(sys.executable).with_name("hyperfs"))
ENV = {**os.environ, LOCAL_ONLY_ENV: "1"}
HANG = 60  # seconds before a wait counts as hung (a round, a --timeout, process start-up)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["--db", "/nonexistent", *argv])


# -- configuration: the defaults are public, test settings never are ---------------------


def test_defaults_are_public_and_refused_when_local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOCAL_ONLY_ENV, raising=False)
    for command in (["serve"], ["cat", "00" * 32]):
        config = discovery_config(parse(*command))
        assert config is not None and config.dht is not None and config.mdns is not None
        assert config.dht.routers == PUBLIC_ROUTERS  # documented production default
        assert config.mdns.interfaces == ()  # every interface
        with pytest.raises(ValueError, match="public routers"):
            check_local_only(config)
        monkeypatch.setenv(LOCAL_ONLY_ENV, "1")
        with pytest.raises(ValueError, match=LOCAL_ONLY_ENV):
            discovery_config(parse(*command))
        monkeypatch.delenv(LOCAL_ONLY_ENV)
    serve = discovery_config(parse("serve"))
    assert serve is not None and serve.dht is not None
    assert (serve.dht.bind, serve.dht.port) == ("0.0.0.0", 3282)  # UDP beside TCP 3282


def test_test_settings_are_private(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCAL_ONLY_ENV, "1")
    config = discovery_config(parse("serve", "--listen", "127.0.0.9:0", "--no-mdns",
                                    "--bootstrap", "127.0.0.2:7000", "--seed-compat"))
    assert config is not None and config.dht is not None and config.mdns is None
    assert config.dht.routers == () and config.dht.bootstrap_nodes == (("127.0.0.2", 7000),)
    assert config.seed_compat and not config.dht.restrict_ips
    assert_private(session_settings(config.dht))
    mdns = discovery_config(parse("cat", "00" * 32, "--no-dht", "--mdns-interface",
                                  "127.0.0.1"))
    assert mdns is not None and mdns.dht is None and mdns.mdns is not None
    assert (mdns.mdns.interfaces, mdns.mdns.port) == (("127.0.0.1",), 5353)
    assert discovery_config(parse("cat", "00" * 32, "--no-dht", "--no-mdns")) is None


# -- helpers ------------------------------------------------------------------------------


def boot_args(nodes: list[DhtNode]) -> list[str]:
    return [arg for n in nodes for arg in ("--bootstrap", f"{n.address}:{n.port}")]


def run(*args: str | Path, ns: str | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    return subprocess.run([*prefix, HYPERFS, *map(str, args)], capture_output=True, env=ENV,
                          timeout=timeout, check=False)


def add_feed(db: Path, data: bytes, tmp: Path) -> str:
    source = tmp / f"data{len(data)}"
    source.write_bytes(data)
    result = run("--db", db, "add", source, "--block-size", "4096")
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


@asynccontextmanager
async def serving(db: Path, *args: str, ns: str | None = None) -> AsyncIterator[str]:
    """`hyperfs serve` until the block exits (SIGINT, then kill, by its own handle)."""
    prefix = ["ip", "netns", "exec", ns] if ns else []
    proc = await trio.lowlevel.open_process(
        [*prefix, HYPERFS, "--db", str(db), "serve", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(HANG):
            while b"\n" not in line:
                chunk = await proc.stdout.receive_some()
                if not chunk:
                    assert proc.stderr is not None
                    error = await proc.stderr.receive_some()
                    raise AssertionError(f"serve exited before listening: {error!r}")
                line += chunk
        assert line.startswith(b"listening on "), line
        yield line.split()[2].decode()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            with trio.move_on_after(10) as waited, trio.CancelScope(shield=True):
                await proc.wait()
            if waited.cancelled_caught:
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()


async def cat(*args: str | Path, ns: str | None = None) -> subprocess.CompletedProcess[bytes]:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    return await trio.run_process([*prefix, HYPERFS, *map(str, args)], capture_stdout=True,
                                  capture_stderr=True, env=ENV, check=False)


# -- DHT ---------------------------------------------------------------------------------


async def test_serve_and_cat_over_private_dht(tmp_path: Path) -> None:
    data = seeded_random().randbytes(50_000)
    feed = add_feed(tmp_path / "a", data, tmp_path)
    async with private_dht(["127.0.0.61", "127.0.0.62", "127.0.0.63"]) as boot:
        async with serving(tmp_path / "a", "--listen", "127.0.0.64:0", "--no-mdns",
                           *boot_args(boot[:1])):
            with trio.fail_after(HANG):  # success means each block came within --timeout
                got = await cat("--db", tmp_path / "b", "cat", feed, "--no-mdns",
                                "--dht-listen", "127.0.0.65:0", *boot_args(boot[2:]),
                                "--timeout", "10")
            assert got.returncode == 0, got.stderr
            assert got.stdout == data
            with trio.fail_after(HANG):  # the file is rewritten every STATUS_INTERVAL
                while True:
                    status = run("--db", tmp_path / "a", "status")
                    assert status.returncode == 0, status.stderr
                    text = status.stdout.decode()
                    if "(0 held announces)" not in text and " 0 nodes known" not in text:
                        break
                    await trio.sleep(0.5)
            assert "1 held" in text and "DHT 127.0.0.64:" in text, text
        # B stored the feed: it is served from B now, with A gone.
        assert run("--db", tmp_path / "b", "ls").stdout.split()[0].decode() == feed


async def test_mount_reads_a_feed_found_on_the_dht(tmp_path: Path) -> None:
    """B's mount knows only the id and the private DHT: reading the feed's file finds A."""
    require(fuse_available(), "FUSE (/dev/fuse and fusermount3)")
    data = seeded_random().randbytes(50_000)
    feed = add_feed(tmp_path / "a", data, tmp_path)
    mounts = Mounts(tmp_path)
    try:
        async with AsyncExitStack() as stack:
            boot = await stack.enter_async_context(
                private_dht(["127.0.0.91", "127.0.0.92", "127.0.0.93"]))
            await stack.enter_async_context(serving(
                tmp_path / "a", "--listen", "127.0.0.94:0", "--no-mdns", *boot_args(boot[:1])))
            args = ("--no-mdns", "--dht-listen", "127.0.0.95:0", *boot_args(boot[2:]),
                    "--timeout", "10")
            mounted = await trio.to_thread.run_sync(
                lambda: mounts.start(tmp_path / "b", None, *args, discovery=True))
            whole = mounted.mnt / feed / ".feed"
            with trio.fail_after(HANG):
                got = await trio.to_thread.run_sync(whole.read_bytes)
            assert got == data
    finally:
        await trio.to_thread.run_sync(mounts.cleanup)


async def test_cat_of_unknown_id_gives_up_after_a_round(tmp_path: Path) -> None:
    async with private_dht(["127.0.0.71", "127.0.0.72"]) as boot:
        start = trio.current_time()
        with trio.fail_after(HANG):
            got = await cat("--db", tmp_path / "b", "cat", "ab" * 32, "--no-mdns",
                            "--dht-listen", "127.0.0.73:0", *boot_args(boot), "--timeout", "1")
        elapsed = trio.current_time() - start
    assert got.returncode == 1 and got.stdout == b""
    message = got.stderr.decode()
    assert "one discovery round found none" in message and "nodes known" in message, message
    # Never before a whole round and the timeout (how much later is not a behaviour).
    assert 1 + DiscoveryConfig().dht_round <= elapsed, elapsed


async def test_node_holds_stored_feeds_and_caps_mdns(tmp_path: Path) -> None:
    """In process: held feeds are announced (paced) on the DHT and found by a stranger;
    mDNS advertises at most ``mdns_keys``, wanted feeds first."""
    mdns = MdnsOptions(interfaces=("127.0.0.1",), port=_free_udp_port(), refresh=0.5)
    async with open_core(tmp_path / "db") as core, private_dht(["127.0.0.81"]) as boot:
        ids = []
        for i in range(3):
            feed = core.add()
            await feed.append(b"block %d" % i)
            await feed.finalize()
            assert feed.id is not None
            ids.append(feed.id)
        dht = DhtOptions.private(bind="127.0.0.82", bootstrap_nodes=[(boot[0].address,
                                                                      boot[0].port)], **FAST)
        config = DiscoveryConfig(dht=dht, mdns=mdns, mdns_keys=2, hold_rate=50)
        async with open_node(core, discovery=config) as node:
            glue = node.discovery
            assert glue is not None and node.address is not None
            assert node.address[0] == "127.0.0.82"  # listens where the DHT announces
            found = trio.Event()

            def on_peer(key: bytes, peer: tuple[str, int]) -> None:
                if key == discovery_key(ids[2]) and peer == node.address:
                    found.set()

            boot[0].add_listener(on_peer)
            boot[0].lookup(discovery_key(ids[2]))
            with trio.fail_after(HANG):
                await found.wait()
            assert glue.status()["held"] == 3 and glue.held_announces >= 3
            advertised = glue.disc.mdns._advertised  # type: ignore[union-attr]
            with trio.fail_after(HANG):
                while len(advertised) != 2:
                    await trio.sleep(0.05)
            wanted = seeded_random().randbytes(32)
            with core.get(wanted) as want:
                with trio.fail_after(HANG):  # the wanted key takes a held one's place
                    while discovery_key(wanted) not in advertised or len(advertised) != 2:
                        await trio.sleep(0.05)
                found_by = node.status()["discovery"]
                assert isinstance(found_by, dict)
                assert found_by["feeds"][wanted.hex()]["mode"] == "want"
                with trio.fail_after(HANG), pytest.raises(BlockTimeout, match="no peer has it"):
                    await node.get(want, 0, 0.1)


# -- mDNS between two network namespaces ---------------------------------------------------


@pytest.fixture
def feed_db(tmp_path: Path) -> Iterator[tuple[Path, str, bytes]]:
    data = seeded_random().randbytes(20_000)
    yield tmp_path / "a", add_feed(tmp_path / "a", data, tmp_path), data


async def test_mdns_alone_between_namespaces(
    netns_pair: tuple[tuple[str, str], tuple[str, str]],
    feed_db: tuple[Path, str, bytes], tmp_path: Path,
) -> None:
    (ns_a, addr_a), (ns_b, addr_b) = netns_pair
    db, feed, data = feed_db
    async with serving(db, "--listen", f"{addr_a}:0", "--no-dht", ns=ns_a):
        with trio.fail_after(HANG):
            got = await cat("--db", tmp_path / "b", "cat", feed, "--no-dht",
                            "--mdns-interface", addr_b, "--timeout", "10", ns=ns_b)
    assert got.returncode == 0, got.stderr
    assert got.stdout == data
