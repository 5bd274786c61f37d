"""Start-up: each `hyperfs` command imports only what it uses.

Every import costs every invocation its start-up time (a whole `serve` -> `cat` of 256 MiB
took ~0.4 s of its ~2 s in imports): `hyperfs cat` from a peer must not load the
filesystem (pyfuse3), nor discovery's modules (libtorrent, zeroconf) when discovery is
off. Checked in a real
process running the command to its end, by the modules it holds when done.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

from hyperfs.testing.mounts import HYPERFS, run
from hyperfs.testing.network import start_serve

LOCAL = ("--no-dht", "--no-mdns")
UNUSED_BY_CAT = ("pyfuse3", "hyperfs.fs", "hyperfs.cli.mount", "hyperfs.cli.daemon",
                 "hyperfs.cli.live", "hyperfs.net.discovery", "hyperfs.net.node_discovery",
                 "libtorrent", "zeroconf",
                 # ~35 ms each: tqdm (off a terminal), importlib.metadata (crc32c's and
                 # tqdm's __init__ import it: see hyperfs.base.checksum)
                 "tqdm", "importlib.metadata")

MODULES_AFTER = """
import json, sys
from hyperfs.cli.main import main
status = main(sys.argv[1:])
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
sys.exit(status)
"""


def _modules_of(*argv: str | Path) -> tuple[bytes, set[str]]:
    """Standard output of ``hyperfs ARGV`` run to its end, and the modules it imported."""
    done = subprocess.run([sys.executable, "-c", MODULES_AFTER, *map(str, argv)],
                          capture_output=True, timeout=60, check=True)
    return done.stdout, set(json.loads(done.stderr.decode().splitlines()[-1]))


def _unused(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in UNUSED_BY_CAT
                  or any(m == u or m.startswith(u + ".") for u in UNUSED_BY_CAT))


def test_cat_from_a_peer_imports_neither_the_filesystem_nor_discovery(tmp_path: Path) -> None:
    data = secrets.token_bytes(50_000)
    (tmp_path / "file").write_bytes(data)
    feed_id = run(HYPERFS, "--db", tmp_path / "seed", "add", "--block-size", "4096",
                  tmp_path / "file").stdout.decode().strip()
    server, port = start_serve(tmp_path / "seed", *LOCAL)
    try:
        out, modules = _modules_of("--db", tmp_path / "fetch", "cat", feed_id, "--peer",
                                   f"127.0.0.1:{port}", *LOCAL)
    finally:
        server.terminate()
    assert out == data
    assert "hyperfs.replication.swarm" in modules  # (it did go through the network)
    assert _unused(modules) == []
    # the same command stored the feed: a local cat, no peer, imports no more
    out, modules = _modules_of("--db", tmp_path / "fetch", "cat", feed_id, *LOCAL)
    assert out == data
    assert _unused(modules) == []


UNUSED_BY_ADD = ("hyperfs.net.node", "hyperfs.replication", "hyperfs.wire")


def test_add_imports_no_network(tmp_path: Path) -> None:
    """`hyperfs add` stores a file: neither the node, replication nor the wire (~35 ms),
    and nothing `cat` leaves out either."""
    (tmp_path / "file").write_bytes(secrets.token_bytes(50_000))
    out, modules = _modules_of("--db", tmp_path / "db", "add", tmp_path / "file")
    assert len(out.strip()) == 64  # (it did add: the id)
    assert _unused(modules) == []
    assert sorted(m for m in modules
                  if any(m == u or m.startswith(u + ".") for u in UNUSED_BY_ADD)) == []


def test_help_of_every_command_still_loads_its_arguments() -> None:
    """The parser is built lazily; each command's --help still shows its own options (and
    the DHT's default routers, looked up only then)."""
    cat = run(HYPERFS, "cat", "--help").stdout.decode()
    assert "--peer HOST:PORT" in cat and "router.bittorrent.com:6881" in cat
    mount = run(HYPERFS, "mount", "--help").stdout.decode()
    assert "--cache-max-size" in mount and "--daemon" in mount
    top = run(HYPERFS, "--help").stdout.decode()
    assert "umount" in top and "unmount a hyperfs mount" in top
    unknown = run(HYPERFS, "nosuch", check=False)
    assert unknown.returncode == 2 and b"invalid choice: 'nosuch'" in unknown.stderr
