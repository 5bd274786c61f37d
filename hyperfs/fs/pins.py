"""The ``user.hyperfs.pinned`` xattr: how `hyperfs pin PATH` asks a running mount (which
holds the database) to pin a feed, and how anyone sees whether one is pinned.

``1`` pins (the feed is never evicted; `hyperfs pin` then reads it through, which
downloads it), ``0`` or removing it unpins. It is not listed by listxattr, so tools
that copy xattrs do not copy it; it is read and written by name.
"""

from __future__ import annotations

import errno

import pyfuse3

from hyperfs.feeds.feed import Feed
from hyperfs.fs.attributes import feed_of
from hyperfs.fs.errnos import fail
from hyperfs.fs.inodes import Namespace

XATTR_PINNED = b"user.hyperfs.pinned"


def _feed(namespace: Namespace, ino: int) -> Feed:
    state, _index = feed_of(namespace.decode(ino))
    if state is None:
        raise fail(errno.ENOTSUP)  # a directory of names, an empty file, a file being written
    return state.peek()


def feed_id(namespace: Namespace, ino: int) -> bytes:
    """The id of the feed whose pin ``ino`` shows."""
    feed = _feed(namespace, ino)
    assert feed.id is not None  # (a feed known by id)
    return feed.id


def pinned(namespace: Namespace, ino: int) -> bytes:
    return b"1" if namespace.core.cache.is_pinned(_feed(namespace, ino)) else b"0"


def set_pinned(namespace: Namespace, ino: int, value: bytes | None) -> None:
    """Pin (``b"1"``) or unpin (``b"0"``, or None: the xattr removed); EINVAL otherwise."""
    if value not in (b"1", b"0", None):
        raise fail(errno.EINVAL)
    feed = _feed(namespace, ino)
    if value is None and not namespace.core.cache.is_pinned(feed):
        raise fail(pyfuse3.ENOATTR)
    namespace.core.cache.pin(feed, value == b"1")
