"""Pages of a download leave the page cache behind it, once written (store.dropbehind).

A real file on the test's disk, its residency read with util-linux's ``fincore``; the
thresholds are made small (module constants) so that a few MiB show the rule.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from hyperfs.store.dropbehind import DropBehind

MIB = 1 << 20


def _resident(path: Path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux's fincore")
def test_a_download_keeps_its_start_and_the_last_windows_cached(tmp_path: Path) -> None:
    path, data = tmp_path / "data", secrets.token_bytes(24 * MIB)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    behind = DropBehind(window=MIB, lag=4, keep=2 * MIB)
    try:
        for offset in range(0, len(data), MIB // 4):  # 256 KiB blocks, in order
            os.pwrite(fd, data[offset : offset + MIB // 4], offset)
            behind.wrote(0, offset, MIB // 4, lambda _num: os.dup(fd))
            behind.wait()
        # the first 2 MiB (kept) and the LAG windows before the newest: no more
        kept = 2 * MIB + 4 * MIB
        assert 2 * MIB <= _resident(path) <= kept
        assert os.pread(fd, len(data), 0) == data  # dropped from the cache, not lost
    finally:
        behind.close()
        os.close(fd)


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux's fincore")
def test_a_small_feed_stays_cached(tmp_path: Path) -> None:
    path, data = tmp_path / "data", secrets.token_bytes(4 * MIB)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    behind = DropBehind()
    try:
        for offset in range(0, len(data), MIB):
            os.pwrite(fd, data[offset : offset + MIB], offset)
            behind.wrote(0, offset, MIB, lambda _num: os.dup(fd))
        behind.wait()
        assert _resident(path) == len(data)
    finally:
        behind.close()
        os.close(fd)
