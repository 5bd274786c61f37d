"""Start and always clean up real `hyperfs mount` processes for the filesystem tests.

Each mount is a real ``.venv/bin/hyperfs --db DB mount MNT`` subprocess; readiness is its
"hyperfs: mounted" line (bounded wait), never a fixed sleep. :class:`Mounts` remembers
what it started so the fixture can unmount (fusermount3 -u, then -uz) and end exactly
those processes, by PID, even when a test fails.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

HYPERFS = str(Path(sys.executable).with_name("hyperfs"))
READY_TIMEOUT = 20.0


class MountFailed(RuntimeError):
    """The hyperfs process exited or stayed silent instead of mounting."""


class Mounted:
    """One running `hyperfs mount`: its process, mount point, database and log."""

    def __init__(self, proc: subprocess.Popen[bytes], mnt: Path, db: Path, log: Path) -> None:
        self.proc, self.mnt, self.db, self.log = proc, mnt, db, log
        self.address: str | None = None  # HOST:PORT it listens on, with --listen

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        """Signal the process (Ctrl-C by default) and wait for it to unmount and exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def errors(self) -> str:
        return self.log.read_text(errors="replace")


class Mounts:
    """Starts mounts; :meth:`cleanup` unmounts every mount point and ends its process."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[Mounted] = []
        self.points: set[Path] = set()

    def start(self, db: Path | None = None, mnt: Path | None = None, *args: str,
              expect_ready: bool = True, discovery: bool = False) -> Mounted:
        """Mount; peers come from ``--peer`` only unless ``discovery`` (then ``args``
        must point the DHT at private nodes: HYPERFS_LOCAL_ONLY refuses anything else)."""
        db = db or self.base / f"db{len(self.started)}"
        mnt = mnt or self.base / f"mnt{len(self.started)}"
        if mnt not in self.points:  # a stale mount point cannot even be stat'ed
            mnt.mkdir(parents=True, exist_ok=True)
        log = self.base / f"mount{len(self.started)}.log"
        self.points.add(mnt)
        with open(log, "wb") as err:
            local = () if discovery else ("--no-dht", "--no-mdns")
            proc = subprocess.Popen([HYPERFS, "--db", str(db), "mount", str(mnt),
                                     *local, *args],
                                    stdout=subprocess.PIPE, stderr=err, bufsize=0,
                                    stdin=subprocess.DEVNULL)
        mounted = Mounted(proc, mnt, db, log)
        self.started.append(mounted)
        if expect_ready:
            self._wait_ready(mounted)
        return mounted

    def _wait_ready(self, mounted: Mounted) -> None:
        stdout = mounted.proc.stdout
        assert stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stdout], [], [], deadline - time.monotonic())
            if not ready:
                break
            line = stdout.readline()
            if not line:
                raise MountFailed(f"hyperfs exited ({mounted.proc.wait()}): "
                                  f"{mounted.errors()}")
            if line.startswith(b"hyperfs: listening on "):
                mounted.address = line.split()[-1].decode()
            if line.startswith(b"hyperfs: mounted"):
                assert os.path.ismount(mounted.mnt)
                return
        raise MountFailed(f"no mount within {READY_TIMEOUT} s: {mounted.errors()}")

    def __enter__(self) -> Mounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        for mounted in self.started:
            if mounted.proc.poll() is None:
                mounted.proc.send_signal(signal.SIGINT)
                try:
                    mounted.proc.wait(5)
                except subprocess.TimeoutExpired:
                    mounted.proc.kill()
                    mounted.proc.wait(5)
            if mounted.proc.stdout is not None:
                mounted.proc.stdout.close()
        for mnt in self.points:
            if not is_mounted(mnt):
                continue
            if subprocess.run(["fusermount3", "-u", str(mnt)],
                              capture_output=True).returncode != 0:
                subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)


def feed_dirs(mnt: Path) -> list[str]:
    """The feeds' directories listed at the top of mount ``mnt`` (their 64-hex ids)."""
    return [name for name in os.listdir(mnt) if len(name) == 64]


def is_mounted(path: Path) -> bool:
    """Whether anything (FUSE, tmpfs) is mounted at ``path``, stale mounts included."""
    target = os.fsencode(path)
    with open("/proc/self/mountinfo", "rb") as mountinfo:
        return any(line.split()[4] == target for line in mountinfo)


def run(*cmd: str | Path, check: bool = True, timeout: float = 60,
        input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a command (cp, cat, cmp, getfattr, ls, hyperfs ...) and capture its output."""
    result = subprocess.run([str(c) for c in cmd], capture_output=True, timeout=timeout,
                            input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}): {result.stderr!r}")
    return result
