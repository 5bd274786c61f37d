"""The hash worker: a separate process that hashes blocks of a file for an append.

SHA-256 of every block is most of what adding a big file costs. Threads beside the
writes lost to the GIL (each block's hash releases it and takes it again); a separate
process does not, so `hyperfs add` and a copy into the mount hash their blocks here,
two processes at a time, while the parent copies bytes and writes the index
(:mod:`hyperfs.feeds.hashers` drives them).

Run as ``python hashworker.py FILE BLOCK_SIZE`` (by path, not ``-m``: importing the
``hyperfs`` package would cost more than the whole start). It reads commands from stdin,
each two big-endian u64s, ``offset length``: hash FILE's bytes ``[offset, offset +
length)``, cut into blocks of BLOCK_SIZE (the last may be shorter), and write for each
block its leaf hash (32 bytes: hypercore's SHA-256 with the leaf type byte) and its
crc32c (4 bytes, big-endian) to stdout. The bytes must be in FILE when the command is
sent (the parent writes them first, so what is hashed is what is stored). It exits at
the end of stdin; on a failure it writes one line to stderr and exits with the errno as
its status (1 when there is none).

Why the parent copies and the workers only hash (measured, 4 GiB, two cores): workers
that also copied their chunks (copy_file_range at their offsets) reached 600-630 MB/s,
against 890-900 for one copying thread in the parent beside two hashing workers.

It imports only the standard library and crc32c's C function
(:mod:`hyperfs.base.checksum`; the package's ``__init__`` loads nothing else), so that it
starts in a few tens of milliseconds.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import sys
from collections.abc import Callable

from hyperfs.base.checksum import crc32c

COMMAND = struct.Struct(">QQ")
RESULT = struct.Struct(">32sI")
"""What a block gets on stdout: its leaf hash, then its crc32c."""
RESULT_SIZE = RESULT.size
WINDOW = 16 << 20
"""Bytes mapped at a time: a command may ask for more (an add's are 64 MiB), the
mapping, which counts in this process's RSS, stays this small."""


def hash_range(fd: int, offset: int, length: int, block_size: int,
               crc32c: Callable[[bytes | memoryview], int]) -> bytes:
    """The results of the blocks of ``fd`` in ``[offset, offset + length)``, mapped
    :data:`WINDOW` at a time (whole blocks)."""
    window = max(1, WINDOW // block_size) * block_size
    return b"".join(_hash_mapped(fd, at, min(window, offset + length - at), block_size, crc32c)
                    for at in range(offset, offset + length, window))


def _hash_mapped(fd: int, offset: int, length: int, block_size: int,
                 crc32c: Callable[[bytes | memoryview], int]) -> bytes:
    """By mmap, not read: the bytes are hashed where the page cache holds them, with no
    copy (measured: one process hashes at openssl's speed)."""
    if not length:
        return b""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    skip = offset - start
    out = bytearray()
    with mmap.mmap(fd, skip + length, offset=start, access=mmap.ACCESS_READ) as mapped:
        mapped.madvise(mmap.MADV_SEQUENTIAL)
        leaf = hashlib.sha256(b"\x00")
        with memoryview(mapped) as view:
            for at in range(skip, skip + length, block_size):
                with view[at : min(at + block_size, skip + length)] as block:
                    hasher = leaf.copy()
                    hasher.update(block)
                    out += hasher.digest()
                    out += crc32c(block).to_bytes(4, "big")
    return bytes(out)


def serve(path: str, block_size: int) -> None:
    """Answer every command on stdin (the module docstring)."""
    commands, results = sys.stdin.buffer, sys.stdout.buffer
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    while command := commands.read(COMMAND.size):
        if len(command) < COMMAND.size:
            raise EOFError("a truncated command")
        offset, length = COMMAND.unpack(command)
        size = os.fstat(fd).st_size
        if offset + length > size:  # mmap would fault (SIGBUS) past the end
            raise EOFError(f"bytes {offset}-{offset + length} asked, the file has {size}")
        results.write(hash_range(fd, offset, length, block_size, crc32c))
        results.flush()


def main(argv: list[str]) -> int:
    try:
        serve(argv[1], int(argv[2]))
    except OSError as exc:
        print(f"{exc.filename or argv[1]}: {exc.strerror or exc}", file=sys.stderr)
        return exc.errno or 1
    except (EOFError, ValueError, IndexError) as exc:
        print(f"{argv[1:]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
