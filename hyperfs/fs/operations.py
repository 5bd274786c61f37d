"""The FUSE face of hyperfs: feeds as directories of block files, names as files.

A thin :class:`pyfuse3.Operations` that decodes each request's inode
(:mod:`hyperfs.fs.inodes`, where the layout is drawn) and hands it to the module that owns
the matter: :mod:`~hyperfs.fs.attributes` (stat, ls, getfattr), :mod:`~hyperfs.fs.reads`,
:mod:`~hyperfs.fs.uploads`, :mod:`~hyperfs.fs.naming` (mkdir, rename, setattr, xattrs),
:mod:`~hyperfs.fs.removal`, :mod:`~hyperfs.fs.status`. The mount lifecycle lives in
:mod:`hyperfs.fs.mount`.

Names behave like files (docs/SEMANTICS.md lists every operation), and symbolic links can
be made among them; feeds are immutable: opening a feed's files for writing, truncating
them -> EROFS; linking them, mknod, creating inside a feed directory -> EPERM; fallocate ->
EOPNOTSUPP (pyfuse3 has no such handler, and the kernel answers ENOSYS so).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pyfuse3

from hyperfs.feeds.core import Core
from hyperfs.fs import appends, naming, pins, removal
from hyperfs.fs.attributes import (
    XATTR_ID,
    Attributes,
    Listing,
    list_dir,
    reply_entries,
    xattr,
    xattr_names,
)
from hyperfs.fs.errnos import fail, fuse_errors
from hyperfs.fs.garbage import Garbage
from hyperfs.fs.inodes import (
    NAME_MAX,
    BlockFile,
    FeedDir,
    FeedSlot,
    Inode,
    NameDir,
    NameFile,
    NameLink,
    Namespace,
    Root,
    StatusFile,
    Upload,
    UploadFile,
    WholeFeed,
    check_block,
)
from hyperfs.fs.reads import (
    BlockReader,
    Blocks,
    Fetch,
    Reader,
    StatusReader,
    WholeReader,
    file_info,
)
from hyperfs.fs.status import status_json
from hyperfs.fs.uploads import Uploads

Handle = Reader | Upload | Listing | appends.Appender
"""What an open file handle is: a reader, a writer's upload, an open directory, or a
live feed appended to (:mod:`.appends`)."""


class Operations(pyfuse3.Operations):
    """Feeds of a :class:`Core` as a filesystem; see :mod:`hyperfs.fs.inodes` for the layout."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, core: Core, *, mountpoint: str, block_size: int = 64 * 1024,
                 timeout: float | None = 60.0, status: Callable[[], object] | None = None,
                 fetch: Fetch | None = None) -> None:
        """``fetch(feed, index)`` waits for a block that is not local and raises
        TimeoutError when it gives up (default: ``feed.get`` with ``timeout``; the mount
        passes the network node's, which first waits out a discovery round)."""
        super().__init__()
        self.core = core
        self.mountpoint = mountpoint
        timeout = timeout or None
        self.namespace = Namespace(core)
        self.attributes = Attributes()
        self.blocks = Blocks(fetch or (lambda feed, index: feed.get(index, timeout=timeout)))
        self.garbage = Garbage(self.namespace, self._in_use)
        self.uploads = Uploads(self.namespace, mountpoint=mountpoint, block_size=block_size,
                               unnamed=self.garbage.unnamed)
        self.block_size = block_size
        self.network_status = status
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1

    async def close(self) -> None:
        """At unmount: delete the feeds that went with their last name, release every
        feed opened through the filesystem and drop unfinished uploads."""
        try:
            await self.garbage.sweep(unmounted=True)
        finally:
            self.garbage.close()
            self.namespace.close()
            self.uploads.close()

    def _in_use(self, feed_id: bytes) -> bool:
        """Whether an open handle reads ``feed_id``."""
        return any(_feed_read(handle) == feed_id for handle in self._handles.values())

    def _new_fh(self, handle: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    # -- attributes and directories ----------------------------------------------------

    @fuse_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attributes.of(self.namespace.decode(inode))

    @fuse_errors
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self.namespace.decode(parent_inode)
        if isinstance(parent, FeedDir):  # the feed is used by its id (.garbage)
            self.garbage.keep(parent.slot.id)
        return self.attributes.of(self.namespace.child(parent, name))

    @fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.namespace.decode(inode)
        if isinstance(node, FeedDir):
            self.garbage.keep(node.slot.id)
        return self._new_fh(await list_dir(self.namespace, node))

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._handles[fh]
        if not isinstance(listing, Listing):
            raise fail(errno.ENOTDIR)
        reply_entries(listing, self.namespace, self.attributes, start_id, token)

    @fuse_errors
    async def releasedir(self, fh: int) -> None:
        self._handles.pop(fh, None)

    # -- opening and reading -------------------------------------------------------------

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self.namespace.decode(inode)
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND)
        if isinstance(node, Root | FeedDir | NameDir):
            raise fail(errno.EISDIR)
        if isinstance(node, UploadFile):
            raise fail(errno.ETXTBSY)  # being written: readable once its writer closes it
        if isinstance(node, NameLink):
            raise fail(errno.ELOOP)  # the kernel opens what a link points to, not the link
        if writing:
            return self._open_for_writing(node, flags, ctx)
        reader: Reader
        match node:
            case StatusFile():
                reader = StatusReader(status_json(self.namespace, self.mountpoint,
                                                  self.network_status))
            case NameFile(slot=None):
                reader = StatusReader(b"")  # an empty file
            case NameFile(slot=FeedSlot() as state) | WholeFeed(slot=state):
                state.open()
                reader = WholeReader(self.blocks, state, ctx.pid)
            case BlockFile(state, index):
                check_block(state.open(), index)
                reader = BlockReader(self.blocks, state, index, ctx.pid)
        return file_info(node, self._new_fh(reader))

    def _open_for_writing(self, node: Inode, flags: int,
                          ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        """A name opened for writing is written anew (from its start: O_TRUNC, or a
        truncation to 0 before the first write); a feed's bytes cannot change in place,
        nor be appended to (EROFS), except a live feed of ours (:mod:`.appends`)."""
        if isinstance(node, NameFile) and node.slot is not None and flags & os.O_APPEND \
                and not flags & os.O_TRUNC:
            appender = appends.open_append(node, self.block_size)
            return pyfuse3.FileInfo(fh=self._new_fh(appender), direct_io=True)
        if not isinstance(node, NameFile) or (node.slot is not None
                                              and flags & os.O_APPEND):
            raise fail(errno.EROFS)
        upload = self.uploads.replace(node, ctx.pid, truncated=bool(flags & os.O_TRUNC))
        return pyfuse3.FileInfo(fh=self._new_fh(upload), direct_io=True)

    @fuse_errors
    async def read(  # type: ignore[override]  # pyfuse3 takes any buffer: no copy per read
            self, fh: int, off: int, size: int) -> bytes | memoryview:
        reader = self._handles.get(fh)
        if isinstance(reader, Upload):  # O_RDWR: the writer reads back what it wrote
            return await self.uploads.read(reader, off, size)
        if not isinstance(reader, StatusReader | BlockReader | WholeReader):
            raise fail(errno.EBADF)
        return await reader.read(off, size)

    # -- writing (uploads of names) -------------------------------------------------------

    @fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo,
                                                           pyfuse3.EntryAttributes]:
        path = naming.new_path(self.namespace, self.namespace.decode(parent_inode), name)
        if flags & os.O_APPEND:  # `>>` of a new name: a new live feed
            appender, node = appends.create_live(self.namespace, path, mode, ctx,
                                                 self.block_size)
            info = pyfuse3.FileInfo(fh=self._new_fh(appender), direct_io=True)
            return info, self.attributes.of(node)
        upload = self.uploads.create(path, mode, ctx)
        # Through the page cache when opened for reading too, so it can be mapped shared
        # and written (a new name: no other reader's pages to keep apart); else direct,
        # one copy less for cp & co. (docs/SEMANTICS.md, mmap)
        direct = flags & os.O_ACCMODE != os.O_RDWR
        info = pyfuse3.FileInfo(fh=self._new_fh(upload), direct_io=direct)
        return info, self.attributes.upload(upload)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        upload = self._handles.get(fh)
        if isinstance(upload, appends.Appender):
            return await appends.write(upload, buf)
        if not isinstance(upload, Upload):
            raise fail(errno.EBADF)
        return await self.uploads.write(upload, off, buf)

    @fuse_errors
    async def flush(self, fh: int) -> None:
        upload = self._handles.get(fh)
        if isinstance(upload, Upload):  # readers: nothing to do, at once
            await self.uploads.flush(upload)

    @fuse_errors
    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if isinstance(handle, Upload):
            await self.uploads.release(handle)
        feed_id = _feed_read(handle)
        if feed_id is not None:
            await self.garbage.closed(feed_id)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        """Durable: a file being written flushes its blocks; then every change made so
        far reaches the disk (closes are not synced: :meth:`.core.Core.commit`)."""
        upload = self._handles.get(fh)
        if isinstance(upload, Upload):
            await self.uploads.fsync(upload)
        else:
            await self.core.commit()

    @fuse_errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.core.commit()

    # -- names: directories, renames, attributes -----------------------------------------

    @fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self.namespace.decode(parent_inode)
        return self.attributes.of(naming.mkdir(self.namespace, parent, name, mode, ctx))

    @fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self.namespace.decode(parent_inode)
        return self.attributes.of(naming.symlink(self.namespace, parent, name, target, ctx))

    @fuse_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.namespace.decode(inode)
        if not isinstance(node, NameLink):
            raise fail(errno.EINVAL)  # readlink(2) of anything but a link
        return node.entry.target

    @fuse_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        replaced = naming.rename(
            self.namespace, self.uploads, self.namespace.decode(parent_inode_old), name_old,
            self.namespace.decode(parent_inode_new), name_new, flags)
        await self.garbage.unnamed(replaced)

    @fuse_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = await naming.setattr(self.namespace, self.uploads, inode, attr, fields)
        if isinstance(node, Upload):
            return self.attributes.upload(node)
        return self.attributes.of(node)

    # -- removing and refusing -----------------------------------------------------------

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        lost = await removal.unlink(self.namespace, self.namespace.decode(parent_inode), name)
        await self.garbage.unnamed(lost)

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await removal.rmdir(self.namespace, self.namespace.decode(parent_inode), name)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise fail(errno.EPERM)

    @fuse_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node, parent = self.namespace.decode(inode), self.namespace.decode(new_parent_inode)
        return self.attributes.of(naming.link(self.namespace, node, parent, new_name))

    # -- xattrs and the rest -------------------------------------------------------------

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not name.startswith(b"user."):
            # "Not supported" (not "no such attribute") for security.*/system.*: ls -l then
            # stops asking for SELinux labels and ACLs on this device, instead of paying
            # two round trips per file (200,000 for a 100,000-block feed).
            raise fail(errno.ENOTSUP)
        if name == pins.XATTR_PINNED:
            return pins.pinned(self.namespace, inode)
        value = xattr(self.namespace.decode(inode), name)
        if name == XATTR_ID:  # `hyperfs id`: the id may go anywhere now (.garbage)
            self.garbage.keep(bytes.fromhex(value.decode()))
        return value

    @fuse_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return xattr_names(self.namespace.decode(inode))

    @fuse_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        if name == pins.XATTR_PINNED:
            pins.set_pinned(self.namespace, inode, value)
            self.garbage.keep(pins.feed_id(self.namespace, inode))
            return
        naming.set_xattr(self.namespace, self.uploads, inode, name, value)

    @fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if name == pins.XATTR_PINNED:
            return pins.set_pinned(self.namespace, inode, None)
        naming.remove_xattr(self.namespace, self.uploads, inode, name)

    @fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        """The database disk's space, so df and cp see what a copy can use."""
        disk = os.statvfs(self.core.store.path)
        data = pyfuse3.StatvfsData()
        data.f_bsize = disk.f_bsize
        data.f_frsize = disk.f_frsize
        data.f_blocks = disk.f_blocks
        data.f_bfree = disk.f_bfree
        data.f_bavail = disk.f_bavail
        data.f_files = self.namespace.count()
        data.f_ffree = data.f_favail = 0
        data.f_namemax = NAME_MAX
        return data


def _feed_read(handle: Handle | None) -> bytes | None:
    """The id of the feed an open handle reads: a reader's, or the one a copy on write
    copies its bytes from."""
    slot = (handle.slot if isinstance(handle, BlockReader | WholeReader)
            else handle.old if isinstance(handle, Upload) else None)
    return None if slot is None else slot.id
