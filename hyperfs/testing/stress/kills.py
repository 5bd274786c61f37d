"""SIGKILL at random moments: of `hyperfs mount` during a cp in and around finalize, and
of `hyperfs cat` during replication. After each: fsck passes, no partial feed is visible,
and a resumed download fetches exactly the blocks that were not stored."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import trio

from hyperfs import open_core
from hyperfs.net.node import open_node
from hyperfs.testing.mounts import Mounted, Mounts
from hyperfs.testing.network import ENV, HYPERFS, LOCAL_ONLY, PeerLog
from hyperfs.testing.stress.common import (
    HOST,
    Config,
    MiB,
    Result,
    afsck,
    als_feeds,
    command,
    file_sha,
    hyperfs,
    make_data,
    mount,
    sha,
    stop,
    store,
)


async def mount_round(cfg: Config, work: Path, rng: random.Random, kind: str, k: int,
                      state: dict[str, Any]) -> tuple[bool, str]:
    """SIGKILL the mount during a cp into it (``kind`` cp-in: any moment; finalize: near
    the end of the copy), then check the database and what the next mount shows."""
    db, mnt, src = work / "mdb", work / "mnt", work / "src.bin"
    proc: Mounted | None = state.get("mount")
    if proc is None:
        proc = await mount(state["mounts"], db, mnt)
    t_cp = state["t_cp"]
    delay = rng.uniform(0, t_cp) if kind == "cp-in" else rng.uniform(0.8 * t_cp, 1.1 * t_cp)
    name = f"f{k}"
    cp = subprocess.Popen(["cp", str(src), str(mnt / name)], stderr=subprocess.DEVNULL)
    await trio.sleep(delay)  # the random moment of the kill
    await stop(proc, signal.SIGKILL)
    await trio.to_thread.run_sync(cp.wait, 30)
    await command("fusermount3", "-uz", mnt)
    ok, line = await afsck(db)
    if not ok:
        state["mount"] = None
        return False, f"fsck after kill at {delay:.2f} s: {line}"
    state["mount"] = await mount(state["mounts"], db, mnt)
    names = [n for n in os.listdir(mnt) if not re.fullmatch(r"[0-9a-f]{64}", n)
             and n != ".status"]
    feeds = [n for n in os.listdir(mnt) if re.fullmatch(r"[0-9a-f]{64}", n)]
    bad = [n for n in names if file_sha(mnt / n) != state["src_sha"]]
    if len(feeds) != 1 or bad:  # every cp is of the same content: one feed
        return False, f"after kill at {delay:.2f} s: names {names}, feeds {feeds}, bad {bad}"
    state["completed"] += name in names
    return True, ""


async def all_closed(log: PeerLog) -> None:
    """Until every peer the seeder has seen has closed (the caller bounds the wait)."""
    while still_open := [p for p in log.peers if not p.closed.is_set()]:
        await still_open[0].closed.wait()


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
            [*HYPERFS, "--db", str(db), "cat", fid.hex(), "--peer", f"{HOST}:{port}",
             *LOCAL_ONLY],
            stdout=f, stderr=subprocess.DEVNULL, env=ENV)
    await trio.sleep(delay)  # the random moment of the kill
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    with trio.fail_after(10):  # the seeder notices the reset
        await all_closed(log)
    ok, line = await afsck(db)
    if not ok:
        return False, f"fsck after kill at {delay:.2f} s: {line}"
    feeds = await als_feeds(db)
    local = feeds[0][2] if feeds else 0
    sent_before = sum(p.blocks_out for p in log.peers)
    with open(out, "wb") as f:
        result = await hyperfs("--db", db, "cat", fid.hex(), "--peer", f"{HOST}:{port}",
                               stdout=f)
    with trio.fail_after(10):
        await all_closed(log)
    sent = sum(p.blocks_out for p in log.peers) - sent_before
    good = result.returncode == 0 and file_sha(out) == state["sha"] and sent == blocks - local
    state["resumed_local"].append(local)
    out.unlink()
    shutil.rmtree(db, ignore_errors=True)
    return good, "" if good else (f"kill at {delay:.2f} s: local {local}, resent {sent} "
                                  f"of {blocks}, rc {result.returncode}")


Outcome = dict[str, list[tuple[bool, str]]]


async def kill_rounds(cfg: Config, work: Path, mounts: Mounts
                      ) -> tuple[Outcome, dict[str, Any], dict[str, Any]]:
    """Calibrate a cp in and a download, then run the mount lane and the replication lane
    at once: (held and note per round and kind, mount lane state, replication state)."""
    rng = random.Random(11)
    src = make_data(32 * MiB, 4)
    (work / "src.bin").write_bytes(src)
    rep = make_data(48 * MiB, 5)
    mstate: dict[str, Any] = {"src_sha": sha(src), "completed": 0, "mounts": mounts}
    # calibrate: how long a whole cp takes through the mount
    proc = await mount(mounts, work / "mdb", work / "mnt")
    t0 = time.monotonic()
    await command("cp", work / "src.bin", work / "mnt" / "calibration", check=True)
    mstate["t_cp"] = time.monotonic() - t0
    mstate["mount"] = proc
    outcome: Outcome = {"cp-in": [], "finalize": [], "replicate": []}
    async with open_core(work / "seed") as core:
        fid = await store(core, rep, block_size=16 * 1024)
        log = PeerLog(core)
        async with open_node(core, listen=f"{HOST}:0") as node:
            assert node.address is not None
            rstate: dict[str, Any] = {"log": log, "fid": fid, "blocks": len(rep) // 16384,
                                      "port": node.address[1], "sha": sha(rep),
                                      "resumed_local": []}
            t0 = time.monotonic()
            calibration = await hyperfs("--db", work / "calib", "cat", fid.hex(), "--peer",
                                        f"{HOST}:{node.address[1]}")
            assert calibration.returncode == 0, calibration.stderr
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
        await stop(mstate["mount"])
    return outcome, mstate, rstate


async def case_kills(cfg: Config, work: Path) -> list[Result]:
    """SIGKILL at random moments: mount during cp in and during finalize, cat during
    replication; 2 lanes at once (mount lane, replication lane)."""
    work.mkdir()
    outcome, mstate, rstate = await kill_rounds(cfg, work, cfg.mounts)
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


