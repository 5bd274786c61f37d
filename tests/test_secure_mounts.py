"""Two real mounts through a recording relay: a file copied into a `--private` mount is
read from the other mount, and the bytes between them hold neither its id nor its data."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from hyperfs import open_core
from hyperfs.fs.attributes import XATTR_ID
from hyperfs.testing.mounts import Mounts
from hyperfs.testing.relay import assert_nothing_revealed, open_relay


async def test_two_mounts_share_a_private_file_and_the_wire_reveals_nothing(
        mounts: Mounts, tmp_path: Path) -> None:
    data = os.urandom(600_000)
    seeder = await trio.to_thread.run_sync(
        lambda: mounts.start(None, None, "--listen", "127.0.0.1:0", "--private"))
    secret = seeder.mnt / "secret.bin"
    await trio.to_thread.run_sync(secret.write_bytes, data)
    feed_id = os.getxattr(secret, XATTR_ID.decode()).decode()
    assert seeder.address is not None
    async with open_relay(int(seeder.address.rsplit(":", 1)[1])) as relay:
        fetcher = await trio.to_thread.run_sync(
            lambda: mounts.start(None, None, "--peer", f"127.0.0.1:{relay.port}"))
        got = await trio.to_thread.run_sync((fetcher.mnt / feed_id / ".feed").read_bytes)
    assert got == data
    assert seeder.stop() == 0 and fetcher.stop() == 0
    async with open_core(seeder.db) as core:
        assert bytes.fromhex(feed_id) in core.private  # --private marked it
    block = 64 * 1024
    assert_nothing_revealed(bytes(relay.recorded["up"] + relay.recorded["down"]),
                            bytes.fromhex(feed_id),
                            [data[i:i + block] for i in range(0, len(data), block)])
