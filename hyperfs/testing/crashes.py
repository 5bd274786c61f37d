"""Kill -9 a child process at a random point of its work: the crash tests' one pattern.

The child is Python code that says a line after every operation; the parent reads a
given number of lines, then sends SIGKILL, so the kill lands at a random point of
whatever the child does next, with no sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

PRELUDE = textwrap.dedent("""
    import os, random, sys, trio
    from hyperfs import open_core
    src_path, dst_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rnd = random.Random(seed)
    def say(what):
        sys.stdout.write(what + "\\n")
        sys.stdout.flush()
""")
"""What every child starts with: its two databases, its seeded ``rnd`` and ``say``."""


def kill_after(body: str, src: Path, dst: Path, seed: int, lines: int) -> list[str]:
    """Run :data:`PRELUDE` + ``body`` (which defines ``async def main()``) with trio,
    and SIGKILL it once it has said ``lines`` lines; returns those lines."""
    code = PRELUDE + textwrap.dedent(body) + "\ntrio.run(main)\n"
    child = subprocess.Popen([sys.executable, "-c", code, str(src), str(dst), str(seed)],
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
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
    return said
