"""Feeds of other block sizes through a mount: every file reads back byte for byte, and
sizes are right where docs/FILESYSTEM.md ("Sizes") says they are known.

Feeds are made outside the mount (``hyperfs add --block-size N``, and the library for
blocks of varying size), then read through a real ``hyperfs mount`` of that database.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import trio

from hyperfs.testing.mounts import HYPERFS, Mounts, run
from hyperfs.testing.network import store_feed
from hyperfs.testing.requirements import FUSE, fuse_available, require

require(fuse_available(), FUSE)

SHAPES = [(1000, 7, 333), (4096, 5, 1), (65536, 3, 65535), (65536, 4, 65536)]
"""(block size, blocks, bytes of the last block): short last blocks, and a full one."""


def test_block_sizes_of_hyperfs_add(mounts: Mounts, tmp_path: Path) -> None:
    db = tmp_path / "db"
    feeds = []
    for size, count, last in SHAPES:
        data = secrets.token_bytes(size * (count - 1) + last)
        source = tmp_path / f"{size}-{count}"
        source.write_bytes(data)
        added = run(HYPERFS, "--db", db, "add", "--block-size", str(size), source)
        feeds.append((added.stdout.decode().strip(), data, size, count))
    m = mounts.start(db)
    for feed_id, data, size, count in feeds:
        feed_dir = m.mnt / feed_id
        blocks = [data[i : i + size] for i in range(0, len(data), size)]
        assert len(blocks) == count
        # The listing's sizes (from its attributes, before any stat of a block).
        listing = run("ls", "-la", feed_dir).stdout.decode().splitlines()[1:]
        assert {line.split()[-1]: int(line.split()[4]) for line in listing} == {
            ".feed": len(data), **{str(i): len(b) for i, b in enumerate(blocks)}}
        run("cmp", feed_dir / ".feed",
            tmp_path / f"{size}-{count}")
        assert [(feed_dir / str(i)).read_bytes() for i in range(count)] == blocks
        assert [os.stat(feed_dir / str(i)).st_size for i in range(count)] == list(
            map(len, blocks))
        assert os.stat(feed_dir / ".feed").st_size == len(data)
        assert os.getxattr(feed_dir, "user.hyperfs.blocks") == str(count).encode()


VARIED = [b"a" * 10, secrets.token_bytes(5000), b"", b"z", secrets.token_bytes(70_000),
          secrets.token_bytes(300)]
"""Blocks of varying size, as the library (and the seed's API) may append them."""


def test_blocks_of_varying_size_read_exactly(mounts: Mounts, tmp_path: Path) -> None:
    db = tmp_path / "db"
    feed_id = trio.run(store_feed, db, VARIED).hex()
    m = mounts.start(db)
    feed_dir = m.mnt / feed_id
    # stat of one block file reads that block's real length (asked before any listing,
    # whose estimates the kernel would otherwise keep).
    assert [os.stat(feed_dir / str(i)).st_size for i in range(len(VARIED))] == list(
        map(len, VARIED))
    assert [(feed_dir / str(i)).read_bytes() for i in range(len(VARIED))] == VARIED
    whole = b"".join(VARIED)
    assert (feed_dir / ".feed").read_bytes() == whole  # direct I/O: to the true end
    assert run("cat", feed_dir / ".feed").stdout == whole
    assert run("ls", "-v", feed_dir).stdout.decode().split() == list(
        map(str, range(len(VARIED))))


def test_random_reads_of_a_feed_of_varying_blocks_are_right(mounts: Mounts,
                                                            tmp_path: Path) -> None:
    """A fresh mount knows nothing of the blocks' sizes of a feed too big to check at
    open (over 64 MiB): a read far into `.feed` before any sequential read must still
    find the right block (by walking, not by assuming the first block's size)."""
    db = tmp_path / "db"
    big = 64 * 1024
    blocks = [os.urandom(big) for _ in range(1030)]
    blocks[3] = b"short"  # one block of another size, early on
    feed_id = trio.run(store_feed, db, blocks).hex()
    whole = b"".join(blocks)
    m = mounts.start(db)
    path = m.mnt / feed_id / ".feed"
    far = 1000 * big + 12345
    for offset, length in [(far, 5000), (3 * big + 2, 10), (2 * big, big + 7), (0, 1)]:
        fd = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(fd, length, offset) == whole[offset : offset + length], offset
        finally:
            os.close(fd)
