"""Lying and stalling seeders next to an honest `hyperfs serve`; the victim is a
`hyperfs cat` fetching from both, which must drop the liar (or pass it over) with its
reason logged, finish the download with correct data, and store nothing unverified."""

from __future__ import annotations

import functools
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import trio

from hyperfs import open_core
from hyperfs.feeds.feed import Feed
from hyperfs.testing.network import claim_all
from hyperfs.testing.stress.common import (
    HOST,
    Config,
    MiB,
    Result,
    afsck,
    file_sha,
    hyperfs,
    make_data,
    serve,
    sha,
    stop,
    store,
)
from hyperfs.testing.stress.raw import partial_serve, relay
from hyperfs.wire.connection import Connection
from hyperfs.wire.events import CancelReceived, Event, RequestReceived


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
        """One connection of the victim's: claim everything, misbehave, and measure."""
        self.connections += 1
        offence = Offence()
        await claim_all(stream, self.source, functools.partial(self.on_event, offence))
        if offence.lied is not None:
            self.latencies.append(trio.current_time() - offence.lied)

    async def on_event(self, offence: Offence, conn: Connection, event: Event) -> bytes:
        fid, blocks = self.source.id, self.source.blocks
        assert fid is not None and blocks is not None
        claims = self.kind.startswith("Have claiming")  # measured until it is passed over
        if isinstance(event, RequestReceived) and self.kind.startswith("Response for a"):
            offence.asked.add(event.block)
            if offence.lied is not None or len(offence.asked) < 8:
                return b""
            block = max(set(range(blocks)) - offence.asked)  # one the victim never asked
            data = self.source.read_local(block)
            assert data is not None
            self.offend(offence)
            return conn.response(fid, block, data, self.source.proof(block))
        if isinstance(event, RequestReceived):
            reply = self.answer(conn, event.block)
            if reply == b"" or not claims:
                self.offend(offence)
            return reply
        if isinstance(event, CancelReceived) and claims and offence.lied is not None:
            self.latencies.append(trio.current_time() - offence.lied)  # moved away
            offence.lied = None
        return b""

    def offend(self, offence: Offence) -> None:
        """Note the first offence of this connection; open the gate to the honest seeder."""
        if offence.lied is None:
            offence.lied = trio.current_time()
        self.offended.set()


@dataclass
class Offence:
    """One connection of a liar: when it (last) first misbehaved, and what was asked."""

    lied: float | None = None
    asked: set[int] = field(default_factory=set)


async def victim(cfg: Config, work: Path, liar: Liar, port: int, tag: str,
                 expected: str) -> tuple[bool, str]:
    """One `hyperfs cat` given the liar and a gate to the honest seeder that opens only
    once the liar has offended (so the liar is always asked): (held, note)."""
    fid = liar.source.id
    assert fid is not None
    async with trio.open_nursery() as nursery:
        liar_port = (await nursery.start(partial_serve(liar.handle)))[0] \
            .socket.getsockname()[1]
        gate = (await nursery.start(partial_serve(
            lambda s: relay(s, port, liar.offended))))[0].socket.getsockname()[1]
        db, out = work / f"cat-{tag}", work / f"cat-{tag}.out"
        with open(out, "wb") as f:
            result = await hyperfs(
                "--db", db, "cat", fid.hex(), "--peer", f"{HOST}:{liar_port}",
                "--peer", f"{HOST}:{gate}", "--request-timeout", cfg.request_timeout,
                "--timeout", 60, stdout=f, timeout=120)
        nursery.cancel_scope.cancel()
    err = result.stderr.decode(errors="replace")
    reasons = re.findall(rf"peer {HOST}:{liar_port}:? (.*)", err)
    wanted = Liar.KINDS[liar.kind].split("|")
    good = (result.returncode == 0 and file_sha(out) == expected
            and any(w in r for r in reasons for w in wanted))
    ok_fsck, line = await afsck(db)
    return good and ok_fsck, f"rc={result.returncode} reasons={reasons[:2]} fsck={line} " \
        f"{err[-300:]}"


async def case_hostile_servers(cfg: Config, work: Path) -> list[Result]:
    """Every kind of liar, ``cfg.attacks`` times (at most 10), all kinds at once."""
    work.mkdir()
    data = make_data(2 * MiB, 2)
    src = work / "src"
    fid = await store(src, data, block_size=16 * 1024)
    shutil.copytree(src, work / "honest")
    honest, port = await serve(work / "honest")
    kinds = list(Liar.KINDS)
    outcome: dict[str, list[tuple[bool, str]]] = {kind: [] for kind in kinds}
    latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        async with open_core(src) as core:
            other_id = await store(core, make_data(2 * MiB, 3), block_size=16 * 1024)
            source = core.hold(fid).feed
            other = core.hold(other_id).feed

            async def one(kind: str, i: int) -> None:
                liar = Liar(kind, source, other)
                tag = f"{kinds.index(kind)}-{i}"
                outcome[kind].append(await victim(cfg, work, liar, port, tag, sha(data)))
                latencies[kind].extend(liar.latencies)

            for i in range(min(cfg.attacks, 10)):
                async with trio.open_nursery() as round_:
                    for kind in kinds:
                        round_.start_soon(one, kind, i)
    finally:
        await stop(honest)
    results = []
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
    return results
