#!/usr/bin/env python3
"""Reliability and security of hyperfs under load, faults and hostile peers, in figures.

    .venv/bin/python scripts/stress.py            # full run (a few minutes)
    .venv/bin/python scripts/stress.py --quick    # CI size (tests/test_stress.py), < 1 min
    .venv/bin/python scripts/stress.py --json     # the same table as JSON
    .venv/bin/python scripts/stress.py --only hostile,faults

Prints one Markdown table, ``case | tried | held | figure``: what was tried, how many
times, how many times it held, and the figure that shows how well. Every case stands up
real things: ``hyperfs serve`` / ``mount`` / ``cat`` / ``fsck`` subprocesses, library
nodes in this process, raw sockets speaking the wire protocol through the sans-I/O
:class:`hyperfs.connection.Connection`, on 127.0.0.1 only (``HYPERFS_LOCAL_ONLY=1``,
discovery off). Waits are bounded waits on conditions (a line, a closed stream, a stored
block); the only timed pauses are the attacks' own pacing (slowloris) and the random
moment of a SIGKILL.

What "held" means, per case group:

* hostile peers: the offender is dropped within a bounded time with the reason logged by
  the victim, honest downloads running meanwhile all finish with correct data, the
  victim's anonymous memory (RssAnon) stays within a bound, and ``hyperfs fsck`` of every
  database involved passes (nothing unverified stored);
* faults: after each SIGKILL the database opens, ``hyperfs fsck`` passes, no partial feed
  is visible, and the download resumes without fetching again what was stored; a peer
  that vanishes has its requests moved; a full disk fails ``cp`` with ENOSPC leaving
  nothing behind; corrupted blocks are never returned and are fetched again;
* load and security: data correct everywhere, figures reported.

Everything started is ended by PID, every mount (FUSE and tmpfs) is unmounted, even when
a case fails. Exit status 0 when every case held.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import json
import os
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import trio

from hyperfs import open_core
from hyperfs.feeds.core import Core
from hyperfs.feeds.feed import Feed
from hyperfs.net.node import MAX_PEERS, open_node
from hyperfs.replication.peer import ORDERED_PROOFS, Peer
from hyperfs.wire.connection import Connection, ProtocolError
from hyperfs.wire.events import (
    CancelReceived,
    HandshakeReceived,
    Joined,
    RequestReceived,
    ResponseReceived,
    Unpaused,
)
from hyperfs.wire.framing import MAX_MESSAGE, frame
from hyperfs.wire.messages import Join, Leave, Request, encode
from hyperfs.wire.protobuf import encode_varint

ROOT = Path(__file__).resolve().parent.parent

_BIN = Path(sys.executable).with_name("hyperfs")
HYPERFS = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "hyperfs.cli"]
ENV = {**os.environ, "HYPERFS_LOCAL_ONLY": "1"}
LOCAL = ("--no-dht", "--no-mdns")
HOST = "127.0.0.1"
MiB = 1 << 20


# ----------------------------------------------------------------------- results


@dataclass
class Result:
    """One row of the table."""

    case: str
    tried: int
    held: int
    figure: str
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.tried > 0 and self.held == self.tried


@dataclass
class Config:
    """Sizes of one run: --quick keeps every case but makes it small."""

    quick: bool
    attacks: int  # repetitions of each hostile-peer attack
    kills: int  # SIGKILL rounds
    fuzz_examples: int
    load_leechers: int
    load_bytes: int
    many_feeds: int
    readers: int
    reader_bytes: int
    handshake_timeout: float = 2.0
    message_timeout: float = 3.0
    request_timeout: float = 2.0
    vanish_timeout: float = 2.0
    vanish_reps: int = 1

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(True, attacks=3, kills=4, fuzz_examples=600, load_leechers=10,
                       load_bytes=8 * MiB, many_feeds=1000, readers=16, reader_bytes=2 * MiB)
        return cls(False, attacks=20, kills=100, fuzz_examples=10000, load_leechers=50,
                   load_bytes=256 * MiB, many_feeds=10_000, readers=16,
                   reader_bytes=32 * MiB, vanish_timeout=10.0, vanish_reps=3)


# ----------------------------------------------------------------------- processes


class Proc:
    """A ``hyperfs`` subprocess: stdout lines in a queue, stderr in a log file."""

    live: ClassVar[set[Proc]] = set()

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = [*HYPERFS, *[str(a) for a in args]]
        self.log = log
        with open(log, "ab") as err:
            self.popen = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, env=ENV,
                                          stdout=subprocess.PIPE, stderr=err)
        self.pid = self.popen.pid
        Proc.live.add(self)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.args}: no {pattern!r} in {timeout} s: "
                                   f"{self.stderr()[-2000:]}") from None
            if line is None:
                self.lines.put(None)
                raise RuntimeError(f"{self.args} exited ({self.popen.wait()}): "
                                   f"{self.stderr()[-2000:]}")
            match = re.search(pattern, line)
            if match:
                return match

    async def await_line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        return await trio.to_thread.run_sync(self.wait_line, pattern, timeout)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def memory(self) -> dict[str, int]:
        """VmRSS, RssAnon, VmHWM (kB) of the process now."""
        return proc_memory(self.pid)

    def send_signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10) -> int:
        """End it (``sig``, then SIGKILL) and wait; returns its exit status."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
            self.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                self.popen.wait(10)
        Proc.live.discard(self)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return self.popen.returncode

    async def astop(self, sig: int = signal.SIGINT) -> int:
        return await trio.to_thread.run_sync(self.stop, sig)


def proc_memory(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


class Sampler:
    """Peak RssAnon of a process, sampled every 50 ms while ``run`` runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = proc_memory(pid).get("RssAnon", 0)

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, proc_memory(self.pid).get("RssAnon", 0))
            await trio.sleep(0.05)


def run(*args: object, timeout: float = 120, check: bool = False,
        stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    """A ``hyperfs`` command (or any command if the first word is a path) to its end."""
    words = [str(a) for a in args]
    cmd = words if words[0].startswith("/") or (shutil.which(words[0]) and words[0] in (
        "cp", "cat", "ls", "setpriv", "mount", "umount", "fusermount3", "cmp")) else [
        *HYPERFS, *words]
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=stdout,
                            stderr=subprocess.PIPE, timeout=timeout, env=ENV, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{cmd}: exit {result.returncode}: {result.stderr[-2000:]!r}")
    return result


async def arun(*args: object, timeout: float = 120, check: bool = False,
               stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    return await trio.to_thread.run_sync(
        lambda: run(*args, timeout=timeout, check=check, stdout=stdout))


def fsck(db: Path) -> tuple[bool, str]:
    """``hyperfs fsck`` of a (closed) database: (passed, its last line)."""
    result = run("--db", db, "fsck", timeout=300)
    lines = result.stdout.decode(errors="replace").strip().splitlines()
    if result.returncode == 0:
        return True, lines[-1]
    return False, " / ".join(lines[-5:]) if lines else result.stderr.decode()[-300:]


async def afsck(db: Path) -> tuple[bool, str]:
    return await trio.to_thread.run_sync(fsck, db)


def ls_feeds(db: Path) -> list[tuple[str, int | None, int]]:
    """``hyperfs ls``: (id, blocks or None, local) per stored feed."""
    result = run("--db", db, "ls", check=True)
    feeds = []
    for line in result.stdout.decode().splitlines():
        words = line.split()
        feeds.append((words[0], None if words[1] == "?" else int(words[1]), int(words[3])))
    return feeds


class Mounts:
    """FUSE and tmpfs mounts of this run, unmounted at the end whatever happened."""

    fuse: ClassVar[set[Path]] = set()
    tmpfs: ClassVar[set[Path]] = set()

    @staticmethod
    def mounted(path: Path) -> bool:
        target = os.fsencode(path)
        with open("/proc/self/mountinfo", "rb") as info:
            return any(line.split()[4] == target for line in info)

    @classmethod
    def cleanup(cls) -> None:
        for path in list(cls.fuse):
            if cls.mounted(path) and run("fusermount3", "-u", path).returncode != 0:
                run("fusermount3", "-uz", path)
        for path in list(cls.tmpfs):
            if cls.mounted(path) and run("umount", path).returncode != 0:
                run("umount", "-l", path)


def start_mount(db: Path, mnt: Path, log: Path, *extra: object) -> Proc:
    """``hyperfs mount`` once it says it is mounted."""
    if not Mounts.mounted(mnt):
        mnt.mkdir(parents=True, exist_ok=True)
    Mounts.fuse.add(mnt)
    proc = Proc(["--db", db, "mount", mnt, *LOCAL, *extra], log)
    try:
        proc.wait_line(r"^hyperfs: mounted", 30)
    except BaseException:
        proc.stop(signal.SIGKILL)
        raise
    return proc


def start_serve(db: Path, log: Path, *extra: object) -> tuple[Proc, int]:
    """``hyperfs serve`` on an ephemeral loopback port, once it listens."""
    proc = Proc(["--db", db, "serve", "--listen", f"{HOST}:0", *LOCAL, *extra], log)
    try:
        port = int(proc.wait_line(r"^listening on [\d.]+:(\d+)$", 30).group(1))
    except BaseException:
        proc.stop(signal.SIGKILL)
        raise
    return proc, port


# ----------------------------------------------------------------------- data


def make_data(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return b"".join(rng.randbytes(min(16 * MiB, size - at)) for at in range(0, size, 16 * MiB))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


async def store(db: Path | Core, data: bytes, block_size: int = 64 * 1024) -> bytes:
    """``data`` as a new feed of ``block_size`` blocks; returns its id."""
    if isinstance(db, Core):
        async with db.create_write_stream(block_size=block_size) as stream:
            await stream.write(data)
        assert stream.id is not None
        return stream.id
    async with open_core(db) as core:
        return await store(core, data, block_size)


def blocks_of(data: bytes, block_size: int = 64 * 1024) -> list[bytes]:
    return [data[i:i + block_size] for i in range(0, len(data), block_size)]


def have_all(blocks: int) -> bytes:
    field_ = bytearray(b"\xff" * (blocks // 8))
    if blocks % 8:
        field_.append((0xFF00 >> (blocks % 8)) & 0xFF)
    return bytes(field_)


class PeerLog:
    """Peers a core's swarm reports, to wait for one and read its close reason."""

    def __init__(self, core: Core) -> None:
        self.peers: list[Peer] = []
        self.changed = trio.Event()
        core.on("peer", self._on_peer)

    def _on_peer(self, peer: Peer) -> None:
        self.peers.append(peer)
        self.changed.set()
        self.changed = trio.Event()

    def by_port(self, port: int) -> list[Peer]:
        return [p for p in self.peers if p.address and p.address.endswith(f":{port}")]


class Stored:
    """Calls ``callback(feed, block)`` as each block of ``feed`` is stored."""

    def __init__(self, feed: Feed, callback: Callable[[Feed, int], None]) -> None:
        self.feed_stored = callback
        self.unlisten = feed.listen(self)


# ----------------------------------------------------------------------- raw peers


async def read_until_closed(stream: trio.SocketStream, conn: Connection | None = None,
                            events: list[Any] | None = None) -> None:
    """Read (and decode, if ``conn``) until the remote closes or resets the stream."""
    while True:
        try:
            data = await stream.receive_some(1 << 16)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            return
        if conn is not None:
            with contextlib.suppress(ProtocolError):
                found = conn.receive_data(data)
                if events is not None:
                    events.extend(found)


async def attack(port: int, send: Callable[[trio.SocketStream, Connection], Awaitable[None]],
                 bound: float, *, read: bool = True) -> float | None:
    """Connect, run ``send`` while reading (unless not ``read``: then the victim's close
    shows as a failed send); seconds until the victim closed (None: not within ``bound``)."""
    stream = await trio.open_tcp_stream(HOST, port)
    conn = Connection(os.urandom(32))
    started = trio.current_time()
    closed_after: list[float] = []
    async with trio.open_nursery() as nursery:
        async def sender() -> None:
            try:
                await send(stream, conn)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                if not read:
                    closed_after.append(trio.current_time() - started)
                    nursery.cancel_scope.cancel()
            await trio.sleep_forever()

        async def reader() -> None:
            await read_until_closed(stream)
            closed_after.append(trio.current_time() - started)
            nursery.cancel_scope.cancel()

        nursery.start_soon(sender)
        if read:
            nursery.start_soon(reader)
        with trio.move_on_after(bound):
            await trio.sleep_forever()
        nursery.cancel_scope.cancel()
    await trio.aclose_forcefully(stream)
    return closed_after[0] if closed_after else None


# ----------------------------------------------------------------------- hostile clients


async def _slow(stream: trio.SocketStream, data: bytes) -> None:
    """Slowloris: one byte a second."""
    for i in range(len(data)):
        await stream.send_all(data[i:i + 1])
        await trio.sleep(1)


def _garbage(rng: random.Random) -> bytes:
    """Random frames (some may even parse), then one that cannot: a field whose length
    runs past the frame's end."""
    frames = [frame(bytes([rng.randrange(0, 8)]) + rng.randbytes(rng.randrange(1, 200)))
              for _ in range(rng.randrange(1, 20))]
    return b"".join(frames) + frame(b"\x01\x12\xff\xff\x03\x00")


def _channel_abuse(variant: int, fid: bytes) -> tuple[bytes, str]:
    """A message that misuses channel numbers, and the reason the victim must give."""
    other = os.urandom(32)
    cases = [
        (frame(b"\x02\x08\x07\x10\x01"), "never opened"),  # Have-like on channel 7
        (frame(encode(Join(1 << 62, other))), "skipping ahead"),
        (frame(encode(Join(0, other))) + frame(encode(Join(0, os.urandom(32)))),
         "reused live channel"),
        (frame(encode(Join(0, other))) + frame(encode(Join(1, other))), "already has open"),
        (frame(encode(Leave(9))), "never opened"),
        (frame(encode(Join(0, fid))) + frame(encode(Request(5, 0))), "never opened"),
    ]
    return cases[variant % len(cases)]


def hostile_client_attacks(cfg: Config, fid: bytes, blocks: int
                           ) -> dict[str, tuple[Callable[[int], Callable], str, float]]:
    """name -> (make the sender for repetition i, reason the victim logs, bound in s)."""
    hs, mt = cfg.handshake_timeout, cfg.message_timeout

    def nothing(_i: int) -> Callable:
        async def send(stream: trio.SocketStream, conn: Connection) -> None:
            pass
        return send

    def slow_handshake(_i: int) -> Callable:
        async def send(stream: trio.SocketStream, conn: Connection) -> None:
            await _slow(stream, conn.start())
        return send

    def slow_message(_i: int) -> Callable:
        async def send(stream: trio.SocketStream, conn: Connection) -> None:
            await stream.send_all(conn.start())
            await _slow(stream, conn.join(fid))
        return send

    def raw_after_handshake(make: Callable[[int, Connection], bytes]) -> Callable:
        def sender(i: int) -> Callable:
            async def send(stream: trio.SocketStream, conn: Connection) -> None:
                await stream.send_all(conn.start() + make(i, conn))
            return send
        return sender

    # built once: building them per connection would make this process the bottleneck
    joins = b"".join(frame(encode(Join(n, os.urandom(32)))) for n in range(5000))
    have = Connection(os.urandom(32))
    have.start()
    have.join(fid)
    huge = have.have(fid, bitfield=b"\xff" * (100 * 1000 * 1000))

    def many_joins(_i: int) -> Callable:
        async def send(stream: trio.SocketStream, conn: Connection) -> None:
            await stream.send_all(conn.start() + joins)
        return send

    def big_bitfield(_i: int) -> Callable:
        async def send(stream: trio.SocketStream, conn: Connection) -> None:
            await stream.send_all(conn.start() + conn.join(fid))
            await stream.send_all(huge)  # its channel is 0, as conn's
        return send

    def never_reads(_i: int) -> Callable:
        async def send(stream: trio.SocketStream, conn: Connection) -> None:
            await stream.send_all(conn.start() + conn.join(fid))
            requests = b"".join(conn.request(fid, b) for b in range(blocks))
            while True:  # asks for everything again and again, reads nothing
                await stream.send_all(requests)
        return send

    rng = random.Random(7)
    return {
        "connects, never sends a handshake": (nothing, "no handshake", hs + 5),
        "slowloris handshake (1 byte/s)": (slow_handshake, "no handshake", hs + 5),
        "slowloris message after handshake (1 byte/s)": (slow_message, "took longer",
                                                          mt + 5),
        "message over the 5 MiB limit": (raw_after_handshake(
            lambda i, c: encode_varint(MAX_MESSAGE + 1) + b"\0" * 4096), "message larger", 5),
        "varint length that never ends": (raw_after_handshake(
            lambda i, c: b"\xff" * 64), "message larger", 5),
        "garbage protobuf": (raw_after_handshake(lambda i, c: _garbage(rng)),
                             "protocol error", 5),
        "channel-number abuse (6 kinds)": (raw_after_handshake(
            lambda i, c: _channel_abuse(i, fid)[0]), "protocol error", 5),
        "5,000 Joins for random ids": (many_joins, "more than 1024 channels", 15),
        "Have with a 100 MB bitfield": (big_bitfield, "message larger", 15),
        NEVER_READS: (never_reads, "not reading|took longer", mt + 15),
    }


NEVER_READS = "requests everything, never reads"


def drop_reasons(log_text: str, port: int) -> list[str]:
    """Reasons the victim logged for dropping the peer on our local ``port``."""
    return re.findall(rf"dropping peer {HOST}:{port}: (.*)", log_text)


async def honest_loop(port: int, fid: bytes, expected: str, work: Path, done: trio.Event,
                      tally: dict[str, int], *, at_least: int = 1) -> None:
    """Download the feed again and again (fresh database each time) until ``done``."""
    n = 0
    while not done.is_set() or n < at_least:
        db, out = work / f"honest{n}", work / f"honest{n}.out"
        with open(out, "wb") as f:
            result = await arun("--db", db, "cat", fid.hex(), "--peer", f"{HOST}:{port}",
                                *LOCAL, "--timeout", 60, stdout=f, timeout=120)
        ok = result.returncode == 0 and file_sha(out) == expected
        ok = ok and (await afsck(db))[0]
        tally["tried"] += 1
        tally["held"] += ok
        if not ok:
            tally.setdefault("errors", []).append(result.stderr.decode()[-300:])  # type: ignore
        out.unlink()
        shutil.rmtree(db, ignore_errors=True)
        n += 1


async def case_hostile_clients(cfg: Config, work: Path) -> list[Result]:
    """Attacks on a `hyperfs serve`, while honest `hyperfs cat`s download from it."""
    work.mkdir()
    data = make_data(8 * MiB, 1)
    expected = sha(data)
    db = work / "victim"
    fid = await store(db, data)
    blocks = len(blocks_of(data))
    log = work / "serve.log"
    proc, port = await trio.to_thread.run_sync(lambda: start_serve(
        db, log, "--handshake-timeout", cfg.handshake_timeout,
        "--message-timeout", cfg.message_timeout))
    results: list[Result] = []
    try:
        sampler = Sampler(proc.pid)
        before = proc.memory().get("RssAnon", 0)
        attacks = hostile_client_attacks(cfg, fid, blocks)
        outcome: dict[str, list[tuple[int, float | None]]] = {name: [] for name in attacks}
        honest: dict[str, Any] = {"tried": 0, "held": 0}
        done = trio.Event()

        async def one(name: str, i: int) -> None:
            make, _reason, bound = attacks[name]
            stream_port: list[int] = []

            async def send(stream: trio.SocketStream, conn: Connection) -> None:
                stream_port.append(stream.socket.getsockname()[1])
                await make(i)(stream, conn)

            closed = await attack(port, send, bound, read=name != NEVER_READS)
            outcome[name].append((i, stream_port[0] if stream_port else 0, closed))

        async with trio.open_nursery() as outer:
            outer.start_soon(sampler.run)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(honest_loop, port, fid, expected, work, done, honest)
                for start in range(0, cfg.attacks, 5):  # rounds of 5 of each at once
                    async with trio.open_nursery() as attackers:
                        for name in attacks:
                            for i in range(start, min(start + 5, cfg.attacks)):
                                attackers.start_soon(one, name, i)
                results.append(await at_limit(cfg, port, fid))
                results.append(await join_churn(cfg, port, fid, db))
                flood = await connection_flood(cfg, port)
                done.set()  # the honest loop ends after its current download
            outer.cancel_scope.cancel()
        after = proc.memory().get("RssAnon", 0)
        text = proc.stderr()
        for name, (_make, reason, bound) in attacks.items():
            held, times, notes = 0, [], []
            for i, lport, closed in sorted(outcome[name]):
                reasons = drop_reasons(text, lport)
                want = _channel_abuse(i, fid)[1] if name.startswith("channel") else reason
                # either deadline is right for a non-reader: while we wait for it to read,
                # its own half-sent message stalls too
                good = closed is not None and any(w in r for r in reasons
                                                  for w in want.split("|"))
                held += good
                if closed is not None:
                    times.append(closed)
                if not good:
                    notes.append(f"#{i}: closed={closed} reasons={reasons}")
            worst = max(times) if times else float("nan")
            results.append(Result(f"hostile client: {name}", len(outcome[name]), held,
                                  f"dropped in <= {worst:.2f} s (bound {bound:g} s); "
                                  f"reason: '{reason}'", notes))
        results.append(flood)
        ok_fsck, line = await afsck_after(proc, db)
        mem_ok = sampler.peak - before < 128 * 1024
        results.append(Result(
            "hostile clients: honest downloads meanwhile, victim memory, fsck",
            honest["tried"], honest["held"] if (mem_ok and ok_fsck) else 0,
            f"{honest['held']}/{honest['tried']} correct; serve RssAnon {before // 1024} -> "
            f"peak {sampler.peak // 1024} -> {after // 1024} MiB; fsck: {line}",
            honest.get("errors", [])))
    finally:
        await proc.astop()
    return results


async def afsck_after(proc: Proc, db: Path) -> tuple[bool, str]:
    """Stop the serving process, then fsck its database."""
    await proc.astop()
    return await afsck(db)


async def at_limit(cfg: Config, port: int, fid: bytes) -> Result:
    """Messages of exactly 5 MiB (a reserved type: legal, ignored) are read and dropped
    from memory; the connection stays up and answers a Join afterwards."""
    held, times = 0, []
    for _ in range(cfg.attacks):
        stream = await trio.open_tcp_stream(HOST, port)
        conn = Connection(os.urandom(32))
        payload = frame(b"\x0f" + b"\0" * (MAX_MESSAGE - 1))
        started = trio.current_time()
        events: list[Any] = []
        with trio.move_on_after(30):
            await stream.send_all(conn.start())
            for _ in range(4):
                await stream.send_all(payload)
            await stream.send_all(conn.join(fid))
            while not any(isinstance(e, Joined) for e in events):
                data = await stream.receive_some(1 << 16)
                if not data:
                    break
                events.extend(conn.receive_data(data))
        if any(isinstance(e, Joined) for e in events):
            held += 1
            times.append(trio.current_time() - started)
        await trio.aclose_forcefully(stream)
    return Result("hostile client: messages at the 5 MiB limit (legal)", cfg.attacks, held,
                  f"4 x 5 MiB absorbed, then answered, in {max(times or [0]):.2f} s; "
                  "not dropped")


async def join_churn(cfg: Config, port: int, fid: bytes, db: Path) -> Result:
    """Join/Leave of random ids, 20,000 times on one connection: legal, so not dropped,
    and nothing about those ids is stored or answered."""
    held = 0
    count = 20_000 if not cfg.quick else 5_000
    for _ in range(max(1, cfg.attacks // 3)):
        stream = await trio.open_tcp_stream(HOST, port)
        conn = Connection(os.urandom(32))
        churn = b"".join(frame(encode(Join(0, os.urandom(32)))) + frame(encode(Leave(0)))
                         for _ in range(count))
        events: list[Any] = []
        with trio.move_on_after(30):
            await stream.send_all(conn.start() + churn + conn.join(fid))
            while not any(isinstance(e, Joined) for e in events):
                data = await stream.receive_some(1 << 16)
                if not data:
                    break
                events.extend(conn.receive_data(data))
        named = {getattr(e, "feed_id", fid) for e in events}
        held += any(isinstance(e, Joined) for e in events) and named == {fid}
        await trio.aclose_forcefully(stream)
    return Result(f"hostile client: {count:,} Join+Leave of random ids", max(1, cfg.attacks // 3),
                  held, "legal, not dropped; only the stored feed ever answered")


async def connection_flood(cfg: Config, port: int) -> Result:
    """1,000 connections at once that never say anything."""
    count = 1000
    streams: list[trio.SocketStream] = []
    started = trio.current_time()
    closed: list[float] = []

    async def hold(stream: trio.SocketStream) -> None:
        await read_until_closed(stream)
        closed.append(trio.current_time() - started)

    bound = cfg.handshake_timeout + 15
    with trio.move_on_after(bound + 10):
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                try:
                    stream = await trio.open_tcp_stream(HOST, port)
                except OSError:
                    closed.append(0.0)
                    continue
                streams.append(stream)
                nursery.start_soon(hold, stream)
    for stream in streams:
        await trio.aclose_forcefully(stream)
    worst = max(closed) if closed else float("nan")
    held = sum(1 for t in closed if t <= bound)
    return Result(f"hostile client: connection flood ({count:,} idle connects)", count, held,
                  f"all closed within {worst:.1f} s (cap {MAX_PEERS} peers, the rest "
                  f"refused at accept; handshake timeout {cfg.handshake_timeout:g} s)")


# ----------------------------------------------------------------------- hostile servers


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:] if data else b"\x00"


class Liar:
    """A seeder that claims the whole feed and misbehaves as ``kind`` says. It records,
    per connection, when it first misbehaved and when the victim closed on it."""

    KINDS: ClassVar[dict[str, str]] = {
        "wrong data with an honest proof": "fails verification",
        "forged proof": "fails verification",
        "roots that do not hash to the id": "fails verification",
        "Response for a block never requested": "never requested",
        "duplicate Responses": "never requested",
        "Have claiming blocks it never serves": "passed over|no answer",
        "accepts Requests, never answers": "no answer",
    }

    def __init__(self, kind: str, source: Feed, other: Feed) -> None:
        self.kind, self.source, self.other = kind, source, other
        self.latencies: list[float] = []
        self.connections = 0
        self.offended = trio.Event()  # opens the gate to the honest seeder

    def answer(self, conn: Connection, block: int) -> bytes:
        fid, src = self.source.id, self.source
        assert fid is not None and src.blocks is not None
        data = src.read_local(block)
        assert data is not None
        kind = self.kind
        if kind.startswith("wrong data"):
            return conn.response(fid, block, _flip(data), src.proof(block))
        if kind == "forged proof":
            (node, digest), *rest = src.proof(block)
            return conn.response(fid, block, data, [(node, _flip(digest)), *rest])
        if kind.startswith("roots"):
            other = self.other.read_local(block)
            assert other is not None
            return conn.response(fid, block, other, self.other.proof(block))
        if kind == "duplicate Responses":
            return 2 * conn.response(fid, block, data, src.proof(block))
        if kind.startswith("Have claiming"):
            if block < src.blocks // 2:
                return conn.response(fid, block, data, src.proof(block))
            return b""
        return b""

    async def handle(self, stream: trio.SocketStream) -> None:
        fid, blocks = self.source.id, self.source.blocks
        assert fid is not None and blocks is not None
        self.connections += 1
        conn = Connection(os.urandom(32))
        out = bytearray(conn.start() + conn.join(fid) + conn.have(fid, bitfield=have_all(blocks))
                        + conn.unpause(fid))
        lied: float | None = None
        claims = self.kind.startswith("Have claiming")  # measured until it is passed over
        unasked = self.kind.startswith("Response for a block")
        asked: set[int] = set()
        try:
            while True:
                if out:
                    await stream.send_all(bytes(out))
                    out.clear()
                data = await stream.receive_some(1 << 16)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, RequestReceived) and unasked:
                        asked.add(event.block)
                        if lied is None and len(asked) >= 8:  # one the victim never asked
                            block = max(set(range(blocks)) - asked)
                            data = self.source.read_local(block)
                            assert data is not None
                            out += conn.response(fid, block, data, self.source.proof(block))
                            lied = trio.current_time()
                            self.offended.set()
                    elif isinstance(event, RequestReceived):
                        reply = self.answer(conn, event.block)
                        if reply == b"" or not claims:
                            self.offended.set()
                        if lied is None and (reply == b"" or not claims):
                            lied = trio.current_time()
                        out += reply
                    elif isinstance(event, CancelReceived) and claims and lied is not None:
                        self.latencies.append(trio.current_time() - lied)  # moved away
                        lied = None
        except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError):
            pass
        if lied is not None:
            self.latencies.append(trio.current_time() - lied)


async def case_hostile_servers(cfg: Config, work: Path) -> list[Result]:
    """Lying and stalling seeders next to an honest `hyperfs serve`; the victim is a
    `hyperfs cat` fetching from both."""
    work.mkdir()
    data = make_data(2 * MiB, 2)
    expected = sha(data)
    src = work / "src"
    fid = await store(src, data, block_size=16 * 1024)
    shutil.copytree(src, work / "honest")
    honest, port = await trio.to_thread.run_sync(lambda: start_serve(work / "honest",
                                                                     work / "honest.log"))
    results = []
    try:
        async with open_core(src) as core:
            other_id = await store(core, make_data(2 * MiB, 3), block_size=16 * 1024)
            source = core.hold(fid).feed
            other = core.hold(other_id).feed
            kinds = list(Liar.KINDS)
            outcome: dict[str, list[tuple[bool, str]]] = {kind: [] for kind in kinds}
            latencies: dict[str, list[float]] = {kind: [] for kind in kinds}

            async def victim(kind: str, i: int) -> None:
                """One `hyperfs cat` given the liar and a gate to the honest seeder that
                opens only once the liar has offended (so the liar is always asked)."""
                liar = Liar(kind, source, other)
                async with trio.open_nursery() as nursery:
                    liar_port = (await nursery.start(partial_serve(liar.handle)))[0] \
                        .socket.getsockname()[1]
                    gate = (await nursery.start(partial_serve(
                        lambda s: relay(s, port, liar.offended))))[0].socket.getsockname()[1]
                    n = kinds.index(kind)
                    db, out = work / f"cat-{n}-{i}", work / f"cat-{n}-{i}.out"
                    with open(out, "wb") as f:
                        result = await arun(
                            "--db", db, "cat", fid.hex(), "--peer", f"{HOST}:{liar_port}",
                            "--peer", f"{HOST}:{gate}", *LOCAL, "--request-timeout",
                            cfg.request_timeout, "--timeout", 60, stdout=f, timeout=120)
                    nursery.cancel_scope.cancel()
                err = result.stderr.decode(errors="replace")
                reasons = re.findall(rf"peer {HOST}:{liar_port}:? (.*)", err)
                wanted = Liar.KINDS[kind].split("|")
                good = (result.returncode == 0 and file_sha(out) == expected
                        and any(w in r for r in reasons for w in wanted))
                ok_fsck, line = await afsck(db)
                latencies[kind].extend(liar.latencies)
                outcome[kind].append((good and ok_fsck, f"rc={result.returncode} "
                                      f"reasons={reasons[:2]} fsck={line} {err[-300:]}"))

            for i in range(min(cfg.attacks, 10)):
                async with trio.open_nursery() as round_:
                    for kind in kinds:
                        round_.start_soon(victim, kind, i)
            for kind in kinds:
                held = sum(ok for ok, _ in outcome[kind])
                worst = max(latencies[kind]) if latencies[kind] else float("nan")
                results.append(Result(
                    f"hostile seeder: {kind}", len(outcome[kind]), held,
                    f"{'passed over or dropped' if 'Have' in kind else 'dropped'} "
                    f"{worst:.2f} s after its first offence at worst "
                    f"({len(latencies[kind])} connections; request timeout "
                    f"{cfg.request_timeout:g} s); download correct, fsck ok",
                    [note for ok, note in outcome[kind] if not ok]))
    finally:
        await honest.astop()
    return results


async def relay(client: trio.SocketStream, port: int, gate: trio.Event) -> None:
    """Pipe ``client`` to the local ``port`` once ``gate`` is set."""
    await gate.wait()
    try:
        server = await trio.open_tcp_stream(HOST, port)
    except OSError:
        return
    async def pipe(a: trio.SocketStream, b: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await a.receive_some(1 << 16):
                await b.send_all(data)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await b.send_eof()
    async with server, trio.open_nursery() as nursery:
        nursery.start_soon(pipe, client, server)
        nursery.start_soon(pipe, server, client)


def partial_serve(handler: Callable[[trio.SocketStream], Awaitable[None]]) -> Callable:
    """trio.serve_tcp on an ephemeral loopback port, for nursery.start."""
    async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await trio.serve_tcp(handler, 0, host=HOST, task_status=task_status)
    return serve


# ----------------------------------------------------------------------- fuzzing


def fuzz(cfg: Config) -> list[Result]:
    """Hypothesis (property-based; ``target`` steers it to inputs that get further)
    over the frame decoder and the channel state machine of :class:`Connection`."""
    from hypothesis import HealthCheck, given, settings, target
    from hypothesis import strategies as st

    from hyperfs.wire.framing import FrameDecoder
    from hyperfs.wire.messages import Cancel, Have, Pause, Request, Response, Unpause

    budget = settings(max_examples=cfg.fuzz_examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
    counts = {"decoder": 0, "machine": 0}
    failures: dict[str, list[str]] = {"decoder": [], "machine": []}

    def check_state(conn: Connection) -> None:
        remote = conn._remote
        assert len(remote) <= 16
        assert {v: k for k, v in remote.items()} == conn._remote_feeds
        assert all(ch < conn._remote_opened for ch in remote)

    @budget
    @given(st.binary(max_size=2048), st.lists(st.integers(1, 64), max_size=20))
    def decoder(data: bytes, cuts: list[int]) -> None:
        counts["decoder"] += 1
        # Same payloads whatever the chunking; only ProtocolError ever escapes.
        def split(decoder: FrameDecoder, chunks: list[bytes]) -> tuple[list[bytes], bool]:
            out: list[bytes] = []
            try:
                for chunk in chunks:
                    out.extend(decoder.feed(chunk))
            except ProtocolError:
                return out, True
            return out, False
        chunks, pos = [], 0
        for cut in cuts:
            chunks.append(data[pos:pos + cut])
            pos += cut
        chunks.append(data[pos:])
        whole = split(FrameDecoder(1024), [data])
        chunked = split(FrameDecoder(1024), chunks)
        assert chunked[1] == whole[1], "an error depends on the chunking"
        # a failing feed() loses its own chunk's payloads, so compare only clean runs
        assert whole[1] or chunked[0] == whole[0], "payloads depend on the chunking"
        target(float(len(whole[0])), label="frames decoded")
        conn = Connection(os.urandom(32), max_channels=16)
        events = 0
        with contextlib.suppress(ProtocolError):
            events = len(conn.receive_data(Connection(os.urandom(32)).start() + data))
        target(float(events), label="events")
        check_state(conn)

    ids = [bytes([n]) * 32 for n in range(4)]
    channel = st.integers(0, 20)
    message = st.one_of(
        st.builds(Join, channel, st.sampled_from(ids)),
        st.builds(Leave, channel),
        st.builds(Have, channel, st.lists(st.integers(0, 1 << 20), max_size=3).map(tuple),
                  st.one_of(st.none(), st.binary(max_size=64))),
        st.builds(Pause, channel), st.builds(Unpause, channel),
        st.builds(Request, channel, st.integers(0, 1 << 40)),
        st.builds(Cancel, channel, st.integers(0, 100)),
        st.builds(Response, channel, st.integers(0, 100), st.binary(max_size=64),
                  st.just(())),
    )
    local_op = st.tuples(st.sampled_from(["join", "leave"]), st.sampled_from(ids))

    @budget
    @given(st.lists(st.one_of(message, local_op), max_size=60))
    def machine(steps: list[Any]) -> None:
        counts["machine"] += 1
        conn = Connection(os.urandom(32), max_channels=16)
        conn.start()
        conn.receive_data(Connection(os.urandom(32)).start())
        delivered = 0
        for step in steps:
            if isinstance(step, tuple):
                op, fid = step
                conn.join(fid) if op == "join" else conn.leave(fid)
                continue
            try:
                delivered += len(conn.receive_data(frame(encode(step))))
            except ProtocolError:
                try:  # dead for good after an error
                    conn.receive_data(b"")
                except ProtocolError:
                    break
                raise AssertionError("a connection that failed accepted more") from None
            check_state(conn)
        target(float(delivered), label="events delivered")

    started = time.monotonic()
    results = []
    for name, prop in (("decoder", decoder), ("machine", machine)):
        t0 = time.monotonic()
        try:
            prop()
        except Exception as exc:  # a counterexample: the case did not hold
            failures[name].append(f"{type(exc).__name__}: {exc}"[:500])
        seconds = time.monotonic() - t0
        what = ("frame decoder + Connection.receive_data on arbitrary bytes in arbitrary "
                "chunks" if name == "decoder" else
                "channel state machine: random Join/Leave/Have/Request/... and local "
                "join/leave")
        results.append(Result(f"fuzz (hypothesis): {what}", counts[name],
                               counts[name] if not failures[name] else 0,
                               f"{counts[name]:,} inputs in {seconds:.1f} s: only "
                               "ProtocolError, chunking-independent, state bounded",
                               failures[name]))
    del started
    return results


async def case_fuzz(cfg: Config, work: Path) -> list[Result]:
    return await trio.to_thread.run_sync(fuzz, cfg)


# ----------------------------------------------------------------------- faults


async def mount_round(cfg: Config, work: Path, rng: random.Random, kind: str, k: int,
                      state: dict[str, Any]) -> tuple[bool, str]:
    """SIGKILL the mount during a cp into it (``kind`` cp-in: any moment; finalize: near
    the end of the copy), then check the database and what the next mount shows."""
    db, mnt, src = work / "mdb", work / "mnt", work / "src.bin"
    proc: Proc | None = state.get("mount")
    if proc is None:
        proc = await trio.to_thread.run_sync(start_mount, db, mnt, work / "mount.log")
    t_cp = state["t_cp"]
    delay = rng.uniform(0, t_cp) if kind == "cp-in" else rng.uniform(0.8 * t_cp, 1.1 * t_cp)
    name = f"f{k}"
    cp = subprocess.Popen(["cp", str(src), str(mnt / name)], stderr=subprocess.DEVNULL)
    await trio.sleep(delay)  # the random moment of the kill
    proc.send_signal(signal.SIGKILL)
    await trio.to_thread.run_sync(proc.stop, signal.SIGKILL)
    await trio.to_thread.run_sync(cp.wait, 30)
    run("fusermount3", "-uz", mnt)
    ok, line = await afsck(db)
    if not ok:
        state["mount"] = None
        return False, f"fsck after kill at {delay:.2f} s: {line}"
    proc = await trio.to_thread.run_sync(start_mount, db, mnt, work / "mount.log")
    state["mount"] = proc
    names = [n for n in os.listdir(mnt) if not re.fullmatch(r"[0-9a-f]{64}", n)
             and n != ".status"]
    feeds = [n for n in os.listdir(mnt) if re.fullmatch(r"[0-9a-f]{64}", n)]
    bad = [n for n in names if file_sha(mnt / n) != state["src_sha"]]
    if len(feeds) != 1 or bad:  # every cp is of the same content: one feed
        return False, f"after kill at {delay:.2f} s: names {names}, feeds {feeds}, bad {bad}"
    state["completed"] += name in names
    return True, ""


async def replicate_round(cfg: Config, work: Path, rng: random.Random, k: int,
                          state: dict[str, Any]) -> tuple[bool, str]:
    """SIGKILL a `hyperfs cat` mid-download, then check and resume it: the resumed
    download fetches exactly the blocks that were not stored."""
    log: PeerLog = state["log"]
    fid, blocks, port = state["fid"], state["blocks"], state["port"]
    db, out = work / f"fetch{k}", work / f"fetch{k}.out"
    delay = rng.uniform(0.4, 1.0) * state["t_fetch"]
    with open(out, "wb") as f:
        proc = await trio.lowlevel.open_process(
            [*HYPERFS, "--db", str(db), "cat", fid.hex(), "--peer", f"{HOST}:{port}", *LOCAL],
            stdout=f, stderr=subprocess.DEVNULL, env=ENV)
    await trio.sleep(delay)  # the random moment of the kill
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    with trio.fail_after(10):  # the seeder notices the reset
        while any(not p.closed.is_set() for p in log.peers):
            await trio.sleep(0.02)
    ok, line = await afsck(db)
    if not ok:
        return False, f"fsck after kill at {delay:.2f} s: {line}"
    feeds = await trio.to_thread.run_sync(ls_feeds, db)
    local = feeds[0][2] if feeds else 0
    sent_before = sum(p.blocks_out for p in log.peers)
    with open(out, "wb") as f:
        result = await arun("--db", db, "cat", fid.hex(), "--peer", f"{HOST}:{port}", *LOCAL,
                            stdout=f)
    with trio.fail_after(10):
        while any(not p.closed.is_set() for p in log.peers):
            await trio.sleep(0.02)
    sent = sum(p.blocks_out for p in log.peers) - sent_before
    good = result.returncode == 0 and file_sha(out) == state["sha"] and sent == blocks - local
    state["resumed_local"].append(local)
    out.unlink()
    shutil.rmtree(db, ignore_errors=True)
    return good, "" if good else (f"kill at {delay:.2f} s: local {local}, resent {sent} "
                                  f"of {blocks}, rc {result.returncode}")


async def case_kills(cfg: Config, work: Path) -> list[Result]:
    """SIGKILL at random moments: mount during cp in and during finalize, cat during
    replication; 2 lanes at once (mount lane, replication lane)."""
    work.mkdir()
    rng = random.Random(11)
    src = make_data(32 * MiB, 4)
    (work / "src.bin").write_bytes(src)
    rep = make_data(48 * MiB, 5)
    mstate: dict[str, Any] = {"src_sha": sha(src), "completed": 0}
    # calibrate: how long a whole cp takes through the mount
    proc = await trio.to_thread.run_sync(start_mount, work / "mdb", work / "mnt",
                                         work / "mount.log")
    t0 = time.monotonic()
    await arun("cp", work / "src.bin", work / "mnt" / "calibration", check=True)
    mstate["t_cp"] = time.monotonic() - t0
    mstate["mount"] = proc
    outcome: dict[str, list[tuple[bool, str]]] = {"cp-in": [], "finalize": [],
                                                  "replicate": []}
    async with open_core(work / "seed") as core:
        fid = await store(core, rep, block_size=16 * 1024)
        log = PeerLog(core)
        async with open_node(core, listen=f"{HOST}:0") as node:
            assert node.address is not None
            rstate: dict[str, Any] = {"log": log, "fid": fid, "blocks": len(rep) // 16384,
                                      "port": node.address[1], "sha": sha(rep),
                                      "resumed_local": []}
            t0 = time.monotonic()
            await arun("--db", work / "calib", "cat", fid.hex(), "--peer",
                       f"{HOST}:{node.address[1]}", *LOCAL, check=True)
            rstate["t_fetch"] = time.monotonic() - t0

            async def mount_lane() -> None:
                kinds = ["cp-in", "finalize"]
                for k in range(cfg.kills - cfg.kills // 3):
                    kind = kinds[k % 2]
                    outcome[kind].append(await mount_round(cfg, work, rng, kind, k, mstate))

            async def replicate_lane() -> None:
                for k in range(cfg.kills // 3):
                    outcome["replicate"].append(await replicate_round(cfg, work, rng, k,
                                                                      rstate))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(mount_lane)
                nursery.start_soon(replicate_lane)
    if mstate.get("mount") is not None:
        await mstate["mount"].astop()
    ok, line = await afsck(work / "mdb")
    results = []
    for kind, rows in outcome.items():
        held = sum(good for good, _ in rows)
        if kind == "replicate":
            locals_ = rstate["resumed_local"]
            figure = (f"fsck ok after every kill; resumed with {min(locals_, default=0)}-"
                      f"{max(locals_, default=0)} of {rstate['blocks']} blocks already "
                      "stored, and exactly the missing ones fetched")
            what = "SIGKILL of `hyperfs cat` during replication"
        else:
            figure = (f"fsck ok, no partial feed visible after every kill; "
                      f"{mstate['completed']} copies had completed before a kill "
                      f"(cp takes {mstate['t_cp']:.2f} s); final fsck: {line}")
            what = ("SIGKILL of `hyperfs mount` during cp in" if kind == "cp-in" else
                    "SIGKILL of `hyperfs mount` around finalize (end of cp)")
        results.append(Result(what, len(rows), held if ok else 0, figure,
                              [note for good, note in rows if not good]))
    return results


async def case_vanish(cfg: Config, work: Path) -> list[Result]:
    """A seeder vanishes mid-transfer (SIGSTOP: silent; SIGKILL: connection reset):
    its requests move to the other seeder. Also fsck of the killed seeder's database."""
    work.mkdir()
    data = make_data((8 if cfg.quick else 32) * MiB, 6)
    fid = await store(work / "a", data, block_size=16 * 1024)
    shutil.copytree(work / "a", work / "b")
    timeout = cfg.vanish_timeout
    results = []
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        rows, dones = [], []
        for rep in range(cfg.vanish_reps):
            a, pa = await trio.to_thread.run_sync(start_serve, work / "a",
                                                  work / f"a{sig}.log")
            b, pb = await trio.to_thread.run_sync(start_serve, work / "b",
                                                  work / f"b{sig}.log")
            try:
                async with open_core(work / f"f{sig}-{rep}") as core:
                    log = PeerLog(core)
                    when: list[float] = []

                    def vanish(feed: Feed, _block: int, a: Proc = a, pa: int = pa,
                               log: PeerLog = log, when: list[float] = when,
                               sig: int = sig) -> None:
                        if not when and feed.local > (feed.blocks or 1) // 4 and any(
                                p.blocks_in >= 20 for p in log.by_port(pa)):
                            a.send_signal(sig)
                            when.append(trio.current_time())

                    with core.get(fid) as feed:
                        Stored(feed, vanish)
                        async with open_node(core, request_timeout=timeout,
                                             peers=[f"{HOST}:{pa}", f"{HOST}:{pb}"]) as node:
                            with trio.move_on_after(timeout + 20) as scope:
                                await feed.download()
                            if scope.cancelled_caught:
                                raise RuntimeError(
                                    f"{signal.Signals(sig).name}: download stalled at "
                                    f"{feed.local}/{feed.blocks}: "
                                    f"{json.dumps(node.status(), default=str)[:1500]}")
                            done = trio.current_time()
                            victim = log.by_port(pa)[0]
                            correct = b"".join(feed.read_local(i) or b""
                                               for i in range(feed.blocks or 0)) == data
                            # A stopped seeder whose requests all went elsewhere is an idle
                            # connection, not an offender: it may well still be open.
                            reason = victim.close_reason or "still open, nothing asked of it"
                    dones.append(done - when[0])
                    good = correct and bool(when) and done - when[0] < timeout + 5
                    rows.append((good, f"reason {reason!r}, done {done - when[0]:.2f} s"))
                ok, line = await afsck(work / f"f{sig}-{rep}")
                if not ok:
                    rows[-1] = (False, f"fetcher fsck: {line}")
            finally:
                await a.astop()
                await b.astop()
            if sig == signal.SIGKILL:
                ok, line = await afsck(work / "a")  # the killed seeder's database
                if not ok:
                    rows[-1] = (False, f"killed seeder's fsck: {line}")
        name = ("seeder stopped mid-transfer (SIGSTOP)" if sig == signal.SIGSTOP else
                "seeder killed mid-transfer (SIGKILL: connection reset)")
        results.append(Result(
            name, len(rows), sum(g for g, _ in rows),
            f"download done {max(dones):.2f} s after the signal at worst (request timeout "
            f"{timeout:g} s), {statistics.median(dones):.2f} s median; data correct, fsck ok"
            + ("; killed seeder's db fsck ok" if sig == signal.SIGKILL else ""),
            [n for g, n in rows if not g]))
    return results


async def case_disk_full(cfg: Config, work: Path) -> list[Result]:
    """The database on a 20 MiB tmpfs; cp of 40 MiB into the mount must fail with ENOSPC,
    leave nothing behind, and the mount must go on working."""
    work.mkdir()
    space, db, mnt = work / "space", work / "space" / "db", work / "mnt"
    space.mkdir()
    Mounts.tmpfs.add(space)
    run("mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", space, check=True)
    notes: list[str] = []
    checks: dict[str, bool] = {}
    try:
        small, big = make_data(MiB, 7), make_data(40 * MiB, 8)
        (work / "small").write_bytes(small)
        (work / "big").write_bytes(big)
        (work / "after").write_bytes(small[: 64 * 1024])
        proc = await trio.to_thread.run_sync(start_mount, db, mnt, work / "mount.log")
        try:
            await arun("cp", work / "small", mnt / "small", check=True)
            result = await arun("cp", work / "big", mnt / "big")
            err = result.stderr.decode(errors="replace")
            checks["cp fails with ENOSPC"] = (result.returncode != 0
                                              and os.strerror(errno.ENOSPC) in err)
            notes.append(f"cp: {err.strip()[-200:]}")
            listing = sorted(n for n in os.listdir(mnt) if n != ".status")
            checks["nothing partial listed"] = ("big" not in listing
                                                and len(listing) == 2)  # small + its feed
            notes.append(f"listing after: {listing}")
            checks["earlier file still reads"] = file_sha(mnt / "small") == sha(small)
            again = await arun("cp", work / "after", mnt / "after")
            if again.returncode != 0:
                notes.append(f"64 KiB cp on the full disk: {again.stderr.decode().strip()}")
                run("mount", "-o", "remount,size=64m", space, check=True)  # space freed
                again = await arun("cp", work / "after", mnt / "after")
            checks["mount alive"] = proc.popen.poll() is None and os.path.ismount(mnt)
            after_ok = again.returncode == 0 and file_sha(mnt / "after") == sha(
                small[: 64 * 1024])
            notes.append(f"a 64 KiB cp once space is freed, same mount: "
                         f"{'works' if after_ok else again.stderr.decode().strip()}")
            checks["same mount takes a cp again once space is freed"] = after_ok
        finally:
            await proc.astop()
        run("mount", "-o", "remount,size=64m", space, check=True)  # space freed
        ok, line = await afsck(db)
        checks["fsck once space is freed"] = ok
        feeds = await trio.to_thread.run_sync(ls_feeds, db)
        checks["no partial feed stored"] = all(b == loc for _, b, loc in feeds)
        notes.append(f"fsck: {line}; {len(feeds)} feeds stored")
    finally:
        run("umount", space)
        Mounts.tmpfs.discard(space)
    failed = [k for k, v in checks.items() if not v]
    return [Result("disk full during cp into the mount (20 MiB tmpfs, 40 MiB file)",
                   len(checks), len(checks) - len(failed),
                   "; ".join(k for k in checks if checks[k]) + (
                       f"; FAILED: {', '.join(failed)}" if failed else ""), notes)]


def corrupt_blocks(db: Path, fid: bytes, indexes: list[int]) -> None:
    """Flip a byte of the stored data of some blocks, behind hyperfs's back."""
    import plyvel

    from hyperfs.store.layout import U64, block_key, id_key

    store = plyvel.DB(str(db))
    try:
        num = U64.unpack(store.get(id_key(fid)))[0]
        for index in indexes:
            key = block_key(num, index)
            value = bytearray(store.get(key))
            value[len(value) // 2] ^= 0x40
            store.put(key, bytes(value), sync=True)
    finally:
        store.close()


async def case_corruption(cfg: Config, work: Path) -> list[Result]:
    """Blocks corrupted on disk: a read never returns them (without a peer it waits and
    times out), and with a peer they are fetched again and read correctly."""
    work.mkdir()
    data = make_data(4 * MiB, 9)
    parts = blocks_of(data)
    fid = await store(work / "seed", data)
    shutil.copytree(work / "seed", work / "local")
    bad = sorted(random.Random(3).sample(range(len(parts)), 8))
    corrupt_blocks(work / "local", fid, bad)
    checks: dict[str, bool] = {}
    notes: list[str] = []
    mnt = work / "mnt"
    proc = await trio.to_thread.run_sync(start_mount, work / "local", mnt, work / "m1.log",
                                         "--timeout", 1)
    try:
        result = await arun("cat", mnt / fid.hex() / str(bad[0]))
        checks["alone: a corrupted block is not returned"] = (
            result.returncode != 0 and result.stdout != data[bad[0] * 65536:][:65536])
        notes.append(f"alone: {result.stderr.decode().strip()}")
    finally:
        await proc.astop()
    seed, port = await trio.to_thread.run_sync(start_serve, work / "seed", work / "seed.log")
    try:
        proc = await trio.to_thread.run_sync(start_mount, work / "local", mnt,
                                             work / "m2.log", "--peer", f"{HOST}:{port}")
        try:
            got = [(await arun("cat", mnt / fid.hex() / str(i))).stdout for i in bad]
            checks["with a peer: every corrupted block read correctly"] = got == [
                parts[i] for i in bad]
            whole = await arun("cat", mnt / fid.hex() / ".feed")
            checks["whole feed reads correctly"] = whole.stdout == data
        finally:
            await proc.astop()
    finally:
        await seed.astop()
    ok, line = await afsck(work / "local")
    checks["fsck"] = ok
    feeds = await trio.to_thread.run_sync(ls_feeds, work / "local")
    checks["all blocks local again"] = feeds[0][2] == len(parts)
    notes.append(f"fsck: {line}")
    failed = [k for k, v in checks.items() if not v]
    return [Result(f"{len(bad)} blocks corrupted on disk behind our back", len(checks),
                   len(checks) - len(failed),
                   "detected on read (leaf hash), never returned, re-fetched from the "
                   "peer; fsck ok" + (f"; FAILED: {', '.join(failed)}" if failed else ""),
                   notes)]


# ----------------------------------------------------------------------- load


async def raw_leecher(port: int, fid: bytes, parts: list[bytes], window: int = 32) -> bool:
    """A downloader of the whole feed over one connection, checking every block
    against the source (the seeder's proofs are its own business here)."""
    stream = await trio.open_tcp_stream(HOST, port)
    conn = Connection(os.urandom(32), [ORDERED_PROOFS])
    await stream.send_all(conn.start() + conn.join(fid))
    total, asked, got, inflight, ok, unpaused = len(parts), 0, 0, 0, True, False
    async with stream:
        while got < total:
            data = await stream.receive_some(1 << 18)
            if not data:
                return False
            for event in conn.receive_data(data):
                if isinstance(event, Unpaused):
                    unpaused = True
                elif isinstance(event, ResponseReceived):
                    ok = ok and event.data == parts[event.block]
                    got += 1
                    inflight -= 1
            out = bytearray()
            while unpaused and inflight < window and asked < total:
                out += conn.request(fid, asked)
                asked += 1
                inflight += 1
            if out:
                await stream.send_all(bytes(out))
    return ok


async def case_leechers(cfg: Config, work: Path) -> list[Result]:
    """One `hyperfs serve`, N downloads of the same feed at once (raw protocol
    leechers in this process, plus one real `hyperfs cat`)."""
    work.mkdir()
    data = make_data(cfg.load_bytes, 10)
    parts = blocks_of(data)
    fid = await store(work / "seed", data)
    proc, port = await trio.to_thread.run_sync(start_serve, work / "seed", work / "seed.log")
    try:
        sampler = Sampler(proc.pid)
        oks: list[bool] = []
        started = time.monotonic()
        cat_ok: list[bool] = []

        async def real_cat() -> None:
            with open(work / "cat.out", "wb") as f:
                result = await arun("--db", work / "cat", "cat", fid.hex(), "--peer",
                                    f"{HOST}:{port}", *LOCAL, stdout=f, timeout=900)
            cat_ok.append(result.returncode == 0 and file_sha(work / "cat.out") == sha(data))

        async def one() -> None:
            oks.append(await raw_leecher(port, fid, parts))

        async with trio.open_nursery() as outer:
            outer.start_soon(sampler.run)
            with trio.fail_after(900):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(real_cat)
                    for _ in range(cfg.load_leechers - 1):
                        nursery.start_soon(one)
            outer.cancel_scope.cancel()
        elapsed = time.monotonic() - started
        hwm = proc.memory().get("VmHWM", 0)
    finally:
        await proc.astop()
    held = sum(oks) + sum(cat_ok)
    total = cfg.load_leechers * len(data)
    return [Result(
        f"load: 1 seeder, {cfg.load_leechers} leechers of one {len(data) // MiB} MiB feed",
        cfg.load_leechers, held,
        f"all correct in {elapsed:.1f} s: aggregate {total / elapsed / 1e6:.0f} MB/s; "
        f"seeder peak RssAnon {sampler.peak / 1024:.0f} MiB (VmHWM {hwm / 1024:.0f} MiB, "
        "LevelDB pages included)")]


async def case_many_feeds(cfg: Config, work: Path) -> list[Result]:
    """Many feeds in one database: `hyperfs ls`, mount start-up and `ls` of the mount."""
    work.mkdir()
    db = work / "db"
    t0 = time.monotonic()
    async with open_core(db) as core:
        for n in range(cfg.many_feeds):
            feed = core.add()
            await feed.append(n.to_bytes(4, "big") * 16)
            await feed.finalize()
    build = time.monotonic() - t0
    t0 = time.monotonic()
    feeds = await trio.to_thread.run_sync(ls_feeds, db)
    t_ls = time.monotonic() - t0
    t0 = time.monotonic()
    proc = await trio.to_thread.run_sync(start_mount, db, work / "mnt", work / "mount.log")
    t_mount = time.monotonic() - t0
    try:
        t0 = time.monotonic()
        listing = (await arun("ls", work / "mnt", check=True)).stdout.split()
        t_dir = time.monotonic() - t0
        t0 = time.monotonic()
        await arun("ls", "-l", work / "mnt", check=True)
        t_dirl = time.monotonic() - t0
    finally:
        await proc.astop()
    n = cfg.many_feeds
    good = len(feeds) == n and len(listing) == n
    return [Result(f"{n:,} feeds in one database", 1, int(good),
                   f"`hyperfs ls` {t_ls:.2f} s, mount start-up {t_mount:.2f} s, `ls` of the "
                   f"mount {t_dir:.2f} s, `ls -l` {t_dirl:.2f} s (built in {build:.0f} s)")]


async def case_readers(cfg: Config, work: Path) -> list[Result]:
    """16 concurrent readers through one mount, against one reader alone."""
    work.mkdir()
    n, size = cfg.readers, cfg.reader_bytes
    datas = [make_data(size, 100 + k) for k in range(n)]
    async with open_core(work / "db") as core:
        ids = []
        for k, data in enumerate(datas):
            stream = core.create_write_stream(block_size=64 * 1024)
            await stream.write(data)
            ids.append(await stream.close(name=f"r{k}".encode()))
    mnt = work / "mnt"
    proc = await trio.to_thread.run_sync(start_mount, work / "db", mnt, work / "mount.log")
    try:
        t0 = time.monotonic()
        single = (await arun("cat", mnt / "r0")).stdout == datas[0]
        t_single = time.monotonic() - t0
        oks: list[bool] = []

        async def reader(k: int) -> None:
            path = mnt / (f"r{k}" if k % 2 else f"{ids[k].hex()}/.feed")
            oks.append((await arun("cat", path)).stdout == datas[k])

        async def blocks(k: int) -> None:
            rng = random.Random(k)
            picks = rng.sample(range(size // 65536), 16)
            for i in picks:
                got = (await arun("cat", mnt / ids[k].hex() / str(i))).stdout
                oks.append(got == datas[k][i * 65536:(i + 1) * 65536])

        t0 = time.monotonic()
        async with trio.open_nursery() as nursery:
            for k in range(n):
                nursery.start_soon(reader, k)
        t_many = time.monotonic() - t0
        async with trio.open_nursery() as nursery:
            for k in range(n):
                nursery.start_soon(blocks, k)
    finally:
        await proc.astop()
    good = single and all(oks)
    return [Result(f"load: {n} concurrent readers through one mount ({size // MiB} MiB feeds)",
                   len(oks) + 1, (sum(oks) + single) if good else 0,
                   f"aggregate {n * size / t_many / 1e6:.0f} MB/s vs one reader "
                   f"{size / t_single / 1e6:.0f} MB/s; plus {n * 16} block files read "
                   "concurrently; all correct")]


# ----------------------------------------------------------------------- local security


async def case_security(cfg: Config, work: Path) -> list[Result]:
    work.mkdir()
    for path in (work.parent, work):
        path.chmod(0o755)  # so that only FUSE can be what denies another user
    results = []
    db, mnt = work / "db", work / "mnt"
    data = make_data(200_000, 12)
    await store(db, data)

    def as_nobody(*cmd: object) -> subprocess.CompletedProcess[bytes]:
        return run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                   *cmd)

    outcomes = {}
    for allow in (False, True):
        proc = await trio.to_thread.run_sync(start_mount, db, mnt, work / "mount.log",
                                             *(["--allow-other"] if allow else []))
        try:
            listing = as_nobody("/usr/bin/ls", mnt)
            stat = as_nobody("/usr/bin/stat", mnt / ".status")
            outcomes[allow] = (listing.returncode, listing.stderr.decode().strip(),
                               stat.returncode)
        finally:
            await proc.astop()
    denied = outcomes[False][0] != 0 and "Permission denied" in outcomes[False][1] \
        and outcomes[False][2] != 0
    control = outcomes[True][0] == 0
    results.append(Result("security: mount private by default (user nobody via setpriv)",
                          2, int(denied) + int(control),
                          "nobody: `ls`/`stat` denied (EACCES) without --allow-other; "
                          "with --allow-other (control) nobody can list",
                          [repr(outcomes)]))

    # the listening port: only feeds named by id, the stored ids never listed
    ids = [await store(db, make_data(5000, 20 + k)) for k in range(5)]
    proc, port = await trio.to_thread.run_sync(start_serve, db, work / "serve.log")
    try:
        clean = 0
        peers = 20
        for k in range(peers):
            stream = await trio.open_tcp_stream(HOST, port)
            conn = Connection(os.urandom(32))
            named = ids[k % 5] if k % 2 else None
            msg = conn.start() + b"".join(conn.join(os.urandom(32)) for _ in range(50))
            if named:
                msg += conn.join(named)
            events: list[Any] = []
            with trio.fail_after(10):
                await stream.send_all(msg)
                await stream.send_eof()
                await read_until_closed(stream, conn, events)
            await trio.aclose_forcefully(stream)
            told = {getattr(e, "feed_id", None) for e in events} - {None}
            kinds = {type(e) for e in events}
            clean += told == ({named} if named else set()) and HandshakeReceived in kinds
        results.append(Result(
            "security: the port serves only feeds a peer names; stored ids never listed",
            peers, clean, "50 random ids + (every other peer) one stored id each: only "
            "that id is ever mentioned back; a peer naming none hears only the handshake"))
    finally:
        await proc.astop()

    # odd names through the mount
    names = [b"..", b".", b"...", b"a\nb", b"\xff\xfe", b" ", b"-rf", b"a" * 255, b"a" * 256,
             b".status", b".feed", b"ab" * 32, b"0" * 64, b"\x01\x02", "\u00fc".encode(),
             b"..\\..", b"%s%n%x", b"name with spaces", b"\x7f"]
    proc = await trio.to_thread.run_sync(start_mount, db, mnt, work / "mount2.log")
    before = sorted(os.listdir(work))
    held, notes = 0, []
    try:
        mntb = os.fsencode(mnt)
        for name in names:
            path = mntb + b"/" + name
            payload = b"content of " + name
            try:
                fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
                try:
                    os.write(fd, payload)
                finally:
                    os.close(fd)
                outcome = "created"
            except OSError as exc:
                outcome = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            alive = proc.popen.poll() is None and os.path.ismount(mnt)
            ok = alive
            if outcome == "created":
                with open(path, "rb") as f:
                    ok = ok and f.read() == payload and name in os.listdir(mntb)
            held += ok
            notes.append(f"{name[:20]!r}{'...' if len(name) > 20 else ''}: {outcome}")
    finally:
        await proc.astop()
    escaped = sorted(os.listdir(work)) != before
    ok, line = await afsck(db)
    results.append(Result(
        "security: odd file names (.., ., \\n, \\xff, 255/256 bytes, .status, id-like, ...)",
        len(names), held if ok and not escaped else 0,
        "no crash, no escape, created ones read back: " + ", ".join(notes), [line]))
    return results


# ----------------------------------------------------------------------- main

GROUPS: dict[str, Callable[[Config, Path], Awaitable[list[Result]]]] = {
    "hostile": case_hostile_clients,
    "liars": case_hostile_servers,
    "fuzz": case_fuzz,
    "kills": case_kills,
    "vanish": case_vanish,
    "diskfull": case_disk_full,
    "corruption": case_corruption,
    "leechers": case_leechers,
    "manyfeeds": case_many_feeds,
    "readers": case_readers,
    "security": case_security,
}


def table(results: list[Result]) -> str:
    lines = ["| case | tried | held | figure |", "|---|---:|---:|---|"]
    for r in results:
        mark = "" if r.ok else " **FAILED**"
        lines.append(f"| {r.case} | {r.tried:,} | {r.held:,}{mark} | {r.figure} |")
    return "\n".join(lines)


LANES = (("hostile", "kills", "diskfull", "leechers", "security"),
         ("liars", "vanish", "corruption", "manyfeeds", "readers"), ("fuzz",))
"""With --quick, the first two lanes run side by side (their waits are mostly deadlines
and subprocesses), then fuzzing alone (it is CPU-bound in this process)."""


async def main_async(cfg: Config, work: Path, only: list[str]) -> list[Result]:
    if not cfg.quick:
        return await run_groups(cfg, work, [n for n in GROUPS if not only or n in only])
    found: dict[str, list[Result]] = {}

    async def lane(names: tuple[str, ...]) -> None:
        for name in names:
            if not only or name in only:
                found[name] = await run_groups(cfg, work, [name])

    async with trio.open_nursery() as nursery:
        for names in LANES[:2]:
            nursery.start_soon(lane, names)
    await lane(LANES[2])
    return [r for name in GROUPS if name in found for r in found[name]]


async def run_groups(cfg: Config, work: Path, names: list[str]) -> list[Result]:
    results: list[Result] = []
    for name in names:
        group = GROUPS[name]
        started = time.monotonic()
        try:
            found = await group(cfg, work / name)
        except Exception as exc:  # a case that crashes did not hold; go on with the rest
            traceback.print_exc()
            found = [Result(f"{name}: crashed", 1, 0, f"{type(exc).__name__}: {exc}"[:300])]
        print(f"stress: {name}: {time.monotonic() - started:.1f} s", file=sys.stderr,
              flush=True)
        results.extend(found)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--only", default="", help=f"comma-separated groups: {', '.join(GROUPS)}")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    cfg = Config.make(args.quick)
    only = [w for w in args.only.split(",") if w]
    work = Path(tempfile.mkdtemp(prefix="hyperfs-stress-"))
    started = time.monotonic()
    try:
        results = trio.run(main_async, cfg, work, only)
    finally:
        for proc in list(Proc.live):
            proc.stop(signal.SIGKILL)
        Mounts.cleanup()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    if args.json:
        print(json.dumps({"quick": cfg.quick, "seconds": round(elapsed, 1),
                          "all_held": all(r.ok for r in results),
                          "cases": [{**asdict(r), "ok": r.ok} for r in results]}, indent=1))
    else:
        print(table(results))
        for r in results:
            if not r.ok:
                for note in r.notes[:10]:
                    print(f"stress: {r.case}: {note}", file=sys.stderr)
        print(f"\n{sum(r.ok for r in results)}/{len(results)} cases held in {elapsed:.0f} s "
              f"({'--quick' if cfg.quick else 'full run'})")
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
