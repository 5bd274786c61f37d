"""Removing: ``rm`` drops local copies and names, ``rmdir`` deletes a feed or a directory.

* ``rm <id>/N`` drops the local copy of block N (the file stays listed: the block is still
  part of the feed and can be fetched again); ``rm <id>/.feed`` drops every local block.
* ``rmdir``/``rm -r <id>`` deletes the feed and its names from the database.
* ``rm NAME`` (or ``dir/NAME``) removes only the name (like removing a hard link; the feed
  stays, under its id, unless no one else can know of it: :mod:`.garbage`); ``rmdir`` of
  a directory of names removes it when it is empty.
"""

from __future__ import annotations

import errno

import trio

from hyperfs.feeds.names import join
from hyperfs.fs import sizes
from hyperfs.fs.errnos import fail
from hyperfs.fs.inodes import (
    NAME_MAX,
    STATUS_NAME,
    WHOLE_NAME,
    FeedDir,
    Inode,
    NameDir,
    Namespace,
    Root,
    block_number,
    check_block,
    feed_id_of,
)


def _name_path(namespace: Namespace, parent: Root | NameDir, name: bytes) -> bytes:
    """The path of name ``name`` in ``parent``, if it may be removed now: ENOENT for one
    no name can have, EBUSY while it is being written, EPERM for ``.status``."""
    if isinstance(parent, Root) and name == STATUS_NAME:
        raise fail(errno.EPERM)
    if len(name) > NAME_MAX:
        raise fail(errno.ENOENT)
    path = join(b"" if isinstance(parent, Root) else parent.path, name)
    if path in namespace.uploads:
        raise fail(errno.EBUSY)
    return path


async def unlink(namespace: Namespace, parent: Inode, name: bytes) -> bytes | None:
    """``rm`` of entry ``name`` of directory ``parent``; returns the id of the feed that
    lost a name (for :mod:`.garbage`), if any."""
    if isinstance(parent, Root | NameDir):
        path = _name_path(namespace, parent, name)
        entry = namespace.core.names.unlink(path)  # the feed stays, under its id
        namespace.forget(path)
        return entry.feed_id
    if not isinstance(parent, FeedDir):
        raise fail(errno.ENOTDIR)
    feed = parent.slot.open()
    if name == WHOLE_NAME:
        for index in list(feed.bitfield.iter_set(0, feed.blocks)):
            feed.drop(index)
            if index % 1024 == 1023:
                await trio.lowlevel.checkpoint()
        return None
    number = block_number(name)
    if number is None:
        raise fail(errno.ENOENT)
    check_block(feed, number)
    feed.drop(number)  # not local already: nothing to do, still a success
    return None


async def rmdir(namespace: Namespace, parent: Inode, name: bytes) -> None:
    """``rmdir`` of entry ``name`` of directory ``parent``: a feed in the root (with every
    name of it), or an empty directory of names."""
    feed_id = feed_id_of(name) if isinstance(parent, Root) else None
    if feed_id is not None:
        if not namespace.core.stored(feed_id):
            raise fail(errno.ENOENT)
        await delete_feed(namespace, feed_id)
        return
    if not isinstance(parent, Root | NameDir):
        raise fail(errno.ENOENT if isinstance(parent, FeedDir) else errno.ENOTDIR)
    path = _name_path(namespace, parent, name)
    if any(upload.startswith(path + b"/") for upload in namespace.uploads):
        raise fail(errno.ENOTEMPTY)  # a file is being written in it
    namespace.core.names.rmdir(path)
    namespace.forget(path)


async def delete_feed(namespace: Namespace, feed_id: bytes) -> None:
    """Delete a feed and its names, closing what the filesystem opened of it."""
    state = namespace.known(feed_id)
    if state is not None and state.feed is not None:
        state.close()
        sizes.forget(state)
    await namespace.core.remove(feed_id)
