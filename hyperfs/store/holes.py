"""Punching holes in a file: the disk space of a byte range given back, the file's size
and every other byte unchanged (``fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)``).

Python's ``os`` has ``posix_fallocate`` but not Linux's ``fallocate`` with flags, so it is
called through ctypes. Bytes of a range that only partly covers a file system block are
zeroed rather than freed; bytes outside the range are never touched, so a range that is
exactly one stored block's bytes is always safe to punch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
_fallocate.restype = ctypes.c_int


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Give back the disk space of ``length`` bytes at ``offset`` of the file ``fd``
    (they read as zeros afterwards). OSError (EOPNOTSUPP on a file system without holes)."""
    if length <= 0:
        return
    if _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"punching a hole: {os.strerror(code)}")


def allocated(file: int | str) -> int:
    """Bytes of disk ``file`` (a descriptor or a path) takes (``st_blocks``: holes take
    none)."""
    return os.stat(file).st_blocks * 512
