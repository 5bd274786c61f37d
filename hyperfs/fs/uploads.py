"""Writing: ``cp FILE MNT/...`` streams the file's bytes into a new feed bound to its name.

``create`` of a new name (in the root or in a directory of names), or ``open`` of an
existing name with O_TRUNC, starts an upload. Its bytes stream into a new feed (never
buffered whole) and the feed is finalized with the name, atomically, on the writer's
*last* close (flush), so ``cp`` and ``close`` see every error (name taken -> EEXIST at
create, disk full -> ENOSPC). Until then a replaced name still shows its old feed (which
stays stored under its id afterwards). Nothing written: the name becomes an empty file,
bound to no feed (``touch``). Writes must be sequential (else ESPIPE). The mode, owner,
times and xattrs set on the open file (``cp -a``, ``install``) are the name's once it is
done. A failed upload leaves nothing visible.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import time

import pyfuse3
import trio

from hyperfs.feeds.core import WriteStream
from hyperfs.feeds.names import new_entry, split
from hyperfs.fs import sizes
from hyperfs.fs.errnos import errno_of, fail
from hyperfs.fs.inodes import NameFile, Namespace, Upload
from hyperfs.store.entry import Entry, Kind

log = logging.getLogger("hyperfs.fs")


def holds_other_fd(pid: int, inode: int, mountpoint: str) -> bool:
    """Whether process ``pid`` still has a descriptor open for writing on our ``inode``.

    A flush is sent on every close, also of dup'ed descriptors (a shell's ``> file``
    opens, dups to fd 1 and closes the original before any byte is written), so an
    upload is finalized only on its opener's last close. Descriptors open only for
    reading (the old content of a name being replaced) do not count. Reads
    fdinfo/readlink only, which never call back into this filesystem.
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
                fields = dict(line.split(b":", 1) for line in info if b":" in line)
            writable = int(fields.get(b"flags", b"0"), 8) & os.O_ACCMODE != os.O_RDONLY
            if writable and int(fields.get(b"ino", b"-1")) == inode:
                return True
        except (OSError, ValueError):
            continue
    return False


class Uploads:
    """Files being written into ``namespace`` (its ``uploads``)."""

    def __init__(self, namespace: Namespace, *, mountpoint: str, block_size: int) -> None:
        self.namespace = namespace
        self.core = namespace.core
        self.mountpoint = mountpoint
        self.block_size = block_size
        self._spare: WriteStream | None = None

    def create(self, path: bytes, mode: int, ctx: pyfuse3.RequestContext) -> Upload:
        """A new file at ``path`` (checked by :func:`hyperfs.fs.naming.new_path`), its first
        handle open, owned by the caller."""
        entry = new_entry(Kind.FILE, mode, uid=ctx.uid, gid=ctx.gid)
        return self._start(path, self.namespace.name_inode(path), entry, ctx.pid, False)

    def replace(self, node: NameFile, pid: int, *, truncated: bool) -> Upload:
        """An existing file opened for writing: its new bytes, bound once they are done.
        The name keeps its inode, mode, owner and xattrs. Not ``truncated`` (no O_TRUNC:
        GIO opens so, then writes a temporary file or truncates), its bytes stay unless
        the writer truncates it to 0."""
        if node.path in self.namespace.uploads:
            raise fail(errno.ETXTBSY)
        upload = self._start(node.path, node.ino, node.entry, pid, True)
        upload.truncated = truncated or node.slot is None
        return upload

    def _start(self, path: bytes, ino: int, entry: Entry, pid: int, replacing: bool) -> Upload:
        stream, self._spare = self._spare or self._ready(), self._ready()
        upload = Upload(path, ino, stream, pid, entry, replacing, handles=1)
        self.namespace.uploads[path] = upload
        return upload

    def _ready(self) -> WriteStream:
        """A write stream for the next upload, its data file created meanwhile in the
        background: each upload takes the one made at the last (`tar -x` of small files
        would otherwise wait for a file creation in each close)."""
        stream = self.core.create_file_stream(self.block_size)
        self.core.store.data.files.prepare(stream.feed.num)
        return stream

    async def write(self, upload: Upload, off: int, buf: bytes) -> int:
        if upload.error:
            raise fail(upload.error)
        if upload.done:
            raise fail(errno.EROFS)  # finalized on the writer's last close: immutable
        if not upload.truncated:
            raise fail(errno.EROFS)  # a feed's bytes cannot change in place
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
        """setattr of the size: only to what is written already (O_TRUNC of a new file),
        or to 0 before any write (the writer replaces all the bytes)."""
        if size == 0 and not upload.truncated:
            upload.truncated = True
        elif size != upload.size or not upload.truncated:
            raise fail(errno.EROFS if size else errno.ESPIPE)

    def set_entry(self, upload: Upload, entry: Entry, *, times_set: bool) -> None:
        """chmod, chown, utimensat or xattrs of the file being written: kept for its name."""
        upload.entry = entry
        upload.times_set = upload.times_set or times_set

    async def fsync(self, upload: Upload) -> None:
        """fsync/fdatasync: every whole block written so far goes to the database, and to
        the disk. (The name is bound at close, and durable at the next commit.)"""
        if upload.error:
            raise fail(upload.error)
        if upload.done:
            return
        try:
            await upload.stream.flush()
            await self.core.commit()
        except Exception as exc:
            upload.error = errno_of(exc)
            raise fail(upload.error) from None

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
        if upload.error:
            self.discard(upload)
            return
        try:
            await self._finalize(upload)
        except pyfuse3.FUSEError as exc:
            log.warning("could not store %r: %s", upload.name, os.strerror(exc.errno))

    async def _finalize(self, upload: Upload) -> None:
        if not upload.truncated:
            self._keep_bytes(upload)
            return
        old = self.namespace.named(upload.name) if upload.replacing else None
        now = time.time_ns()
        entry = dataclasses.replace(
            upload.entry, ctime_ns=now, mtime_ns=upload.entry.mtime_ns if upload.times_set
            else now)
        try:
            if upload.size:
                feed_id: bytes | None = await upload.stream.close(
                    name=upload.name, entry=entry, replace=upload.replacing)
            else:  # an empty file: bound to no feed
                self.core.names.set_file(upload.name, dataclasses.replace(entry, feed_id=None),
                                         replace=upload.replacing)
                feed_id = None
        except Exception as exc:
            upload.error = errno_of(exc)
            log.warning("storing %r failed: %s", upload.name, exc)
            self.discard(upload)
            raise fail(upload.error) from None
        upload.done = True
        self._forget(upload)
        with contextlib.suppress(OSError):  # the kernel keeps an upload's attributes:
            pyfuse3.invalidate_inode(upload.ino, attr_only=True)  # the name's differ
        if feed_id is None:
            self._drop_feed(upload)
        else:
            sizes.learn_written(self.namespace.slot(feed_id), upload.size,
                                upload.stream.block_size, upload.stream.feed.blocks or 1)
            log.info("stored %r as feed %s (%d bytes)", upload.name, feed_id.hex(),
                     upload.size)
        if isinstance(old, NameFile):
            self.namespace.renumber(old)
            parent, name = split(upload.name)
            await forget_entry(self.namespace.directory(parent).ino, name)

    def _keep_bytes(self, upload: Upload) -> None:
        """The end of a write handle that never replaced the name's bytes: only what was
        set on it (fchmod, futimens, xattrs) is kept."""
        upload.done = True
        self._forget(upload)
        self._drop_feed(upload)
        current = self.core.names.get(upload.name)
        if current is not None and current.kind is Kind.FILE and upload.entry != current:
            self.core.names.set_file(upload.name, dataclasses.replace(
                upload.entry, feed_id=current.feed_id), replace=True)

    def discard(self, upload: Upload) -> None:
        """Forget a failed upload: nothing of it stays visible or stored (a replaced name
        keeps its old feed)."""
        upload.done = True
        self._forget(upload)
        self._drop_feed(upload)
        if not upload.replacing:
            with contextlib.suppress(Exception):  # not mounted, or the entry is gone already
                parent, name = split(upload.name)
                pyfuse3.invalidate_entry_async(self.namespace.directory(parent).ino, name,
                                               ignore_enoent=True)

    def _drop_feed(self, upload: Upload) -> None:
        feed = upload.stream.feed
        if feed.id is None:
            upload.stream.abort()
            try:
                self.core.discard(feed)
            except Exception:
                log.exception("could not delete the unfinished upload %r", upload.name)

    def unfinished(self) -> list[int]:
        """The feed numbers of the uploads still being written (not closed yet)."""
        return [upload.stream.feed.num for upload in self.namespace.uploads.values()
                if not upload.done]

    def close(self) -> None:
        """Discard every upload still in progress (at unmount)."""
        for upload in list(self.namespace.uploads.values()):
            self.discard(upload)
        spare, self._spare = self._spare, None
        if spare is not None:
            self.core.discard(spare.feed)

    def _forget(self, upload: Upload) -> None:
        if self.namespace.uploads.get(upload.name) is upload:
            del self.namespace.uploads[upload.name]


async def forget_entry(parent: int, name: bytes) -> None:
    """Make the kernel look ``name`` up again (it has a new inode now), before the writer's
    close returns, so that whoever opens it next sees the new feed. From a worker thread,
    like :func:`changed`."""
    with contextlib.suppress(Exception):  # not mounted, or never looked up
        await trio.to_thread.run_sync(pyfuse3.invalidate_entry, parent, name)


async def changed(ino: int) -> None:
    """Tell the kernel a name's content changed (it now holds another feed, or none):
    cached pages and attributes of ``ino`` go. From a worker thread: the kernel may wait
    for a page a concurrent read holds, and that read needs this event loop."""
    with contextlib.suppress(Exception):  # not mounted (tests of Operations alone)
        await trio.to_thread.run_sync(pyfuse3.invalidate_inode, ino, False)
