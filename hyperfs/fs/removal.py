"""Removing: ``rm`` drops local copies and names, ``rmdir`` deletes a feed.

* ``rm <id>/N`` drops the local copy of block N (the file stays listed: the block is still
  part of the feed and can be fetched again); ``rm <id>/.feed`` drops every local block.
* ``rmdir``/``rm -r <id>`` deletes the feed and its names from the database.
* ``rm NAME`` removes only the name (like removing a hard link; the feed stays).
"""

from __future__ import annotations

import errno

import trio

from hyperfs.fs import sizes
from hyperfs.fs.errnos import fail
from hyperfs.fs.inodes import (
    NAME_MAX,
    ROOT,
    STATUS_NAME,
    WHOLE_NAME,
    FeedDir,
    Inode,
    Namespace,
    Root,
    block_number,
    check_block,
    feed_id_of,
)


async def unlink(namespace: Namespace, parent: Inode, name: bytes) -> None:
    """``rm`` of entry ``name`` of directory ``parent``."""
    if isinstance(parent, Root):
        if name in namespace.uploads:
            raise fail(errno.EBUSY)
        if name == STATUS_NAME:
            raise fail(errno.EPERM)
        if len(name) > NAME_MAX or namespace.core.names.feed_of(name) is None:
            raise fail(errno.ENOENT)
        namespace.core.names.unlink(name)  # the feed stays, under its id
        return
    if not isinstance(parent, FeedDir):
        raise fail(errno.ENOTDIR)
    feed = parent.slot.open()
    if name == WHOLE_NAME:
        for index in list(feed.bitfield.iter_set(0, feed.blocks)):
            feed.drop(index)
            if index % 1024 == 1023:
                await trio.lowlevel.checkpoint()
        return
    number = block_number(name)
    if number is None:
        raise fail(errno.ENOENT)
    check_block(feed, number)
    feed.drop(number)  # not local already: nothing to do, still a success


async def rmdir(namespace: Namespace, parent_ino: int, name: bytes) -> None:
    """``rmdir`` of entry ``name`` of directory ``parent_ino``: only feeds in the root."""
    if parent_ino != ROOT:
        is_dir = isinstance(namespace.decode(parent_ino), FeedDir)
        raise fail(errno.ENOENT if is_dir else errno.ENOTDIR)
    feed_id = feed_id_of(name)
    if feed_id is None:
        raise fail(errno.ENOTDIR if namespace.numbered(name) else errno.ENOENT)
    if not namespace.core.stored(feed_id):
        raise fail(errno.ENOENT)
    state = namespace.known(feed_id)
    if state is not None and state.feed is not None:
        state.close()
        sizes.forget(state)
    await namespace.core.remove(feed_id)
