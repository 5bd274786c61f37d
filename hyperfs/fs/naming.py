"""Changing names: mkdir, rename, chmod/chown/utimensat, truncation and ``user.`` xattrs.

Names are local labels for feeds (:mod:`hyperfs.feeds.names`), so they behave like files:
these work on names and on files still being written (kept for the name they will be:
``cp -a`` and ``install`` set them before closing), never on a feed's own files, whose
bytes and attributes are the feed's (EROFS; EPERM for its directory). docs/SEMANTICS.md
lists every case.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import time

import pyfuse3

from hyperfs.feeds.names import join, new_entry, with_attrs, with_xattr, without_xattr
from hyperfs.fs import sizes
from hyperfs.fs.attributes import COMPUTED, DIR_MODE
from hyperfs.fs.errnos import fail
from hyperfs.fs.inodes import (
    NAME_MAX,
    STATUS_NAME,
    FeedDir,
    Inode,
    NameDir,
    NameFile,
    NameLink,
    Namespace,
    Root,
    Upload,
    UploadFile,
    feed_id_of,
    reserved,
)
from hyperfs.fs.uploads import Uploads, changed
from hyperfs.store.entry import Kind

TIME_LIMIT = 1 << 64
"""A name keeps its times as unsigned 64-bit nanoseconds since 1970 (to the year 2554)."""


def names_dir(node: Inode) -> bytes:
    """The path of directory ``node`` among names (b"": the root). Nothing can be made
    in a feed's directory (EPERM); a file is not a directory (ENOTDIR)."""
    if isinstance(node, Root):
        return b""
    if isinstance(node, NameDir):
        return node.path
    raise fail(errno.EPERM if isinstance(node, FeedDir) else errno.ENOTDIR)


def new_path(namespace: Namespace, directory: Inode, name: bytes) -> bytes:
    """The path of a new name ``name`` in ``directory``, if one can be made there:
    EPERM in a feed's directory, ENAMETOOLONG, EEXIST when taken (also by a file being
    written, ``.status`` or a feed id at the top)."""
    parent = names_dir(directory)
    if len(name) > NAME_MAX:
        raise fail(errno.ENAMETOOLONG)
    path = join(parent, name)
    if (not parent and reserved(name)) or path in namespace.uploads:
        raise fail(errno.EEXIST)
    namespace.core.names.check_new(path)
    return path


def mkdir(namespace: Namespace, parent: Inode, name: bytes, mode: int,
          ctx: pyfuse3.RequestContext) -> Inode:
    """A new, empty directory of names, owned by the caller."""
    path = new_path(namespace, parent, name)
    namespace.core.names.add(path, new_entry(Kind.DIR, mode, uid=ctx.uid, gid=ctx.gid))
    return namespace.named(path)


def symlink(namespace: Namespace, parent: Inode, name: bytes, target: bytes,
            ctx: pyfuse3.RequestContext) -> Inode:
    """A new symbolic link holding ``target``, owned by the caller (rsync -a, cp -a and
    tar copy a tree's links as links)."""
    path = new_path(namespace, parent, name)
    namespace.core.names.symlink(path, target, uid=ctx.uid, gid=ctx.gid)
    return namespace.named(path)


def link(namespace: Namespace, node: Inode, parent: Inode, name: bytes) -> Inode:
    """link(2) of a name: another name for the same feed (or empty file, or link target),
    as ``cp`` would make it without copying a byte. The two are independent names from
    then on (no inode is shared: st_nlink stays 1, and changing one copies on write),
    which is what ``cp -a``, ``tar -x`` and ``rsync -H`` need of a hard link. A feed's
    own files: EPERM; a file still being written: ETXTBSY."""
    if isinstance(node, UploadFile):
        raise fail(errno.ETXTBSY)
    if not isinstance(node, NameFile | NameLink):
        raise fail(errno.EPERM)
    path = new_path(namespace, parent, name)
    namespace.core.names.add(path, dataclasses.replace(node.entry, ctime_ns=time.time_ns()))
    return namespace.named(path)


def rename(namespace: Namespace, uploads: Uploads, old_parent: Inode, old_name: bytes,
           new_parent: Inode, new_name: bytes, flags: int) -> bytes | None:
    """rename(2) of a name or a directory of names (RENAME_NOREPLACE, RENAME_EXCHANGE),
    in one batch; inode numbers and files being written move with their names. Feeds'
    directories, their files and ``.status`` cannot move (EPERM); a name cannot take
    their place (EEXIST); a file being written cannot be replaced (EBUSY), but one
    merely open for writing can be. Returns the id of the feed whose name was replaced
    (for :mod:`.garbage`), if any."""
    if flags & ~(pyfuse3.RENAME_NOREPLACE | pyfuse3.RENAME_EXCHANGE):
        raise fail(errno.EINVAL)  # RENAME_WHITEOUT: for overlayfs, not supported here
    if isinstance(old_parent, Root) and (old_name == STATUS_NAME or feed_id_of(old_name)):
        raise fail(errno.EPERM)
    old_dir, new_dir = names_dir(old_parent), names_dir(new_parent)
    if len(new_name) > NAME_MAX:
        raise fail(errno.ENAMETOOLONG)
    if not new_dir and reserved(new_name):
        raise fail(errno.EEXIST)  # .status, or a feed's directory (any case of 64 hex)
    old, new = join(old_dir, old_name), join(new_dir, new_name)
    if old == new:
        return None  # rename(2): the same name, nothing to do
    moving, replaced = namespace.uploads.get(old), namespace.uploads.get(new)
    if replaced is not None and replaced.truncated:
        raise fail(errno.EBUSY)
    if moving is not None and not moving.replacing:
        _move_upload(namespace, uploads, moving, new, replaced, flags)
        return None  # (what it replaces loses its name when it is bound)
    names = namespace.core.names
    source, target = names.get(old), names.get(new)
    exchange = bool(flags & pyfuse3.RENAME_EXCHANGE)
    names.rename(old, new, noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE),
                 exchange=exchange)
    if replaced is not None and not exchange:
        uploads.discard(replaced)  # its handle now writes nothing: the name is another's
    directories = any(entry is not None and entry.is_dir for entry in (source, target))
    namespace.moved(old, new, exchange=exchange, directories=directories)
    return None if exchange or target is None else target.feed_id


def _move_upload(namespace: Namespace, uploads: Uploads, upload: Upload, new: bytes,
                 replaced: Upload | None, flags: int) -> None:
    """rename(2) of a new file still being written (GIO renames its temporary file over
    the target before closing it): it will be bound at ``new`` once complete; until then
    ``new`` shows what it was."""
    if flags & pyfuse3.RENAME_EXCHANGE:
        raise fail(errno.EBUSY)
    target = namespace.core.names.get(new)
    if target is None:
        namespace.core.names.check_new(new)
    elif flags & pyfuse3.RENAME_NOREPLACE:
        raise fail(errno.EEXIST)
    elif target.is_dir:
        raise fail(errno.EISDIR)
    if replaced is not None:
        uploads.discard(replaced)
    namespace.moved(upload.name, new, directories=False)
    upload.replacing = target is not None


def attr_changes(attr: pyfuse3.EntryAttributes,
                 fields: pyfuse3.SetattrFields) -> dict[str, int]:
    """What a setattr changes besides the size: mode, uid, gid, atime_ns, mtime_ns."""
    changes = {}
    if fields.update_mode:
        changes["mode"] = attr.st_mode
    if fields.update_uid:
        changes["uid"] = attr.st_uid
    if fields.update_gid:
        changes["gid"] = attr.st_gid
    if fields.update_atime:
        changes["atime_ns"] = attr.st_atime_ns
    if fields.update_mtime:
        changes["mtime_ns"] = attr.st_mtime_ns
    for key in ("atime_ns", "mtime_ns"):
        if not 0 <= changes.get(key, 0) < TIME_LIMIT:
            raise fail(errno.EINVAL)  # before 1970 or after 2554: names cannot keep it
    return changes


async def setattr(namespace: Namespace, uploads: Uploads, ino: int,
                  attr: pyfuse3.EntryAttributes,
                  fields: pyfuse3.SetattrFields) -> Inode | Upload:
    """chmod, chown, utimensat, truncate of inode ``ino``; returns it as it is now (the
    upload, for a file being written)."""
    changes = attr_changes(attr, fields)
    upload = namespace.upload_of(ino)
    if upload is not None:
        if fields.update_size:
            await uploads.truncate(upload, attr.st_size)
        if changes:
            uploads.set_entry(upload, with_attrs(upload.entry, **changes),
                              times_set=fields.update_mtime)
        return upload
    node = namespace.decode(ino)
    if isinstance(node, Root) and not fields.update_size and _root_keeps(changes):
        return node  # `rsync -a dir/ MNT/` sets the root's times: accepted, not kept
    if not isinstance(node, NameFile | NameDir | NameLink):
        raise fail(errno.EPERM if isinstance(node, Root | FeedDir) else errno.EROFS)
    if fields.update_size:
        await _truncate(namespace, node, attr.st_size)
    if changes:
        namespace.core.names.set_attrs(node.path, **changes)
    return namespace.named(node.path)


def _root_keeps(changes: dict[str, int]) -> bool:
    """Whether a setattr of the root changes nothing it shows but its times (which are
    the mount's, and not kept): its mode, owner and group stay as they are."""
    same = {"mode": stat.S_IMODE(DIR_MODE), "uid": os.getuid(), "gid": os.getgid()}
    for key, value in changes.items():
        if key in same and (stat.S_IMODE(value) if key == "mode" else value) != same[key]:
            return False
    return True


async def _truncate(namespace: Namespace, node: NameFile | NameDir | NameLink,
                    size: int) -> None:
    """truncate(2) of a name: to its size, nothing to do; to 0, it becomes an empty file
    (the feed stays, under its id); to any other size EROFS: a feed's bytes never change.
    (The kernel truncates what a link points to, never the link.)"""
    if isinstance(node, NameDir):
        raise fail(errno.EISDIR)
    if isinstance(node, NameLink):
        raise fail(errno.EINVAL)
    if node.slot is None:
        if size:
            raise fail(errno.EROFS)
        return
    if size:
        if size != sizes.whole_size(node.slot):
            raise fail(errno.EROFS)
        return
    now = time.time_ns()
    namespace.core.names.set_file(node.path, dataclasses.replace(
        node.entry, feed_id=None, mtime_ns=now, ctime_ns=now), replace=True)
    await changed(node.ino)


def set_xattr(namespace: Namespace, uploads: Uploads, ino: int, name: bytes,
              value: bytes) -> None:
    """setxattr: ``user.`` attributes of names are kept; other namespaces, hyperfs's own
    (computed) attributes and a feed's files: ENOTSUP."""
    node = _xattr_holder(namespace, ino, name)
    upload = namespace.upload_of(ino)
    if upload is not None:
        uploads.set_entry(upload, with_xattr(upload.entry, name, value), times_set=False)
    elif isinstance(node, NameFile | NameDir):
        namespace.core.names.set_xattr(node.path, name, value)


def remove_xattr(namespace: Namespace, uploads: Uploads, ino: int, name: bytes) -> None:
    """removexattr, with :func:`set_xattr`'s rules; ENOATTR for one the name has not."""
    node = _xattr_holder(namespace, ino, name)
    upload = namespace.upload_of(ino)
    if upload is not None:
        entry = without_xattr(upload.entry, name)
        if entry is None:
            raise fail(pyfuse3.ENOATTR)
        uploads.set_entry(upload, entry, times_set=False)
    elif (isinstance(node, NameFile | NameDir)
          and not namespace.core.names.remove_xattr(node.path, name)):
        raise fail(pyfuse3.ENOATTR)


def _xattr_holder(namespace: Namespace, ino: int, name: bytes) -> Inode:
    node = namespace.decode(ino)
    if not name.startswith(b"user.") or name in COMPUTED:
        raise fail(errno.ENOTSUP)
    if namespace.upload_of(ino) is None and not isinstance(node, NameFile | NameDir):
        raise fail(errno.ENOTSUP)
    return node
