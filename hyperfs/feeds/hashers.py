"""The trio side of the hash workers (:mod:`.hashworker`): processes that hash the blocks
of a file this process writes, while it goes on copying and indexing.

:func:`open_hashers` starts them and ends them: at the end of its ``async with`` they
are told there is no more work and waited for; on an error or a cancellation (Ctrl-C)
they are killed and reaped, so none outlives the add or the upload. A worker that dies
makes the next :meth:`Hashers.results` raise :class:`HashingFailed` with its last words.
"""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from hyperfs.base.errors import HyperfsError
from hyperfs.feeds import hashworker

WORKER = Path(hashworker.__file__)
COMMAND, RESULT, RESULT_SIZE = hashworker.COMMAND, hashworker.RESULT, hashworker.RESULT_SIZE


class HashingFailed(HyperfsError):
    """A hash worker died or could not read the file: the blocks were not appended."""


@dataclass(frozen=True, slots=True)
class Hashed:
    """What the workers found of a run of blocks: each one's leaf hash and crc32c."""

    leaves: list[bytes]
    crcs: list[int]

    @classmethod
    def parse(cls, raw: bytes) -> Hashed:
        if not raw:
            return cls([], [])
        leaves, crcs = zip(*RESULT.iter_unpack(raw), strict=True)
        return cls(list(leaves), list(crcs))


def block_lengths(length: int, block_size: int) -> list[int]:
    """The sizes of the blocks ``length`` bytes are cut into (the last may be shorter)."""
    return [min(block_size, length - at) for at in range(0, length, block_size)]


class Hashers:
    """Running hash workers of one file: :meth:`submit` runs of bytes (each goes to the
    next worker in turn), :meth:`results` gives their results in the order submitted."""

    def __init__(self, path: Path, block_size: int, processes: list[trio.Process]) -> None:
        self.path, self.block_size = path, block_size
        self._processes = processes
        self._turn = 0
        self._pending: deque[tuple[trio.Process, int]] = deque()

    @property
    def pending(self) -> int:
        """How many submitted runs have not been taken by :meth:`results` yet."""
        return len(self._pending)

    async def submit(self, offset: int, length: int) -> None:
        """Hash the file's bytes ``[offset, offset + length)``, which are written."""
        process = self._processes[self._turn]
        self._turn = (self._turn + 1) % len(self._processes)
        assert process.stdin is not None
        self._pending.append((process, -(-length // self.block_size)))
        try:
            await process.stdin.send_all(COMMAND.pack(offset, length))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise await self._died(process) from None

    async def results(self) -> Hashed:
        """The leaves and crcs of the oldest run submitted and not yet taken."""
        process, blocks = self._pending.popleft()
        assert process.stdout is not None
        want, raw = blocks * RESULT_SIZE, bytearray()
        while len(raw) < want:
            got = await process.stdout.receive_some(want - len(raw))
            if not got:
                raise await self._died(process)
            raw += got
        return Hashed.parse(bytes(raw))

    async def _died(self, process: trio.Process) -> HashingFailed:
        """The error for a worker that stopped answering (its stderr's last line)."""
        status = await process.wait()
        assert process.stderr is not None
        words = (await process.stderr.receive_some(4096)).decode(errors="replace").strip()
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        last = f": {words.splitlines()[-1]}" if words else ""
        return HashingFailed(f"hashing {self.path} failed: the hash worker {how}{last}")

    def kill(self) -> None:
        """End the workers now, from code that cannot wait (an upload discarded): each is
        killed and reaped in the background."""
        for process in self._processes:
            if process.returncode is None:
                process.kill()
                trio.lowlevel.spawn_system_task(process.wait)

    async def close(self) -> None:
        """No more work: end of input for each worker, then wait for it to exit."""
        for process in self._processes:
            assert process.stdin is not None
            await process.stdin.aclose()
        for process in self._processes:
            if await process.wait() != 0:
                raise await self._died(process)


@asynccontextmanager
async def open_hashers(path: Path, block_size: int, count: int = 2) -> AsyncIterator[Hashers]:
    """``count`` hash workers of the file at ``path`` (it must exist), ended on exit:
    closed and waited for after a normal end, killed after an error or a cancel."""
    processes: list[trio.Process] = []
    try:
        for _ in range(count):
            processes.append(await trio.lowlevel.open_process(
                [sys.executable, str(WORKER), str(path), str(block_size)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        hashers = Hashers(path, block_size, processes)
        yield hashers
        await hashers.close()
    finally:
        with trio.CancelScope(shield=True):
            for process in processes:
                if process.returncode is None:
                    process.kill()
                await process.wait()
                for pipe in (process.stdin, process.stdout, process.stderr):
                    if pipe is not None:
                        await pipe.aclose()
