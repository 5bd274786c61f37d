"""Writing: ``cp FILE MNT/...`` streams the file's bytes into a new feed bound to its name.

``create`` of a new name (in the root or in a directory of names), or ``open`` of an
existing name with O_TRUNC, starts an upload. Its bytes stream into a new feed (never
buffered whole) and the feed is finalized with the name, atomically, on the writer's
*last* close (flush), so ``cp`` and ``close`` see every error (name taken -> EEXIST at
create, disk full -> ENOSPC). Until then a replaced name still shows its old feed (which
stays stored under its id afterwards). Nothing written: the name becomes an empty file,
bound to no feed (``touch``). A writer that goes back (a write not at the end, a read
through its handle, a truncation) goes on in a scratch file (:mod:`.scratch`), and so does
one that changes a name opened without O_TRUNC, on a copy of its bytes. The mode,
owner, times and xattrs set on the open file (``cp -a``, ``install``) are the name's once
it is done. A failed upload leaves nothing visible.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import time
from collections.abc import Awaitable, Callable

import pyfuse3
import trio

from hyperfs.feeds.filestream import FileWriteStream
from hyperfs.feeds.names import new_entry, split
from hyperfs.fs import sizes
from hyperfs.fs.errnos import errno_of, fail
from hyperfs.fs.inodes import FeedSlot, NameFile, Namespace, Upload
from hyperfs.fs.scratch import Scratch
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
    """Files being written into ``namespace`` (its ``uploads``). A name bound to its new
    bytes calls ``unnamed`` with the feed it held before (:mod:`.garbage`)."""

    def __init__(self, namespace: Namespace, *, mountpoint: str, block_size: int,
                 unnamed: Callable[[bytes | None], Awaitable[None]]) -> None:
        self.namespace = namespace
        self.unnamed = unnamed
        self.core = namespace.core
        self.mountpoint = mountpoint
        self.block_size = block_size
        self._spare: FileWriteStream | None = None

    def create(self, path: bytes, mode: int, ctx: pyfuse3.RequestContext) -> Upload:
        """A new file at ``path`` (checked by :func:`hyperfs.fs.naming.new_path`), its first
        handle open, owned by the caller."""
        entry = new_entry(Kind.FILE, mode, uid=ctx.uid, gid=ctx.gid)
        return self._start(path, self.namespace.name_inode(path), entry, ctx.pid, False)

    def replace(self, node: NameFile, pid: int, *, truncated: bool) -> Upload:
        """An existing file opened for writing: its new bytes, bound once they are done.
        The name keeps its inode, mode, owner and xattrs. Not ``truncated`` (no O_TRUNC:
        GIO opens so, then writes a temporary file or truncates; SQLite, ``dd
        conv=notrunc``), its bytes stay unless the writer truncates it to 0, or changes
        them in a copy (:meth:`_to_scratch`)."""
        if node.path in self.namespace.uploads:
            raise fail(errno.ETXTBSY)
        upload = self._start(node.path, node.ino, node.entry, pid, True)
        upload.truncated = truncated or node.slot is None
        upload.old = None if truncated else node.slot
        return upload

    def _start(self, path: bytes, ino: int, entry: Entry, pid: int, replacing: bool) -> Upload:
        stream, self._spare = self._spare or self._ready(), self._ready()
        upload = Upload(path, ino, stream, pid, entry, replacing, handles=1)
        self.namespace.uploads[path] = upload
        return upload

    def _ready(self) -> FileWriteStream:
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
        if upload.scratch is None and (off != upload.size or not upload.truncated):
            await self._to_scratch(upload)  # not front to back: see .scratch
        upload.truncated = True  # (its old bytes, if any, are in the scratch file now)
        try:
            if upload.scratch is not None:
                upload.scratch.write(off, buf)
            else:
                await upload.stream.write(buf)
        except Exception as exc:
            upload.error = errno_of(exc)
            log.warning("writing %r failed: %s", upload.name, exc)
            raise fail(upload.error) from None
        upload.size = max(upload.size, off + len(buf))
        return len(buf)

    async def read(self, upload: Upload, off: int, size: int) -> bytes:
        """A read through the writer's own handle (O_RDWR: SQLite reads back its pages):
        from the scratch file, made for it. An upload already stored, or a name whose
        bytes cannot be copied (:func:`_copy_feed`): EBADF."""
        if upload.error:
            raise fail(upload.error)
        if upload.done:
            raise fail(errno.EBADF)
        try:
            scratch = upload.scratch or await self._to_scratch(upload)
        except pyfuse3.FUSEError as exc:  # bytes that cannot be copied: read them read-only
            raise fail(errno.EBADF if exc.errno == errno.EROFS else exc.errno) from None
        try:
            return scratch.read(off, size)
        except Exception as exc:
            upload.error = errno_of(exc)
            log.warning("reading back %r failed: %s", upload.name, exc)
            raise fail(upload.error) from None

    async def truncate(self, upload: Upload, size: int) -> None:
        """setattr of the size: to 0 of a name opened without O_TRUNC, the writer replaces
        all its bytes (GIO); to another size than what is written, in the scratch file
        (made for it)."""
        if upload.scratch is None and size == 0 and not upload.truncated:
            upload.truncated = True
            return
        if upload.scratch is None and size == upload.size and upload.truncated:
            return
        scratch = upload.scratch or await self._to_scratch(upload)
        try:
            scratch.truncate(size)
        except Exception as exc:
            upload.error = errno_of(exc)
            raise fail(upload.error) from None
        upload.size, upload.truncated = size, True

    async def _to_scratch(self, upload: Upload) -> Scratch:
        """Move ``upload`` into a scratch file holding what it holds so far: what its
        stream took, or the bytes of the name it was opened on without O_TRUNC; its
        stream's feed is discarded. On failure the upload stays as it was (a stream that
        failed fails its later writes itself)."""
        scratch = Scratch(self.core.store.path)
        try:
            if upload.truncated:
                upload.size = await upload.stream.spill(scratch.fd)
            else:
                upload.size = await _copy_feed(upload.old, scratch)
        except BaseException:
            scratch.close()
            raise
        self._drop_feed(upload)
        upload.scratch = scratch
        return scratch

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
            if upload.scratch is None:  # (a scratch file is stored at close only)
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
        previous = old.slot.id if isinstance(old, NameFile) and old.slot is not None else None
        now = time.time_ns()
        entry = dataclasses.replace(
            upload.entry, ctime_ns=now, mtime_ns=upload.entry.mtime_ns if upload.times_set
            else now)
        try:
            if upload.size and upload.scratch is not None:
                feed_id: bytes | None = await self.core.add_file(
                    upload.scratch.path, self.block_size, upload.name, entry=entry,
                    replace=upload.replacing)
            elif upload.size:
                feed_id = await upload.stream.close(
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
        self._drop_feed(upload)  # (a stored stream's feed stays; a scratch file goes)
        if feed_id is not None:
            sizes.learn_written(self.namespace.slot(feed_id), upload.size, self.block_size,
                                -(-upload.size // self.block_size))
            log.info("stored %r as feed %s (%d bytes)", upload.name, feed_id.hex(),
                     upload.size)
        if isinstance(old, NameFile):
            self.namespace.renumber(old)
            parent, name = split(upload.name)
            await forget_entry(self.namespace.directory(parent).ino, name)
        if previous != feed_id:
            await self.unnamed(previous)

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
        """Discard the upload's stream and its unfinished feed (once), and free its
        scratch file."""
        if upload.scratch is not None:
            upload.scratch.close()
            return  # the stream went when the scratch file came
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


async def _copy_feed(slot: FeedSlot | None, scratch: Scratch) -> int:
    """Write the bytes of the feed in ``slot`` into ``scratch``; returns how many. Its
    feed must be all here and static: a live feed grows by appends only, and a
    remote one would have to be fetched whole first (read it once, or pin it): EROFS
    for those, as before scratch files."""
    feed = None if slot is None else slot.open()
    if feed is None or feed.live or feed.blocks is None or feed.local < feed.blocks:
        raise fail(errno.EROFS)
    offset = 0
    for index, block in enumerate(feed.iter_local(0, feed.blocks)):
        scratch.write(offset, block)
        offset += len(block)
        if index % 256 == 255:
            await trio.lowlevel.checkpoint()  # a big file: other requests meanwhile
    if feed.local < feed.blocks:  # a block found damaged on the way (dropped): no copy
        raise fail(errno.EIO)
    return offset


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
