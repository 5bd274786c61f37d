"""Writing: ``cp FILE MNT/`` streams the file's bytes into a new, named feed.

Only ``create`` in the root writes. The bytes stream into a new feed (never buffered
whole) and the feed is finalized with the name, atomically, on the writer's *last* close
(flush), so ``cp`` and ``close`` see every error: empty file -> ENODATA, name taken ->
EEXIST (at create), disk full -> ENOSPC. Writes must be sequential (else ESPIPE). A
failed or empty upload leaves nothing visible.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os

import pyfuse3

from hyperfs.fs import sizes
from hyperfs.fs.errnos import errno_of, fail
from hyperfs.fs.inodes import NAME_MAX, ROOT, Namespace, Upload, reserved

log = logging.getLogger("hyperfs.fs")


def holds_other_fd(pid: int, inode: int, mountpoint: str) -> bool:
    """Whether process ``pid`` still has a descriptor open on our ``inode``.

    A flush is sent on every close, also of dup'ed descriptors (a shell's ``> file``
    opens, dups to fd 1 and closes the original before any byte is written), so an
    upload is finalized only on its opener's last close. Reads fdinfo/readlink only,
    which never call back into this filesystem.
    """
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    prefix = mountpoint.rstrip("/") + "/"
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
            if not target.startswith(prefix):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as info:
                for line in info:
                    if line.startswith(b"ino:") and int(line[4:]) == inode:
                        return True
        except (OSError, ValueError):
            continue
    return False


class Uploads:
    """Files being written into the root of ``namespace`` (its ``uploads``)."""

    def __init__(self, namespace: Namespace, *, mountpoint: str, block_size: int) -> None:
        self.namespace = namespace
        self.core = namespace.core
        self.mountpoint = mountpoint
        self.block_size = block_size

    def create(self, name: bytes, pid: int) -> Upload:
        """A new upload named ``name`` by process ``pid``, its first handle open."""
        if len(name) > NAME_MAX:
            raise fail(errno.ENAMETOOLONG)
        if reserved(name):
            raise fail(errno.EEXIST)  # the status file and feed directories
        if name in self.namespace.uploads or self.core.names.feed_of(name) is not None:
            raise fail(errno.EEXIST)
        stream = self.core.create_write_stream(block_size=self.block_size)
        upload = Upload(name, self.namespace.name_inode(name), stream, pid, handles=1)
        self.namespace.uploads[name] = upload
        return upload

    async def write(self, upload: Upload, off: int, buf: bytes) -> int:
        if upload.error:
            raise fail(upload.error)
        if upload.done:
            raise fail(errno.EROFS)  # finalized on the writer's last close: immutable
        if off != upload.size:
            raise fail(errno.ESPIPE)  # feeds are written once, front to back
        try:
            await upload.stream.write(buf)
        except Exception as exc:
            upload.error = errno_of(exc)
            log.warning("writing %r failed: %s", upload.name, exc)
            raise fail(upload.error) from None
        upload.size += len(buf)
        return len(buf)

    def truncate(self, upload: Upload, size: int) -> None:
        """setattr of the size: only to what is written already (O_TRUNC of a new file)."""
        if size != upload.size:
            raise fail(errno.EROFS if size else errno.ESPIPE)

    async def flush(self, upload: Upload) -> None:
        """A close of one of the writer's descriptors: finalize on its last one."""
        if upload.error:
            raise fail(upload.error)
        if upload.done:
            return
        if holds_other_fd(upload.pid, upload.ino, self.mountpoint):
            return  # not the writer's last close (e.g. a shell redirect's dup)
        await self._finalize(upload)

    async def release(self, upload: Upload) -> None:
        """The last close of one handle: a writer that never flushed is finalized here."""
        upload.handles -= 1
        if upload.handles > 0 or upload.done:
            return
        if upload.error or upload.size == 0:
            self.discard(upload)
            return
        try:
            await self._finalize(upload)
        except pyfuse3.FUSEError as exc:
            log.warning("could not store %r: %s", upload.name, os.strerror(exc.errno))

    async def _finalize(self, upload: Upload) -> None:
        try:
            feed_id = await upload.stream.close(name=upload.name)
        except Exception as exc:
            upload.error = errno_of(exc)
            log.warning("storing %r failed: %s", upload.name, exc)
            self.discard(upload)
            raise fail(upload.error) from None
        upload.done = True
        self._forget(upload)
        sizes.learn_written(self.namespace.slot(feed_id), upload.size,
                            upload.stream.block_size, upload.stream.feed.blocks or 1)
        log.info("stored %r as feed %s (%d bytes)", upload.name, feed_id.hex(), upload.size)

    def discard(self, upload: Upload) -> None:
        """Forget a failed or empty upload: nothing of it stays visible or stored."""
        upload.done = True
        self._forget(upload)
        feed = upload.stream.feed
        if feed.id is None:
            try:
                self.core.discard(feed)
            except Exception:
                log.exception("could not delete the unfinished upload %r", upload.name)
        with contextlib.suppress(Exception):  # not mounted, or the entry is gone already
            pyfuse3.invalidate_entry_async(ROOT, upload.name, ignore_enoent=True)

    def close(self) -> None:
        """Discard every upload still in progress (at unmount)."""
        for upload in list(self.namespace.uploads.values()):
            self.discard(upload)

    def _forget(self, upload: Upload) -> None:
        if self.namespace.uploads.get(upload.name) is upload:
            del self.namespace.uploads[upload.name]
