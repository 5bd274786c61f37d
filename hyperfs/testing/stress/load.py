"""Load: many leechers of one seeder, many feeds in one database, many readers through
one mount; data must be correct everywhere, the figures say how fast."""

from __future__ import annotations

import random
import time
from pathlib import Path

import trio

from hyperfs import open_core
from hyperfs.replication.peer import ORDERED_PROOFS
from hyperfs.testing.securepeer import open_secure_peer
from hyperfs.testing.stress.common import (
    HOST,
    Config,
    MiB,
    Result,
    Sampler,
    als_feeds,
    blocks_of,
    command,
    file_sha,
    hyperfs,
    make_data,
    mount,
    serve,
    sha,
    stop,
    store,
)
from hyperfs.wire.capabilities import discovery_key
from hyperfs.wire.events import ResponseReceived, Unpaused


async def raw_leecher(port: int, fid: bytes, parts: list[bytes], window: int = 32) -> bool:
    """A downloader of the whole feed over one encrypted connection (as a hyperfs peer
    would: one listing ``ORDERED_PROOFS`` in plaintext would be refused as a hyperfs peer
    whose encryption offer was stripped), checking every block against the source (the
    seeder's proofs are its own business here)."""
    peer = await open_secure_peer(port, (ORDERED_PROOFS,), HOST)
    peer.known[discovery_key(fid)] = fid
    conn = peer.conn
    await peer.send(conn.join(fid))
    total, asked, got, inflight, ok, unpaused = len(parts), 0, 0, 0, True, False
    events = peer.first
    async with peer.stream:
        while True:
            for event in events:
                if isinstance(event, Unpaused):
                    unpaused = True
                elif isinstance(event, ResponseReceived):
                    ok = ok and event.data == parts[event.block]
                    got += 1
                    inflight -= 1
            if got == total:
                break
            out = bytearray()
            while unpaused and inflight < window and asked < total:
                out += conn.request(fid, asked)
                asked += 1
                inflight += 1
            if out:
                await peer.send(bytes(out))
            received = await peer.receive()
            if received is None:
                return False
            events = received
    return ok


async def case_leechers(cfg: Config, work: Path) -> list[Result]:
    """One `hyperfs serve`, N downloads of the same feed at once (raw protocol
    leechers in this process, plus one real `hyperfs cat`)."""
    work.mkdir()
    data = make_data(cfg.load_bytes, 10)
    parts = blocks_of(data)
    fid = await store(work / "seed", data)
    proc, port = await serve(work / "seed")
    try:
        sampler = Sampler(proc.pid)
        oks: list[bool] = []
        started = time.monotonic()
        cat_ok: list[bool] = []

        async def real_cat() -> None:
            with open(work / "cat.out", "wb") as f:
                result = await hyperfs("--db", work / "cat", "cat", fid.hex(), "--peer",
                                       f"{HOST}:{port}", stdout=f, timeout=900)
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
        await stop(proc)
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
    feeds = await als_feeds(db)
    t_ls = time.monotonic() - t0
    t0 = time.monotonic()
    proc = await mount(cfg.mounts, db, work / "mnt")
    t_mount = time.monotonic() - t0
    try:
        t0 = time.monotonic()
        listing = (await command("ls", work / "mnt", check=True)).stdout.split()
        t_dir = time.monotonic() - t0
        t0 = time.monotonic()
        await command("ls", "-l", work / "mnt", check=True)
        t_dirl = time.monotonic() - t0
    finally:
        await stop(proc)
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
    proc = await mount(cfg.mounts, work / "db", mnt)
    try:
        t0 = time.monotonic()
        single = (await command("cat", mnt / "r0")).stdout == datas[0]
        t_single = time.monotonic() - t0
        oks: list[bool] = []

        async def reader(k: int) -> None:
            path = mnt / (f"r{k}" if k % 2 else f"{ids[k].hex()}/.feed")
            oks.append((await command("cat", path)).stdout == datas[k])

        async def blocks(k: int) -> None:
            rng = random.Random(k)
            picks = rng.sample(range(size // 65536), 16)
            for i in picks:
                got = (await command("cat", mnt / ids[k].hex() / str(i))).stdout
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
        await stop(proc)
    good = single and all(oks)
    return [Result(f"load: {n} concurrent readers through one mount ({size // MiB} MiB feeds)",
                   len(oks) + 1, (sum(oks) + single) if good else 0,
                   f"aggregate {n * size / t_many / 1e6:.0f} MB/s vs one reader "
                   f"{size / t_single / 1e6:.0f} MB/s; plus {n * 16} block files read "
                   "concurrently; all correct")]


