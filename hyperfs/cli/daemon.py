"""A mount's life outside the terminal: `mount --daemon`, systemd's readiness, the pid file.

``hyperfs mount --daemon MNT`` forks nothing inside its trio program: it starts the same
command again as a detached child (its own session, stdin /dev/null, output appended to a
log under the XDG state directory), with :data:`READY_ENV` naming the write end of a pipe;
that tells the child it is the daemon, so it mounts in the foreground and writes "ready"
into the pipe once the kernel has the mount. The parent returns when it reads that (exit
status 0), or when the pipe closes first: the child has failed, and the end of its log
(its one-line error) says why (exit status 1).

Every mount, in the background or not, announces itself the same way once ready
(:class:`Readiness`): READY=1 to systemd when it runs us as a Type=notify service, and a
pid file next to the mount point's log, by which ``hyperfs umount`` finds the process to
wait for (:class:`MountProcess`).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

log = logging.getLogger("hyperfs.daemon")

READY_ENV = "HYPERFS_READY_FD"
READY_TIMEOUT = 60.0
"""Seconds `mount --daemon` waits for its child to mount before stopping it."""
EXIT_TIMEOUT = 20.0
"""Seconds to wait for a mount's process to end once its mount is gone."""
LOG_LINES = 10
"""How much of a failed child's log `mount --daemon` shows when it is not one line."""


def state_dir() -> Path:
    """Where logs and pid files go: $XDG_STATE_HOME/hyperfs, else ~/.local/state/hyperfs."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "hyperfs"


@dataclass(frozen=True)
class MountFiles:
    """The log and pid file of one mount point, named after it: its last component (for
    people) and a hash of its whole real path (so that two points never share them)."""

    log: Path
    pid: Path

    @classmethod
    def of(cls, mountpoint: Path) -> MountFiles:
        point = os.path.realpath(os.path.expanduser(mountpoint))
        digest = hashlib.sha256(os.fsencode(point)).hexdigest()[:12]
        stem = f"{os.path.basename(point) or 'root'}-{digest}"
        return cls(state_dir() / f"{stem}.log", state_dir() / f"{stem}.pid")


def is_daemon_child() -> bool:
    """Whether this process is the child a `mount --daemon` started (and waits for)."""
    return READY_ENV in os.environ


# -- systemd ----------------------------------------------------------------------------


def sd_notify(state: str) -> None:
    """Send ``state`` (READY=1, STOPPING=1) to systemd when it started us with
    NOTIFY_SOCKET set (Type=notify): one datagram to that unix socket, a path or, written
    @name, an abstract one. The whole protocol is this; it needs no library."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot tell systemd %s at NOTIFY_SOCKET: %s", state, exc)


# -- the pid file -----------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """When the process started (in clock ticks since boot): with the pid, it names one
    process, never one that reused the pid after it ended."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22; the name before ")" may hold spaces


def _recorded_pid(path: Path) -> int | None:
    """The pid in the pid file at ``path`` if that process still runs, else None."""
    try:
        pid_text, start = path.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if _start_time(pid) == start else None


class Readiness:
    """Tells whoever waits that the mount is ready (:meth:`ready`, the ``on_ready`` of
    :func:`~hyperfs.fs.mount.run_mount`): the `--daemon` parent, systemd and, through
    the pid file, `hyperfs umount`. Leaving the ``with`` block says the mount is gone."""

    def __init__(self, mountpoint: Path) -> None:
        self.pid_file = MountFiles.of(mountpoint).pid
        fd = os.environ.pop(READY_ENV, None)
        self._parent = int(fd) if fd else None
        if self._parent is not None:
            os.set_inheritable(self._parent, False)  # not for fusermount3 and the like
        self._ready = False

    def ready(self) -> None:
        self.pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.pid_file.write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        self._ready = True
        if self._parent is not None:
            os.write(self._parent, b"ready\n")
            os.close(self._parent)
            self._parent = None
        sd_notify("READY=1")

    def __enter__(self) -> Readiness:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._parent is not None:
            os.close(self._parent)  # the parent sees the pipe close: we failed
        if self._ready:
            sd_notify("STOPPING=1")
            if _recorded_pid(self.pid_file) == os.getpid():
                self.pid_file.unlink()


class MountProcess:
    """The running process of a mount point, from its pid file: a pidfd, so that waiting
    for it to end needs no polling and can never mistake another process for it."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid, self._pidfd = pid, pidfd

    @classmethod
    def find(cls, mountpoint: Path) -> MountProcess | None:
        pid_file = MountFiles.of(mountpoint).pid
        pid = _recorded_pid(pid_file)
        if pid is None:
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        if _recorded_pid(pid_file) != pid:  # it ended and the pid was reused meanwhile
            os.close(pidfd)
            return None
        return cls(pid, pidfd)

    async def wait(self, timeout: float) -> bool:
        """Whether the process ended within ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            await trio.lowlevel.wait_readable(self._pidfd)
            return True
        return False

    def __enter__(self) -> MountProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._pidfd)


# -- mount --daemon: the parent ---------------------------------------------------------


async def start_daemon(argv: Sequence[str], mountpoint: Path) -> int:
    """Start ``hyperfs argv`` (a `mount --daemon`) as a detached child and wait until it
    has mounted (0) or failed (1, with its error on stderr)."""
    log_path = MountFiles.of(mountpoint).log
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    read_end, write_end = os.pipe()
    with open(log_path, "ab") as log_file:
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        log_file.write(f"--- {started} hyperfs {shlex.join(argv)}\n".encode())
        log_file.flush()
        offset = log_file.tell()
        try:
            child = await trio.lowlevel.open_process(
                [sys.executable, "-m", "hyperfs.cli", *argv], stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=log_file, start_new_session=True,
                pass_fds=(write_end,), env={**os.environ, READY_ENV: str(write_end)})
        finally:
            os.close(write_end)  # the child's copy is now the only one: EOF when it ends
    async with trio.lowlevel.FdStream(read_end) as pipe:
        with trio.move_on_after(READY_TIMEOUT) as waiting:
            said = await _read_line(pipe)
    if said == b"ready\n":
        print(f"hyperfs: mounted at {os.path.abspath(mountpoint)} (pid {child.pid}); "
              f"log: {log_path}", flush=True)
        return 0
    if waiting.cancelled_caught:
        message = f"hyperfs: no mount within {READY_TIMEOUT:.0f} s; stopped it (log: {log_path})"
    else:
        with trio.move_on_after(EXIT_TIMEOUT):
            await child.wait()
        message = _failure(child.returncode, log_path, offset)
    if child.returncode is None:
        child.terminate()  # SIGTERM: it unmounts if it got that far
        with trio.move_on_after(EXIT_TIMEOUT):
            await child.wait()
    print(message, file=sys.stderr)
    return 1


async def _read_line(pipe: trio.lowlevel.FdStream) -> bytes:
    """What the child wrote up to its first newline; b"" if it closed the pipe first."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = await pipe.receive_some()
        if not chunk:
            return b""
        data += chunk
    return data


def _failure(status: int | None, log_path: Path, offset: int) -> str:
    """The message of a child that ended before it was ready: its own one-line error when
    it printed one (exit status 1), else the end of its log."""
    try:
        with open(log_path, "rb") as log_file:
            log_file.seek(offset)
            lines = log_file.read().decode(errors="replace").splitlines()
    except OSError:
        lines = []
    if status == 1 and lines and lines[-1].startswith("hyperfs: "):
        return lines[-1]
    how = "hung (stopped now)" if status is None else f"exited with status {status}"
    tail = "".join(f"\n  {line}" for line in lines[-LOG_LINES:])
    return f"hyperfs: the mount process {how} before the mount was ready; {log_path}:{tail}"
