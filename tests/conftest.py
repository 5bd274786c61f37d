"""Shared pytest set-up for hyperfs's tests (the helpers themselves are hyperfs.testing)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Every hyperfs process a test starts refuses settings that could send packets beyond
# loopback (public DHT routers, mDNS on real interfaces): tests stay on this machine.
os.environ["HYPERFS_LOCAL_ONLY"] = "1"

from hyperfs.testing import discovery, procs, zeroconf
from hyperfs.testing.mounts import Mounts
from hyperfs.testing.requirements import (
    FUSE,
    JS_PEER,
    fuse_available,
    js_available,
    missing,
    require,
)


@pytest.fixture(autouse=True, scope="session")
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Mounts write pid files and daemon logs under $XDG_STATE_HOME: keep the tests' out
    of the user's own state directory."""
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("state"))

zeroconf.install()  # tests run mDNS on free ports, never on the real 5353


@pytest.fixture(autouse=True)
def _js_peers_cleanup() -> Iterator[None]:
    """End every process a test started through hyperfs.testing.procs (JS peers, hyperfs
    commands), by PID, even when the test failed."""
    yield
    procs.terminate_all()


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Mounts]:
    """Real `hyperfs mount` processes (hyperfs.testing.mounts), every one unmounted when
    the test ends, also when it failed."""
    require(fuse_available(), FUSE)
    started = Mounts(tmp_path)
    yield started
    started.cleanup()


@pytest.fixture
def requires_js() -> None:
    """Skip a test when node or the hypercore 1.8.0 reference is not installed (and fail
    it in CI, where scripts/setup.sh must have installed them)."""
    require(js_available(), JS_PEER)


@pytest.fixture
def netns_pair() -> Iterator[tuple[discovery.Namespace, discovery.Namespace]]:
    """Two network namespaces joined by a veth pair (see hyperfs.testing.discovery);
    skips the test where they cannot be made (needs root + iproute2)."""
    with contextlib.ExitStack() as stack:
        try:
            namespaces = stack.enter_context(discovery.netns_pair())
        except discovery.NamespacesUnavailable as exc:
            missing(str(exc))
        yield namespaces
