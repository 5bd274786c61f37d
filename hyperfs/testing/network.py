"""Helpers for the network tests: feeds to replicate, `hyperfs` subprocesses, raw peers.

Everything here synchronises on something the other side says (a readiness line, a
protocol event, a closed stream) under a bounded timeout, never on a timer. Processes
started here are remembered so a fixture can end exactly those, by PID.
"""

from __future__ import annotations

import os
import queue
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Any

import trio

from hyperfs import open_core
from hyperfs.feeds.core import Core
from hyperfs.feeds.feed import Feed
from hyperfs.net.node import open_node
from hyperfs.replication.peer import Peer
from hyperfs.testing.procs import Watched
from hyperfs.wire.connection import Connection, ProtocolError
from hyperfs.wire.events import Event, ResponseReceived, Unpaused

_SCRIPT = Path(sys.executable).parent / "hyperfs"
HYPERFS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "hyperfs.cli"]
"""The `hyperfs` command of this environment."""
LOCAL_ONLY = ("--no-dht", "--no-mdns")
"""Network commands get these: peers come from --peer only, nothing leaves loopback."""
ENV = {**os.environ, "HYPERFS_LOCAL_ONLY": "1"}
"""Environment of every `hyperfs` we start: a configuration that could leave loopback is
an error in it, not traffic."""


def _command(args: Sequence[object]) -> list[str]:
    """The full command line; `cat`, `serve` and `pin` get discovery turned off."""
    words = [str(arg) for arg in args]
    if {"cat", "serve", "pin"} & set(words):
        words += LOCAL_ONLY
    return [*HYPERFS, *words]



def make_blocks(count: int, seed: int = 0, max_size: int = 3000) -> list[bytes]:
    """``count`` random blocks of odd, varied sizes (one of them empty), reproducibly."""
    rng = random.Random(seed)
    blocks = [rng.randbytes(rng.randrange(1, max_size) | 1) for _ in range(count)]
    blocks[min(3, count - 1)] = b""  # an empty block is a block too
    return blocks


async def store_feed(db: Path | Core, blocks: Sequence[bytes]) -> bytes:
    """Append ``blocks`` as a new feed in the database at ``db`` (or an open core)."""
    if isinstance(db, Core):
        feed = db.add()
        await feed.append(list(blocks))
        return await feed.finalize()
    async with open_core(db) as core:
        return await store_feed(core, blocks)


async def store_partial(core: Core, source: Core, feed_id: bytes, indexes: Sequence[int]) -> None:
    """Copy some blocks of a feed from a full copy in ``source``, verified as from a peer."""
    with source.hold(feed_id) as full, core.hold(feed_id) as part:
        for index in indexes:
            data = full.read_local(index)
            assert data is not None
            assert part.put(index, data, full.proof(index))


def copy_db(src: Path, dst: Path) -> Path:
    """A copy of a (closed) database directory."""
    shutil.copytree(src, dst)
    return dst


def local_blocks(feed: Feed) -> list[bytes | None]:
    """Every block of a feed as stored here (None where missing)."""
    return [feed.read_local(i) for i in range(feed.blocks or 0)]


# -------------------------------------------------------------------- hyperfs subprocesses


class HyperfsProcess(Watched):
    """A running ``hyperfs`` command whose stdout lines we can wait for."""

    def __init__(self, args: Sequence[str]) -> None:
        super().__init__(_command(args), env=ENV)

    def wait_line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """The next stdout line matching ``pattern`` (regex), waiting at most ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                line = self.next_line(deadline - time.monotonic())
                if line is None:
                    raise AssertionError(f"{self.args} exited ({self.proc.returncode}) "
                                         f"before printing {pattern!r}:\n{self.stderr}")
                match = re.search(pattern, line.decode(errors="replace").rstrip("\n"))
                if match:
                    return match
        except queue.Empty:
            raise AssertionError(f"{self.args} printed no {pattern!r} within {timeout} s:\n"
                                 f"{self.stderr}") from None


def start_serve(db: Path, *extra: str, timeout: float = 30) -> tuple[HyperfsProcess, int]:
    """``hyperfs --db DB serve --listen 127.0.0.1:0``, once it says where it listens."""
    proc = HyperfsProcess(["--db", str(db), "serve", "--listen", "127.0.0.1:0", *extra])
    try:
        match = proc.wait_line(r"^listening on ([\d.]+):(\d+)$", timeout)
    except BaseException:
        proc.terminate()
        raise
    assert match.group(1) == "127.0.0.1"
    return proc, int(match.group(2))


async def astart_serve(db: Path, *extra: str, timeout: float = 30) -> tuple[HyperfsProcess, int]:
    return await trio.to_thread.run_sync(lambda: start_serve(db, *extra, timeout=timeout))


Output = int | IO[bytes] | None


def run_hyperfs(*args: object, timeout: float = 60,
                stdout: Output = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    """Run a ``hyperfs`` command to its end (bounded), capturing its output (its stdout
    goes to ``stdout`` instead when given, e.g. a file for a large feed)."""
    return subprocess.run(_command(args), stdout=stdout, stderr=subprocess.PIPE,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False, env=ENV)


async def arun_hyperfs(*args: object, timeout: float = 60,
                       stdout: Output = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    """`run_hyperfs` for trio tests whose peers run in the same event loop."""
    with trio.fail_after(timeout):
        out: dict[str, Any] = ({"capture_stdout": True} if stdout == subprocess.PIPE
                               else {"stdout": stdout})
        return await trio.run_process(_command(args), capture_stderr=True, check=False,
                                      stdin=subprocess.DEVNULL, env=ENV, **out)


def assert_clean_error(result: subprocess.CompletedProcess[bytes], *words: str) -> str:
    """A failed command: exit 1, no traceback, a last stderr line naming ``words``."""
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 1, (result.returncode, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines, "no error message on stderr"
    assert all(line.startswith("hyperfs: ") for line in lines), err
    for word in words:
        assert word in lines[-1], (word, lines[-1])
    return lines[-1]


# -------------------------------------------------------------------- in-process peers


class PeerLog:
    """Every peer a core's swarm reports (its 'peer' event), with a way to wait for one."""

    def __init__(self, core: Core) -> None:
        self.peers: list[Peer] = []
        self._changed = trio.Event()
        self.unsubscribe = core.on("peer", self._on_peer)

    def _on_peer(self, peer: Peer) -> None:
        self.peers.append(peer)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[Peer], bool]) -> Peer:
        while True:
            for peer in self.peers:
                if predicate(peer):
                    return peer
            await self._changed.wait()

    def by_port(self, port: int) -> list[Peer]:
        return [p for p in self.peers if p.address and p.address.endswith(f":{port}")]


def have_all(blocks: int) -> bytes:
    """The bitfield of a peer that has all ``blocks`` blocks (most significant bit first)."""
    field = bytearray(b"\xff" * (blocks // 8))
    if blocks % 8:
        field.append((0xFF00 >> (blocks % 8)) & 0xFF)
    return bytes(field)


async def claim_all(stream: trio.SocketStream, source: Feed,
                    on_event: Callable[[Connection, Event], Awaitable[bytes]]) -> None:
    """Be a peer claiming all of ``source`` on ``stream`` (a fake or hostile seeder):
    handshake, Join, Have of every block and Unpause at once, then send whatever
    ``on_event`` returns for each event the remote sends, until it closes or breaks."""
    feed_id, blocks = source.id, source.blocks
    assert feed_id is not None and blocks is not None
    conn = Connection(os.urandom(32))
    out = bytearray(conn.start() + conn.join(feed_id))
    out += conn.have(feed_id, bitfield=have_all(blocks)) + conn.unpause(feed_id)
    try:
        while True:
            if out:
                await stream.send_all(bytes(out))
                out.clear()
            data = await stream.receive_some(1 << 16)
            if not data:
                return
            for event in conn.receive_data(data):
                out += await on_event(conn, event)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError):
        return


class RawPeer:
    """A hand-driven protocol endpoint over TCP: a sans-I/O Connection and a socket."""

    def __init__(self, stream: trio.SocketStream, extensions: Sequence[str] = ()) -> None:
        self.stream = stream
        self.conn = Connection(os.urandom(32), extensions)
        self.events: list[Event] = []
        self.bytes_in = 0
        self.eof = False

    @classmethod
    async def connect(cls, port: int, extensions: Sequence[str] = (),
                      handshake: bool = True) -> RawPeer:
        peer = cls(await trio.open_tcp_stream("127.0.0.1", port), extensions)
        if handshake:
            await peer.send(peer.conn.start())
        return peer

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive(self) -> list[Event]:
        """The events of the next chunk received ([] and ``eof`` set once it closed)."""
        try:
            data = await self.stream.receive_some(1 << 16)
        except trio.BrokenResourceError:  # reset by the remote: closed all the same
            data = b""
        if not data:
            self.eof = True
            return []
        self.bytes_in += len(data)
        events = self.decode(bytes(data))
        self.events.extend(events)
        return events

    def decode(self, data: bytes) -> list[Event]:
        """The events in bytes received (an encrypted peer opens them first)."""
        return self.conn.receive_data(data)

    async def until(self, predicate: Callable[[Event], bool]) -> Event:
        """Read until an event matches ``predicate``; AssertionError if the stream ends."""
        for event in self.events:
            if predicate(event):
                return event
        while True:
            for event in await self.receive():
                if predicate(event):
                    return event
            if self.eof:
                raise AssertionError(f"closed before the awaited event; got {self.events}")

    async def fetch_all(self, feed_id: bytes, count: int) -> list[ResponseReceived]:
        """Join ``feed_id``, wait for its Unpause, ask for blocks 0 .. count-1 in one write
        (the remote answers them in one go) and return the Responses up to the last."""
        await self.send(self.conn.join(feed_id))
        await self.until(lambda e: isinstance(e, Unpaused))
        await self.send(b"".join(self.conn.request(feed_id, i) for i in range(count)))
        await self.until(lambda e: isinstance(e, ResponseReceived) and e.block == count - 1)
        return [e for e in self.events if isinstance(e, ResponseReceived)]

    async def until_closed(self) -> None:
        """Read (and record) everything until the remote closes the connection."""
        while not self.eof:
            await self.receive()

    async def aclose(self) -> None:
        await self.stream.aclose()


async def served_responses(db: Path, blocks: Sequence[bytes], count: int | None = None,
                           timeout: float = 60) -> list[ResponseReceived]:
    """Store ``blocks`` as a feed of a new core at ``db``, serve it from a node on
    127.0.0.1, and ask a :class:`RawPeer` (no extensions: a hypercore 1.x peer) for its
    first ``count`` blocks (all by default) in one write: the Responses, in order."""
    async with open_core(db) as seeder:
        feed_id = await store_feed(seeder, blocks)
        async with open_node(seeder, listen="127.0.0.1:0") as node:
            assert node.address is not None
            raw = await RawPeer.connect(node.address[1])
            with trio.fail_after(timeout):
                responses = await raw.fetch_all(feed_id, len(blocks) if count is None
                                                else count)
            await raw.aclose()
    return responses
