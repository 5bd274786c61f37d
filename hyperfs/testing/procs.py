"""Subprocesses the tests start: output read by threads, and an end that is guaranteed.

Threads read a child's stdout (line by line, into a queue) and stderr (kept for failure
messages), so the child never blocks on a full pipe whatever the test is doing meanwhile.
Every child is registered: :func:`terminate_all` ends exactly the processes tests started,
by PID, and the conftest fixture calls it after every test.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import select
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence

_live: set[Watched] = set()
_live_lock = threading.Lock()


class Watched:
    """A running child process whose stdout lines can be waited for."""

    def __init__(self, args: Sequence[str], *, cwd: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None, stdin: bytes | None = None,
                 keep_stdin: bool = False) -> None:
        """``stdin`` is written to the child's standard input, which is then closed,
        unless ``keep_stdin`` (then :meth:`write_line` says more, as the test goes on)."""
        self.args = [str(arg) for arg in args]
        piped = stdin is not None or keep_stdin
        self.proc = subprocess.Popen(
            self.args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.PIPE if piped else subprocess.DEVNULL)
        self.pid = self.proc.pid
        with _live_lock:
            _live.add(self)
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: list[bytes] = []
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for thread in self._threads:
            thread.start()
        if stdin is not None:
            self.write_line(stdin)
        if not keep_stdin:
            self._close_stdin()

    def write_line(self, line: bytes) -> None:
        """Write to the child's standard input (kept open: ``keep_stdin``), at once."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(line)
            self.proc.stdin.flush()

    def _close_stdin(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._line(line)
        self._lines.put(None)  # end of output

    def _line(self, line: bytes) -> None:
        """Called in the reader thread for each stdout line (subclasses parse here)."""
        self._lines.put(line)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        """What the child wrote to stderr so far."""
        return b"".join(self._stderr).decode(errors="replace")

    def next_line(self, timeout: float) -> bytes | None:
        """The next stdout line, or None once the output ended (the child exited).

        Raises queue.Empty when nothing came within ``timeout`` seconds.
        """
        line = self._lines.get(timeout=max(timeout, 0))
        if line is None:
            self._lines.put(None)  # keep the end visible to later calls
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        return line

    def join_readers(self) -> None:
        for thread in self._threads:
            thread.join(5)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to this process (by its PID) unless it already ended."""
        if self.proc.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        """End it with ``sig`` (a stopped process is continued first so it can act on
        it), SIGKILL if it outlives ``timeout``; returns its exit status."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
            self.kill(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.proc.wait(10)
        self.terminate()  # only forgets it: it has ended
        return self.proc.returncode

    def memory(self) -> dict[str, int]:
        """VmRSS, RssAnon and VmHWM (kB) of the process now (empty once it ended)."""
        return memory(self.pid)

    def terminate(self) -> None:
        """End this process and reap it; harmless if it already ended."""
        self._close_stdin()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> Watched:
        return self

    def __exit__(self, *exc: object) -> None:
        self.terminate()


def memory(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon and VmHWM (kB) of process ``pid`` now, from /proc."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def terminate_all() -> None:
    """End every process started through :class:`Watched` that still runs."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        proc.terminate()


atexit.register(terminate_all)


def pids_mentioning(text: str) -> list[int]:
    """Processes (other than this one) with an argument containing ``text``: given a
    test's own temporary directory, exactly the processes the test started through
    others, such as the child of a `hyperfs mount --daemon`, which outlives its parent."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                args = cmdline.read().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        if any(os.fsencode(text) in arg for arg in args):
            found.append(int(entry))
    return found


def has_ended(pid: int) -> bool:
    """Whether process ``pid`` has exited (gone, or a zombie its parent has not reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def end_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM process ``pid`` (not a child of ours), then SIGKILL it if it has not ended
    within ``timeout`` s; waits on a pidfd, so it cannot hit a later process of that pid."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if has_ended(pid):
                return
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, sig)
            select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)


SAY = '''import sys
def say(what):
    sys.stdout.write(what + "\\n")
    sys.stdout.flush()
'''
"""The start of a child script for :func:`kill_after_lines`: ``say`` prints a line after
each operation, so that the parent can count them."""


def kill_after_lines(code: str, args: Sequence[object], lines: int,
                     cwd: str | os.PathLike[str] | None = None) -> list[str]:
    """Run ``code`` (a Python script starting with :data:`SAY`) with ``args``, read
    ``lines`` of its lines and SIGKILL it: it dies at a random point of whatever it does
    after that line, with no sleep standing in for the moment. Returns the lines read
    (without their newline); AssertionError if it exits before."""
    import sys

    child = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=cwd,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    said = []
    try:
        for _ in range(lines):
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"child exited early with {child.wait()}")
            said.append(line.rstrip("\n"))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    return said


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far, all its threads."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
