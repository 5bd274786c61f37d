"""Cache limits end to end: real `hyperfs serve`, `cat`, `pin` processes and a real mount
reading feeds larger than its cap; bad SIZEs; a full disk during a download."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from hyperfs import open_core
from hyperfs.cli.cache import parse_size
from hyperfs.testing.disks import data_bytes, small_tmpfs
from hyperfs.testing.mounts import HYPERFS, Mounts, run
from hyperfs.testing.network import (
    RawPeer,
    arun_hyperfs,
    assert_clean_error,
    astart_serve,
    run_hyperfs,
    start_serve,
)
from hyperfs.testing.seeds import seeded_random
from hyperfs.wire import events

MiB = 1 << 20
SLACK = 2 * MiB
"""How far past its cap a download may go before the cache's task evicts (one MiB step
and what one network read stored)."""


def _file(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(seeded_random(seed).randbytes(size))
    return path


def _add(db: Path, file: Path) -> str:
    result = run_hyperfs("--db", db, "add", file)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().strip()


def _same(path: Path, expected: Path) -> bool:
    """Whether ``path`` reads as the bytes of ``expected`` (read to its end: a feed's
    size may not be known before its first block arrives, so stat cannot be trusted)."""
    with open(path, "rb") as got, open(expected, "rb") as want:
        while True:
            chunk = want.read(MiB)
            if got.read(MiB) != chunk:
                return False
            if not chunk:
                return True


def _local(path: Path) -> tuple[int, int]:
    """(blocks, local) of a feed's file or directory in a mount, from its xattrs."""
    return (int(os.getxattr(path, "user.hyperfs.blocks")),
            int(os.getxattr(path, "user.hyperfs.local")))


def test_sizes_parse() -> None:
    assert [parse_size(text) for text in ("4096", "64K", "100M", "1.5G", "2 MiB", "3mb")] == [
        4096, 64 << 10, 100 << 20, 3 << 29, 2 << 20, 3 << 20]
    for bad in ("", "M", "-1M", "12Q", "1e6", "0x10"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(bad)


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--cache-max-size", "12Q", ("--cache-max-size", "not a size", "12Q")),
    ("--min-free-space", "lots", ("--min-free-space", "not a size")),
    ("--cache-max-size", "1K", ("--cache-max-size", "smaller than one block")),
])
def test_a_bad_size_is_one_line_on_every_command(tmp_path: Path, option: str, value: str,
                                                 words: tuple[str, ...]) -> None:
    feed_id = "00" * 32
    for command in (("cat", feed_id), ("serve",), ("mount", str(tmp_path / "mnt")),
                    ("pin", feed_id)):
        result = run_hyperfs("--db", tmp_path / "db", *command, option, value)
        line = assert_clean_error(result, *words)
        assert len(result.stderr.decode().strip().splitlines()) == 1, line
    assert not (tmp_path / "db").exists()  # refused before anything was opened


def test_pin_of_a_path_outside_any_mount_is_refused(tmp_path: Path) -> None:
    plain = _file(tmp_path / "plain", 10, 9)
    for command in ("pin", "unpin"):
        result = run_hyperfs("--db", tmp_path / "db", command, plain)
        assert_clean_error(result, str(plain), "not a feed in a hyperfs mount")
    with pytest.raises(OSError):
        os.getxattr(plain, "user.hyperfs.pinned")  # nothing was set on it


def test_a_capped_mount_reads_a_feed_larger_than_its_cap(tmp_path: Path, mounts: Mounts) -> None:
    """48 MiB read through a mount capped at 24M from a real serve, twice (the second
    read fetches again what was evicted): bytes right, block data under the cap plus
    the feeds made here and pinned, which stay whole."""
    seed_db, db = tmp_path / "seed", tmp_path / "db"
    big = _file(tmp_path / "big", 48 * MiB, 1)
    kept = _file(tmp_path / "kept", 2 * MiB + 123, 2)
    big_id, kept_id = _add(seed_db, big), _add(seed_db, kept)
    own_id = _add(db, _file(tmp_path / "own", 3 * MiB, 3))
    serve, port = start_serve(seed_db)
    cap = 24 * MiB
    mounted = mounts.start(db, None, "--peer", f"127.0.0.1:{port}", "--cache-max-size", "24M")
    mnt = mounted.mnt
    run(HYPERFS, "--db", db, "pin", mnt / kept_id, timeout=60)
    assert os.getxattr(mnt / kept_id, "user.hyperfs.pinned") == b"1"
    for _ in range(2):
        assert _same(mnt / big_id / ".feed", big)
        assert data_bytes(db) <= cap + SLACK + 3 * MiB + 3 * MiB
    blocks, local = _local(mnt / big_id)
    assert 0 < local < blocks  # evicted, and it said so
    for index in range(0, blocks, 7):  # st_blocks (du) says what is local, block by block
        held = os.getxattr(mnt / big_id / str(index), "user.hyperfs.local") == b"1"
        assert os.stat(mnt / big_id / str(index)).st_blocks * 512 == (65536 if held else 0)
    assert _local(mnt / kept_id)[1] == _local(mnt / kept_id)[0]
    assert _local(mnt / own_id)[1] == _local(mnt / own_id)[0]
    assert _same(mnt / kept_id / ".feed", kept)
    cache = json.loads((mnt / ".status").read_bytes())["cache"]
    assert cache["max_size"] == cap and cache["used"] <= cap + SLACK
    assert cache["pinned_feeds"] == 1 and cache["own_feeds"] == 1 and cache["evicted_blocks"]
    status = run(HYPERFS, "--db", db, "status").stdout.decode()
    assert "cache:" in status and "of 24.0 MiB" in status and "(1 feeds)" in status
    os.setxattr(mnt / kept_id, "user.hyperfs.pinned", b"0")  # unpinned through the mount
    assert os.getxattr(mnt / kept_id, "user.hyperfs.pinned") == b"0"
    with pytest.raises(OSError) as bad:
        os.setxattr(mnt / kept_id, "user.hyperfs.pinned", b"yes")
    assert bad.value.errno == errno.EINVAL
    assert mounted.stop() == 0
    serve.terminate()
    check = run_hyperfs("--db", db, "fsck")
    assert check.returncode == 0, check.stdout + check.stderr


def test_pin_by_id_downloads_and_keeps_a_feed_that_cat_under_a_cap_would_evict(
        tmp_path: Path) -> None:
    seed_db, db = tmp_path / "seed", tmp_path / "db"
    kept = _file(tmp_path / "kept", 3 * MiB, 4)
    kept_id, big_id = _add(seed_db, kept), _add(seed_db, _file(tmp_path / "big", 8 * MiB, 5))
    _serve, port = start_serve(seed_db)
    peer = ("--peer", f"127.0.0.1:{port}")
    assert run_hyperfs("--db", db, "pin", kept_id, *peer).returncode == 0

    def cat_capped() -> dict[str, str]:
        with open(tmp_path / "out", "wb") as out:
            result = run_hyperfs("--db", db, "cat", big_id, *peer, "--cache-max-size", "1M",
                                 stdout=out)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out").stat().st_size == 8 * MiB
        listed = run_hyperfs("--db", db, "ls").stdout.decode().split("\n")
        return {line.split()[0]: line.split()[3] for line in listed if line}

    local = cat_capped()
    assert local[kept_id] == "48" and int(local[big_id]) < 128  # 3 MiB: 48 blocks
    assert run_hyperfs("--db", db, "unpin", kept_id).returncode == 0
    local = cat_capped()
    assert int(local[kept_id]) < 48  # a cache again
    assert run_hyperfs("--db", db, "fsck").returncode == 0


def test_a_full_disk_during_a_download_is_enospc_to_the_reader(tmp_path: Path,
                                                              mounts: Mounts) -> None:
    """A mount whose database is on a 24 MiB disk (11 MiB of it taken) reads a 32 MiB
    remote feed: the reader gets ENOSPC, nothing half stored, the same mount works on
    once there is room; with --min-free-space the same read evicts what it read before
    and succeeds."""
    seed_db = tmp_path / "seed"
    big = _file(tmp_path / "big", 32 * MiB, 6)
    big_id = _add(seed_db, big)
    last = big.read_bytes()[-65536:]
    _serve, port = start_serve(seed_db)
    with small_tmpfs(tmp_path / "disk", "24m") as disk:
        db, reserves = disk / "db", [disk / "reserve1", disk / "reserve2"]
        reserves[0].write_bytes(bytes(10 * MiB))  # more than a peer's 8 MiB in flight
        reserves[1].write_bytes(bytes(MiB))
        mounted = mounts.start(db, None, "--peer", f"127.0.0.1:{port}")
        with pytest.raises(OSError) as full, open(mounted.mnt / big_id / ".feed", "rb") as file:
            while file.read(MiB):
                pass
        assert full.value.errno == errno.ENOSPC
        assert mounted.proc.poll() is None
        reserves[0].unlink()  # room again, as a user would make: the same mount goes on
        assert (mounted.mnt / big_id / "511").read_bytes() == last
        status = json.loads((mounted.mnt / ".status").read_bytes())
        assert status["feeds"][0]["local"] > 1
        assert (mounted.mnt / big_id / "0").read_bytes() == big.read_bytes()[:65536]
        assert mounted.stop() == 0
        reserves[1].unlink()  # LevelDB needs a little room to open at all
        check = run_hyperfs("--db", db, "fsck")
        assert check.returncode == 0, check.stdout + check.stderr
        mounted = mounts.start(db, None, "--peer", f"127.0.0.1:{port}",
                               "--min-free-space", "3M")
        assert _same(mounted.mnt / big_id / ".feed", big)
        assert mounted.stop() == 0


def test_cat_on_a_full_disk_fails_with_a_clear_error(tmp_path: Path) -> None:
    seed_db = tmp_path / "seed"
    big_id = _add(seed_db, _file(tmp_path / "big", 8 * MiB, 7))
    _serve, port = start_serve(seed_db)
    with small_tmpfs(tmp_path / "disk", "4m") as disk, open(os.devnull, "wb") as out:
        result = run_hyperfs("--db", disk / "db", "cat", big_id, "--peer", f"127.0.0.1:{port}",
                             stdout=out)
        # (which write fails first, a block's bytes or LevelDB's log, is up to timing)
        assert_clean_error(result, "No space left on device")


async def test_a_peer_that_joins_after_eviction_is_told_only_what_is_left(
        tmp_path: Path) -> None:
    """Hypercore 1.x cannot take a Have back, so what matters is that every Have sent
    after an eviction is true: a `serve` of a database that evicted offers exactly the
    blocks it still holds."""
    seed_db, db = tmp_path / "seed", tmp_path / "db"
    big_id = _add(seed_db, _file(tmp_path / "big", 8 * MiB, 8))
    seeder, port = await astart_serve(seed_db)
    with open(os.devnull, "wb") as out:
        result = await arun_hyperfs("--db", db, "cat", big_id, "--peer", f"127.0.0.1:{port}",
                                    "--cache-max-size", "1M", stdout=out)
    assert result.returncode == 0, result.stderr
    seeder.terminate()
    async with open_core(db) as core:
        with core.hold(big_id) as feed:
            held = feed.bitfield.to_bytes()
            assert feed.blocks is not None and 0 < feed.local < feed.blocks
    _serve, port = await astart_serve(db)
    peer = await RawPeer.connect(port)
    await peer.send(peer.conn.join(bytes.fromhex(big_id)))
    have = await peer.until(lambda event: isinstance(event, events.HaveReceived))
    assert isinstance(have, events.HaveReceived) and have.bitfield is not None
    assert have.bitfield.rstrip(b"\0") == held.rstrip(b"\0")
    await peer.aclose()
