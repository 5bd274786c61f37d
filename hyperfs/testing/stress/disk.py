"""Faults of the disk: a full one during a cp into the mount, and blocks corrupted on it
behind hyperfs's back (never returned, fetched again from a peer)."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
from pathlib import Path

from hyperfs.testing.damage import damage_block, flip_a_byte
from hyperfs.testing.stress.common import (
    HOST,
    Config,
    MiB,
    Result,
    afsck,
    als_feeds,
    blocks_of,
    command,
    file_sha,
    make_data,
    mount,
    serve,
    sha,
    stop,
    store,
)


async def case_disk_full(cfg: Config, work: Path) -> list[Result]:
    """The database on a 20 MiB tmpfs; cp of 40 MiB into the mount must fail with ENOSPC,
    leave nothing behind, and the mount must go on working."""
    work.mkdir()
    space, db, mnt = work / "space", work / "space" / "db", work / "mnt"
    space.mkdir()
    await command("mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", space, check=True)
    notes: list[str] = []
    checks: dict[str, bool] = {}
    try:
        small, big = make_data(MiB, 7), make_data(40 * MiB, 8)
        (work / "small").write_bytes(small)
        (work / "big").write_bytes(big)
        (work / "after").write_bytes(small[: 64 * 1024])
        proc = await mount(cfg.mounts, db, mnt)
        try:
            await command("cp", work / "small", mnt / "small", check=True)
            result = await command("cp", work / "big", mnt / "big")
            err = result.stderr.decode(errors="replace")
            checks["cp fails with ENOSPC"] = (result.returncode != 0
                                              and os.strerror(errno.ENOSPC) in err)
            notes.append(f"cp: {err.strip()[-200:]}")
            listing = sorted(n for n in os.listdir(mnt) if n != ".status")
            checks["nothing partial listed"] = ("big" not in listing
                                                and len(listing) == 2)  # small + its feed
            notes.append(f"listing after: {listing}")
            checks["earlier file still reads"] = file_sha(mnt / "small") == sha(small)
            again = await command("cp", work / "after", mnt / "after")
            if again.returncode != 0:
                notes.append(f"64 KiB cp on the full disk: {again.stderr.decode().strip()}")
                await command("mount", "-o", "remount,size=64m", space, check=True)  # space freed
                again = await command("cp", work / "after", mnt / "after")
            checks["mount alive"] = proc.proc.poll() is None and os.path.ismount(mnt)
            after_ok = again.returncode == 0 and file_sha(mnt / "after") == sha(
                small[: 64 * 1024])
            notes.append(f"a 64 KiB cp once space is freed, same mount: "
                         f"{'works' if after_ok else again.stderr.decode().strip()}")
            checks["same mount takes a cp again once space is freed"] = after_ok
        finally:
            await stop(proc)
        await command("mount", "-o", "remount,size=64m", space, check=True)  # space freed
        ok, line = await afsck(db)
        checks["fsck once space is freed"] = ok
        feeds = await als_feeds(db)
        checks["no partial feed stored"] = all(b == loc for _, b, loc in feeds)
        notes.append(f"fsck: {line}; {len(feeds)} feeds stored")
    finally:
        if (await command("umount", space)).returncode != 0:
            await command("umount", "-l", space)
    failed = [k for k, v in checks.items() if not v]
    return [Result("disk full during cp into the mount (20 MiB tmpfs, 40 MiB file)",
                   len(checks), len(checks) - len(failed),
                   "; ".join(k for k in checks if checks[k]) + (
                       f"; FAILED: {', '.join(failed)}" if failed else ""), notes)]


def corrupt_blocks(db: Path, fid: bytes, indexes: list[int]) -> list[bytes]:
    """Flip a byte of the stored data of some blocks, behind hyperfs's back; returns the
    damaged blocks."""
    return [damage_block(db, fid, index, flip_a_byte) for index in indexes]


def honest(result: subprocess.CompletedProcess[bytes], want: bytes,
           damaged: list[bytes]) -> bool:
    """A read held when it returned exactly ``want`` or failed having returned only a
    correct beginning of it; and never any damaged block, whole."""
    out = result.stdout
    if any(block in out for block in damaged):
        return False
    return out == want if result.returncode == 0 else want.startswith(out)


async def case_corruption(cfg: Config, work: Path) -> list[Result]:
    """Blocks corrupted on disk: a read never returns them (without a peer it waits and
    times out), and with a peer they are fetched again and read correctly."""
    work.mkdir()
    data = make_data(4 * MiB, 9)
    parts = blocks_of(data)
    fid = await store(work / "seed", data)
    shutil.copytree(work / "seed", work / "local")
    bad = sorted(random.Random(3).sample(range(len(parts)), 8))
    damaged = corrupt_blocks(work / "local", fid, bad)
    checks: dict[str, bool] = {}
    notes: list[str] = []
    mnt = work / "mnt"
    proc = await mount(cfg.mounts, work / "local", mnt, "--timeout", 1)
    try:
        alone = {i: await command("cat", mnt / fid.hex() / str(i)) for i in bad[:3]}
        checks["alone: a corrupted block fails to read, its bytes never returned"] = all(
            r.returncode != 0 and honest(r, parts[i], damaged) for i, r in alone.items())
        notes.append(f"alone: {alone[bad[0]].stderr.decode().strip()}")
    finally:
        await stop(proc)
    seed, port = await serve(work / "seed")
    try:
        proc = await mount(cfg.mounts, work / "local", mnt, "--peer", f"{HOST}:{port}")
        try:
            got = {i: await command("cat", mnt / fid.hex() / str(i)) for i in bad}
            checks["with a peer: every corrupted block fetched again and read correctly"] = \
                all(r.returncode == 0 and honest(r, parts[i], damaged) for i, r in got.items())
            whole = await command("cat", mnt / fid.hex() / ".feed")
            checks["whole feed reads correctly"] = whole.returncode == 0 and honest(
                whole, data, damaged)
        finally:
            await stop(proc)
    finally:
        await stop(seed)
    ok, line = await afsck(work / "local")
    checks["fsck"] = ok
    feeds = await als_feeds(work / "local")
    checks["all blocks local again"] = feeds[0][2] == len(parts)
    notes.append(f"fsck: {line}")
    failed = [k for k, v in checks.items() if not v]
    return [Result(f"{len(bad)} blocks corrupted on disk behind our back", len(checks),
                   len(checks) - len(failed),
                   "detected on read (leaf hash), never returned, re-fetched from the "
                   "peer; fsck ok" + (f"; FAILED: {', '.join(failed)}" if failed else ""),
                   notes)]


