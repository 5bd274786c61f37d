"""Shared pytest set-up for hyperfs's tests (the helpers themselves are hyperfs.testing)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

# Every hyperfs process a test starts refuses settings that could send packets beyond
# loopback (public DHT routers, mDNS on real interfaces): tests stay on this machine.
os.environ["HYPERFS_LOCAL_ONLY"] = "1"

from hyperfs.testing import discovery, jsref, procs, zeroconf

zeroconf.install()  # tests run mDNS on free ports, never on the real 5353


@pytest.fixture(autouse=True)
def _js_peers_cleanup() -> Iterator[None]:
    """End every process a test started through hyperfs.testing.procs (JS peers, hyperfs
    commands), by PID, even when the test failed."""
    yield
    procs.terminate_all()


@pytest.fixture
def requires_js() -> None:
    """Skip a test when node or the hypercore 1.8.0 reference is not installed."""
    if not jsref.JS_AVAILABLE:
        pytest.skip("node + tests/js/node_modules (scripts/setup.sh) needed for JS interop")


@pytest.fixture
def netns_pair() -> Iterator[tuple[discovery.Namespace, discovery.Namespace]]:
    """Two network namespaces joined by a veth pair (see hyperfs.testing.discovery);
    skips the test where they cannot be made (needs root + iproute2)."""
    with contextlib.ExitStack() as stack:
        try:
            namespaces = stack.enter_context(discovery.netns_pair())
        except discovery.NamespacesUnavailable as exc:
            pytest.skip(str(exc))
        yield namespaces
