"""Adding a file by copy and hash workers (hyperfs.feeds.ingest): the same feed as a
stream of the same bytes, and nothing left behind when it fails, is cancelled or killed.

Real LevelDB, real worker processes, real `hyperfs add` processes. Small chunks
(``chunk_bytes``) make small files take many steps, both workers and a partial last
block, so every path runs in a fraction of a second.
"""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

import pytest
import trio
from crc32c import crc32c

from hyperfs import Feed, open_core
from hyperfs.feeds import hashworker, ingest
from hyperfs.feeds.hashers import Hashed, HashingFailed, open_hashers
from hyperfs.feeds.ingest import SourceChanged
from hyperfs.testing.disks import resident
from hyperfs.testing.mounts import HYPERFS, run
from hyperfs.testing.procs import Watched
from hyperfs.testing.workers import data_files, hash_workers, wait_ended, wait_until
from hyperfs.tree.hashes import leaf_hash

BLOCK = 1000


async def _stream_id(path: Path, data: bytes, block_size: int) -> bytes:
    async with open_core(path) as core, core.create_write_stream(block_size) as stream:
        await stream.write(data)
    assert stream.id is not None
    return stream.id


async def _copy(core_path: Path, source: Path, block_size: int = BLOCK,
                chunk_bytes: int = 4 * BLOCK) -> bytes:
    async with open_core(core_path) as core:
        feed = core.add()
        with open(source, "rb") as file:
            await ingest.copy_into(feed, core.store, file.fileno(), block_size,
                                   chunk_bytes=chunk_bytes)
        feed_id = await feed.finalize()
        assert core.check().ok  # the scrub: every stored block against its leaf hash
        assert b"".join([block async for block in core.create_read_stream(feed_id)]) == \
            source.read_bytes()
        return feed_id


@pytest.mark.parametrize("size", [1, BLOCK, BLOCK + 1, 4 * BLOCK, 4 * BLOCK + 1,
                                  37 * BLOCK + 123])
async def test_the_same_id_as_a_stream_of_the_same_bytes(tmp_path: Path, size: int) -> None:
    data = secrets.token_bytes(size)
    (tmp_path / "file").write_bytes(data)
    assert await _copy(tmp_path / "copied", tmp_path / "file") == \
        await _stream_id(tmp_path / "streamed", data, BLOCK)


async def test_a_block_size_that_is_not_a_page_multiple_and_a_chunk_of_one_block(
        tmp_path: Path) -> None:
    data = secrets.token_bytes(20_000)
    (tmp_path / "file").write_bytes(data)
    assert await _copy(tmp_path / "copied", tmp_path / "file", 333, 1) == \
        await _stream_id(tmp_path / "streamed", data, 333)


def test_a_command_longer_than_the_mapped_window(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker maps at most hashworker.WINDOW at a time (whole blocks): a command of
    several windows, not a multiple of the block size, gives every block's results."""
    monkeypatch.setattr(hashworker, "WINDOW", 5 * BLOCK + 7)  # 5 blocks a window
    data = secrets.token_bytes(23 * BLOCK + 45)
    (tmp_path / "file").write_bytes(data)
    with open(tmp_path / "file", "rb") as file:
        raw = hashworker.hash_range(file.fileno(), BLOCK, len(data) - BLOCK, BLOCK, crc32c)
    blocks = [data[at : at + BLOCK] for at in range(BLOCK, len(data), BLOCK)]
    assert Hashed.parse(raw) == Hashed([leaf_hash(block) for block in blocks],
                                       [crc32c(block) for block in blocks])


def test_hyperfs_add_of_a_big_file_matches_add_from_standard_input(tmp_path: Path) -> None:
    data = secrets.token_bytes(ingest.MIN_BYTES + 65536 * 3 + 17)
    (tmp_path / "file").write_bytes(data)
    copied = run(HYPERFS, "--db", tmp_path / "db", "add", tmp_path / "file").stdout
    piped = run(HYPERFS, "--db", tmp_path / "piped", "add", "-", input=data).stdout
    assert copied == piped
    synced = run(HYPERFS, "--db", tmp_path / "synced", "add", "--fsync", tmp_path / "file")
    assert synced.stdout == piped
    assert run(HYPERFS, "--db", tmp_path / "db", "fsck").returncode == 0


def test_the_source_leaves_the_page_cache_and_the_feed_stays(tmp_path: Path) -> None:
    """The copy hands the source's pages over to the feed's file (ingest.DROP_SOURCE):
    the cache holds the bytes once. The source is synced first: pages still dirty are
    written back, not dropped."""
    source = tmp_path / "file"
    source.write_bytes(secrets.token_bytes(ingest.MIN_BYTES + 65536 * 5 + 4096))  # whole pages
    os.sync()
    assert resident(source) == source.stat().st_size
    run(HYPERFS, "--db", tmp_path / "db", "add", source)
    assert resident(source) == 0
    [stored] = data_files(tmp_path / "db")
    assert resident(stored) == stored.stat().st_size == source.stat().st_size


async def _assert_nothing_stored(path: Path) -> None:
    async with open_core(path) as core:
        assert core.info() == []
        assert core.store.data.numbers() == []  # no data file left either


class _OnFirstBlock:
    """A feed listener that runs ``action`` once, when the first block is appended."""

    def __init__(self, action: object) -> None:
        self.action, self.done = action, False

    def feed_stored(self, _feed: Feed, _index: int) -> None:
        if not self.done:
            self.done = True
            self.action()  # type: ignore[operator]


async def _copy_with(tmp_path: Path, size: int, on_first_block: object,
                     seen: list[int] | None = None) -> None:
    """A copy of ``size`` random bytes; ``on_first_block`` runs after its first append,
    when the workers' pids are added to ``seen``. The copy's error propagates."""
    (tmp_path / "file").write_bytes(secrets.token_bytes(size))
    seen = [] if seen is None else seen

    def first() -> None:
        seen.extend(hash_workers(tmp_path))
        on_first_block()  # type: ignore[operator]

    async with open_core(tmp_path / "db") as core:
        feed = core.add()
        feed.listen(_OnFirstBlock(first))  # type: ignore[arg-type]
        try:
            with open(tmp_path / "file", "rb") as file:
                await ingest.copy_into(feed, core.store, file.fileno(), BLOCK,
                                       chunk_bytes=BLOCK)
        finally:
            core.discard(feed)


async def test_a_worker_killed_gives_a_clear_error_and_no_feed(tmp_path: Path) -> None:
    def kill_one() -> None:
        os.kill(hash_workers(tmp_path)[0], signal.SIGKILL)

    with pytest.raises(HashingFailed, match="the hash worker was killed by signal 9"):
        await _copy_with(tmp_path, 400 * BLOCK, kill_one)
    await _assert_nothing_stored(tmp_path / "db")
    assert hash_workers(tmp_path) == []


async def test_a_worker_that_cannot_read_the_file_says_why(tmp_path: Path) -> None:
    with pytest.raises(HashingFailed, match=r"exited with status 2: .*No such file"):
        async with open_hashers(tmp_path / "missing", BLOCK) as hashers:
            await hashers.submit(0, BLOCK)
            await hashers.results()
    assert hash_workers(tmp_path) == []


async def test_a_source_that_shrinks_gives_a_clear_error_and_no_feed(tmp_path: Path) -> None:
    def shrink() -> None:
        os.truncate(tmp_path / "file", 50 * BLOCK)

    with pytest.raises(SourceChanged, match="shrank from 400000 to 50000 bytes"):
        await _copy_with(tmp_path, 400 * BLOCK, shrink)
    await _assert_nothing_stored(tmp_path / "db")


async def test_cancelled_leaves_no_process_and_no_feed(tmp_path: Path) -> None:
    seen: list[int] = []
    with trio.CancelScope() as scope:
        await _copy_with(tmp_path, 400 * BLOCK, lambda: scope.cancel(), seen)
    assert scope.cancelled_caught and len(seen) == 2
    wait_ended(seen, timeout=10)
    await _assert_nothing_stored(tmp_path / "db")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_add_leaves_no_process_and_no_feed(tmp_path: Path, sig: int) -> None:
    source = tmp_path / "file"
    with open(source, "wb") as file:  # sparse: long to add, no disk taken
        file.truncate(1 << 30)
    add = Watched([HYPERFS, "--db", tmp_path / "db", "add", source])
    wait_until(lambda: bool(hash_workers(tmp_path)) and any(
        path.stat().st_size for path in data_files(tmp_path / "db")), 30, "the add started")
    workers = hash_workers(tmp_path)
    add.proc.send_signal(sig)
    assert add.proc.wait(30) == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    wait_ended(workers, timeout=10)
    assert run(HYPERFS, "--db", tmp_path / "db", "ls").stdout == b""
    assert run(HYPERFS, "--db", tmp_path / "db", "fsck").returncode == 0
    assert data_files(tmp_path / "db") == []
