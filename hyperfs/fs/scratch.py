"""A file being written whose writer goes back over it: its bytes in a scratch file until
its last close.

A feed is written once, front to back, so an upload streams into one as its bytes come
(:mod:`.uploads`). Not every writer writes front to back: ``zip`` and linkers go back
to fill in headers, ffmpeg its index, SQLite reads and rewrites its pages, ``dd seek=``
leaves holes. The first write that is not at the end, the first read through the write
handle, or a truncation to another size moves the upload into a *scratch* file holding
what was written so far, where that and every later write, read and truncation happen in
place. The last close makes a feed of it as ``hyperfs add`` makes one of a file, so the
same bytes get the same id however they were written.

The scratch file is anonymous (``O_TMPFILE``) in the database's directory: on the same
disk as the feeds, so the final copy stays in the kernel, and gone with its descriptor,
so a crash or a kill leaves nothing behind, as the crash rule wants of an upload not
closed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from hyperfs.feeds.feed import BytesLike


class Scratch:
    """An anonymous file, read and written at any offset."""

    def __init__(self, directory: Path) -> None:
        try:
            self.fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as exc:  # a filesystem without O_TMPFILE: a file unlinked at once
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR):
                raise
            self.fd, name = tempfile.mkstemp(dir=directory, prefix=".scratch.")
            os.unlink(name)

    @property
    def path(self) -> str:
        """A path that opens this file (for :meth:`hyperfs.feeds.core.Core.add_file`)."""
        return f"/proc/self/fd/{self.fd}"

    def write(self, offset: int, data: BytesLike) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fd, view, offset)
            offset, view = offset + written, view[written:]

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def close(self) -> None:
        """Free the file (also when called again)."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)
