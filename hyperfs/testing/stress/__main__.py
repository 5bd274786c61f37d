"""The stress runner: every case group, one Markdown table (or JSON) of what held.

    python -m hyperfs.testing.stress [--quick] [--json] [--only GROUP,...] [--keep]

(``scripts/stress.py`` is this.) Everything started is ended by PID and every mount is
unmounted, even when a case fails. Exit status 0 when every case held.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path

import trio

from hyperfs.testing.mounts import Mounts
from hyperfs.testing.procs import terminate_all
from hyperfs.testing.stress.clients import case_hostile_clients
from hyperfs.testing.stress.common import Config, Result, crashed
from hyperfs.testing.stress.disk import case_corruption, case_disk_full
from hyperfs.testing.stress.fuzz import case_fuzz
from hyperfs.testing.stress.kills import case_kills
from hyperfs.testing.stress.load import case_leechers, case_many_feeds, case_readers
from hyperfs.testing.stress.security import case_security
from hyperfs.testing.stress.seeders import case_hostile_servers
from hyperfs.testing.stress.vanish import case_vanish

DESCRIPTION = "Reliability and security of hyperfs under load, faults and hostile peers."

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
and subprocesses), then fuzzing alone (it is CPU-bound in this process).

Each of the two runs in a process of its own: the cases do CPU-bound work in their event
loop (making data, hashing files, opening databases), and a lane blocking a shared loop
for a second made the other lane's attackers late for their own deadlines (a hostile
client's handshake, or its reading of the victim's close), so cases failed by the
harness's fault, not the victim's."""


async def main_async(cfg: Config, work: Path, only: list[str]) -> list[Result]:
    if not cfg.quick or only:
        return await run_groups(cfg, work, [n for n in GROUPS if not only or n in only])
    found: list[Result] = []

    async def lane(names: tuple[str, ...]) -> None:
        found.extend(await run_lane_process(names))

    async with trio.open_nursery() as nursery:
        for names in LANES[:2]:
            nursery.start_soon(lane, names)
    found.extend(await run_groups(cfg, work, list(LANES[2])))
    order = {name: i for i, name in enumerate(GROUPS)}
    return sorted(found, key=lambda r: order.get(r.group, len(order)))


async def run_lane_process(names: tuple[str, ...]) -> list[Result]:
    """The quick run of ``names`` in a child process (its progress lines go to our
    stderr), read back from its JSON."""
    argv = [sys.executable, "-m", "hyperfs.testing.stress", "--quick", "--json",
            "--only", ",".join(names)]
    done = await trio.run_process(argv, capture_stdout=True, stderr=None, check=False,
                                  deliver_cancel=interrupt)
    try:
        cases = json.loads(done.stdout)["cases"]
    except (ValueError, KeyError) as exc:
        return [crashed(f"lane {','.join(names)} (exit {done.returncode})", exc)]
    return [Result(**{k: v for k, v in case.items() if k != "ok"}) for case in cases]


async def interrupt(process: trio.Process) -> None:
    """Cancel a lane as Ctrl-C would, so it unmounts and ends what it started."""
    process.send_signal(signal.SIGINT)
    with trio.move_on_after(30):
        await process.wait()
    process.kill()


async def run_groups(cfg: Config, work: Path, names: list[str]) -> list[Result]:
    results: list[Result] = []
    for name in names:
        group = GROUPS[name]
        started = time.monotonic()
        try:
            found = await group(cfg, work / name)
        except Exception as exc:  # a case that crashes did not hold; go on with the rest
            traceback.print_exc()
            found = [crashed(name, exc)]
        for result in found:
            result.group = name
        print(f"stress: {name}: {time.monotonic() - started:.1f} s", file=sys.stderr,
              flush=True)
        results.extend(found)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stress", description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    parser.add_argument("--only", default="", help=f"comma-separated groups: {', '.join(GROUPS)}")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    cfg = Config.make(args.quick)
    only = [w for w in args.only.split(",") if w]
    work = Path(tempfile.mkdtemp(prefix="hyperfs-stress-"))
    started = time.monotonic()
    cfg.mounts = Mounts(work)
    try:
        results = trio.run(main_async, cfg, work, only)
    finally:
        terminate_all()
        cfg.mounts.cleanup()
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
