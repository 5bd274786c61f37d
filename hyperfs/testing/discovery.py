"""Private discovery for the tests: DHT nodes that cannot talk beyond loopback, free UDP
ports for mDNS, and two network namespaces joined by a veth pair (the only place where
multicast leaves loopback: interfaces that exist only inside the test)."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

from hyperfs.net.discovery import DhtOptions
from hyperfs.net.discovery.dht import DhtNode, open_dht, session_settings

FAST: dict[str, Any] = {"initial_retry": 0.2, "stats_interval": 0.5}
"""DHT timings for tests: retry and report quickly."""

Namespace = tuple[str, str]
"""A network namespace's name and its address on the veth link."""


def assert_private(settings: Mapping[str, Any]) -> None:
    """Nothing in ``settings`` can make libtorrent talk outside 127.0.0.0/8."""
    assert settings["dht_bootstrap_nodes"] == ""
    assert settings["enable_lsd"] is False
    assert settings["enable_upnp"] is False
    assert settings["enable_natpmp"] is False
    for endpoint in settings["listen_interfaces"].split(","):
        host = endpoint.rsplit(":", 1)[0].strip("[]")
        assert ipaddress.ip_address(host).is_loopback, endpoint


@asynccontextmanager
async def private_dht(hosts: list[str]) -> AsyncIterator[list[DhtNode]]:
    """A private DHT: node i knows nodes i-1 and i-2; the first node knows the last."""
    async with AsyncExitStack() as stack:
        nodes: list[DhtNode] = []
        for host in hosts:
            known = [(n.address, n.port) for n in nodes[-2:]]
            options = DhtOptions.private(bind=host, bootstrap_nodes=known, **FAST)
            assert_private(session_settings(options))
            nodes.append(await stack.enter_async_context(open_dht(options)))
        nodes[0].add_node(nodes[-1].address, nodes[-1].port)
        for node in nodes:
            assert_private(node.settings())  # what the live session really uses
        yield nodes


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago (for an mDNS port of a test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NamespacesUnavailable(RuntimeError):
    """Network namespaces cannot be made here (needs root and iproute2)."""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextmanager
def netns_pair() -> Iterator[tuple[Namespace, Namespace]]:
    """Namespaces A and B with a veth link 10.77.0.1/24 <-> 10.77.0.2/24; removed after."""
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b = f"hfsd{tag}a", f"hfsd{tag}b"
    created: list[str] = []
    try:
        try:
            _ip("netns", "add", ns_a)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or exc
            raise NamespacesUnavailable(f"cannot create network namespaces: {detail}") from exc
        created.append(ns_a)
        _ip("netns", "add", ns_b)
        created.append(ns_b)
        _ip(*f"link add v{tag}a netns {ns_a} type veth peer name v{tag}b netns {ns_b}".split())
        for ns, dev, addr in ((ns_a, f"v{tag}a", "10.77.0.1"), (ns_b, f"v{tag}b", "10.77.0.2")):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield (ns_a, "10.77.0.1"), (ns_b, "10.77.0.2")
    finally:
        for ns in created:  # deleting a namespace deletes its end of the veth pair
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
