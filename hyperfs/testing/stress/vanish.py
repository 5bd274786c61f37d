"""A seeder vanishes mid-transfer: its requests must move to the other seeder."""

from __future__ import annotations

import json
import shutil
import signal
import statistics
from pathlib import Path

import trio

from hyperfs import open_core
from hyperfs.feeds.feed import Feed
from hyperfs.net.node import Node, open_node
from hyperfs.testing.network import HyperfsProcess, PeerLog
from hyperfs.testing.stress.common import (
    HOST,
    Config,
    MiB,
    Result,
    afsck,
    make_data,
    serve,
    stop,
    store,
)


class Vanisher:
    """Signals seeder ``a`` once it has served 20 blocks and a quarter of the feed is
    stored, and only then dials seeder ``b``: so ``a`` is always the one asked, and the
    blocks still missing when it vanishes can only come from ``b``."""

    def __init__(self, a: HyperfsProcess, pa: int, pb: int, sig: int, log: PeerLog) -> None:
        self.a, self.pa, self.pb, self.sig, self.log = a, pa, pb, sig, log
        self.node: Node | None = None
        self.when: float | None = None

    def feed_stored(self, feed: Feed, _block: int) -> None:
        if self.when is not None or self.node is None:
            return
        served = sum(p.blocks_in for p in self.log.by_port(self.pa))
        if feed.local > (feed.blocks or 1) // 4 and served >= 20:
            self.a.kill(self.sig)
            self.when = trio.current_time()
            self.node.connect(f"{HOST}:{self.pb}")

    def feed_wants(self, feed: Feed, block: int) -> None:
        pass

    def feed_unwants(self, feed: Feed, block: int) -> None:
        pass

    def feed_prefetch(self, feed: Feed, block: int) -> None:
        pass

    def reason(self) -> str:
        """Why the fetcher closed on the vanished seeder (or why there is none)."""
        victims = self.log.by_port(self.pa)
        if not victims:
            return "never finished its handshake"
        # A stopped seeder whose requests all went elsewhere is an idle connection, not
        # an offender: it may well still be open.
        return victims[0].close_reason or "still open, nothing asked of it"


async def fetch_once(cfg: Config, work: Path, fid: bytes, data: bytes, sig: int,
                     rep: int) -> tuple[bool, str, float | None]:
    """One download from seeder a (signalled mid-way) then b: (held, note, seconds from
    the signal to the end of the download)."""
    a, pa = await serve(work / "a")
    b, pb = await serve(work / "b")
    db = work / f"f{sig}-{rep}"
    try:
        async with open_core(db) as core:
            log = PeerLog(core)
            vanisher = Vanisher(a, pa, pb, sig, log)
            with core.get(fid) as feed:
                feed.listen(vanisher)
                async with open_node(core, request_timeout=cfg.vanish_timeout,
                                     peers=[f"{HOST}:{pa}"]) as node:
                    vanisher.node = node
                    with trio.move_on_after(cfg.vanish_timeout + 20) as scope:
                        await feed.download()
                    if scope.cancelled_caught:
                        return False, (f"download stalled at {feed.local}/{feed.blocks}: "
                                       f"{json.dumps(node.status(), default=str)[:1500]}"), None
                    done = trio.current_time()
                correct = b"".join(feed.read_local(i) or b""
                                   for i in range(feed.blocks or 0)) == data
    finally:
        await stop(a)
        await stop(b)
    if vanisher.when is None:
        return False, "seeder a never served 20 blocks: no signal sent", None
    seconds = done - vanisher.when
    good = correct and seconds < cfg.vanish_timeout + 5
    note = f"reason {vanisher.reason()!r}, done {seconds:.2f} s, correct {correct}"
    ok, line = await afsck(db)
    if not ok:
        return False, f"fetcher fsck: {line}", seconds
    if sig == signal.SIGKILL:
        ok, line = await afsck(work / "a")  # the killed seeder's database
        if not ok:
            return False, f"killed seeder's fsck: {line}", seconds
    return good, note, seconds


async def case_vanish(cfg: Config, work: Path) -> list[Result]:
    """A seeder vanishes mid-transfer (SIGSTOP: silent; SIGKILL: connection reset):
    its requests move to the other seeder. Also fsck of the killed seeder's database."""
    work.mkdir()
    data = make_data((8 if cfg.quick else 32) * MiB, 6)
    fid = await store(work / "a", data, block_size=16 * 1024)
    shutil.copytree(work / "a", work / "b")
    results = []
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        rows = [await fetch_once(cfg, work, fid, data, sig, rep)
                for rep in range(cfg.vanish_reps)]
        dones = [seconds for _, _, seconds in rows if seconds is not None]
        name = ("seeder stopped mid-transfer (SIGSTOP)" if sig == signal.SIGSTOP else
                "seeder killed mid-transfer (SIGKILL: connection reset)")
        worst = f"{max(dones):.2f}" if dones else "-"
        median = f"{statistics.median(dones):.2f}" if dones else "-"
        results.append(Result(
            name, len(rows), sum(good for good, _, _ in rows),
            f"download done {worst} s after the signal at worst (request timeout "
            f"{cfg.vanish_timeout:g} s), {median} s median; data correct, fsck ok"
            + ("; killed seeder's db fsck ok" if sig == signal.SIGKILL else ""),
            [note for good, note, _ in rows if not good]))
    return results
