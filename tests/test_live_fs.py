"""Live feeds through real mounts: `>>` appends, `tail -f` on another mount follows.

Real `hyperfs mount` processes (hyperfs.testing.mounts), real shells and a real `tail -f`
process; every wait is bounded and on output or a condition, never a fixed sleep.
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import time
from pathlib import Path

import pytest
import trio

from hyperfs import open_core
from hyperfs.feeds.names import new_entry
from hyperfs.store.entry import Kind
from hyperfs.testing.live import signed_now
from hyperfs.testing.mounts import HYPERFS, Mounts, run

WAIT = 20.0


def _append(path: Path, data: bytes) -> None:
    """One write() with O_APPEND, as a shell's `>>` does."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def _read_lines(proc: subprocess.Popen[bytes], count: int, pending: bytearray) -> list[bytes]:
    """The next ``count`` lines ``proc`` prints, within WAIT seconds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + WAIT
    while pending.count(b"\n") < count:
        left = deadline - time.monotonic()
        assert left > 0, f"tail printed only {bytes(pending)!r}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, "tail exited"
            pending += chunk
    lines = bytes(pending).split(b"\n")
    taken = lines[:count]
    del pending[: sum(len(line) + 1 for line in taken)]
    return [line + b"\n" for line in taken]


def test_append_on_a_follows_on_b_with_tail(mounts: Mounts, tmp_path: Path) -> None:
    a = mounts.start(None, None, "--listen", "127.0.0.1:0")
    run("bash", "-c", f"echo first >> {a.mnt}/log && echo second >> {a.mnt}/log")
    assert (a.mnt / "log").read_bytes() == b"first\nsecond\n"
    feed_id = run(HYPERFS, "id", a.mnt / "log").stdout.decode().strip()
    assert len(feed_id) == 64
    assert run("ls", "-v", a.mnt / feed_id).stdout.split() == [b"0", b"1"]
    assert a.address is not None
    b = mounts.start(None, None, "--peer", a.address, "--timeout", "20")
    tail = subprocess.Popen(["tail", "-f", "-s", "0.1", str(b.mnt / feed_id / ".feed")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        pending = bytearray()
        assert _read_lines(tail, 2, pending) == [b"first\n", b"second\n"]
        for index in range(5):
            _append(a.mnt / "log", b"line %d\n" % index)
            assert _read_lines(tail, 1, pending) == [b"line %d\n" % index]
    finally:
        tail.kill()
        tail.wait()
    listing = run("ls", "-v", b.mnt / feed_id).stdout.split()
    assert listing == [str(i).encode() for i in range(7)]
    assert (b.mnt / feed_id / ".feed").read_bytes().endswith(b"line 4\n")


def test_append_refused_on_static_and_foreign_feeds(mounts: Mounts, tmp_path: Path) -> None:
    async def prepare() -> bytes:
        async with open_core(tmp_path / "writer") as writer_core:
            writer = writer_core.add(live=True)
            await writer.append(b"theirs\n")
            message = signed_now(writer)
            proof = writer.proof(0)
        async with open_core(tmp_path / "db") as core:
            with core.get(message.feed_id) as feed:
                feed.learn_live(message.length, message.roots, message.signature)
                feed.put(0, b"theirs\n", proof)
            core.names.set_file(b"theirs", new_entry(Kind.FILE, 0o644, message.feed_id),
                                replace=False)
        return message.feed_id

    feed_id = trio.run(prepare)
    m = mounts.start(tmp_path / "db", None, "--timeout", "5")
    source = tmp_path / "static.txt"
    source.write_bytes(b"static\n")
    run("cp", source, m.mnt / "static")
    for name, code in (("static", errno.EROFS), ("theirs", errno.EACCES)):
        with pytest.raises(OSError) as caught:
            _append(m.mnt / name, b"more\n")
        assert caught.value.errno == code, name
    with pytest.raises(OSError) as caught:
        _append(m.mnt / feed_id.hex() / ".feed", b"more\n")
    assert caught.value.errno == errno.EROFS
    # `>` still makes a static feed, also over a live feed's name
    run("bash", "-c", f"echo replaced > {m.mnt}/theirs")
    assert (m.mnt / "theirs").read_bytes() == b"replaced\n"
    # a read past a live feed's end is EOF, not a wait
    with open(m.mnt / feed_id.hex() / ".feed", "rb") as whole:
        assert whole.read() == b"theirs\n"
        assert whole.read() == b""


def test_big_writes_are_cut_into_blocks(mounts: Mounts, tmp_path: Path) -> None:
    m = mounts.start(None, None, "--block-size", "4096")
    data = os.urandom(10000)
    _append(m.mnt / "big", data)
    _append(m.mnt / "big", b"tail")
    feed_id = os.getxattr(m.mnt / "big", "user.hyperfs.id").decode()
    assert run("ls", "-v", m.mnt / feed_id).stdout.split() == [b"0", b"1", b"2", b"3"]
    assert (m.mnt / "big").read_bytes() == data + b"tail"
    assert os.stat(m.mnt / "big").st_size == 10004
