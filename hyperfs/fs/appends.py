"""Appending: ``echo line >> MNT/log`` appends to a live feed, one block per write().

A shell's ``>>`` opens with O_APPEND. On a new name that makes a new live feed bound to
the name at once (it exists, empty, before the first write); on a name of a live feed
whose secret key is here, it appends; each write() is signed and stored as it comes
(cut into blocks of ``--block-size`` when larger), so another machine's ``tail -f`` sees
every line as soon as it is written. Nothing is buffered, so there is nothing to lose
at close. A static feed cannot grow (EROFS); someone else's live feed cannot be
appended to here (EACCES). ``cp`` and ``>`` still make static feeds (:mod:`.uploads`).
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass

import pyfuse3

from hyperfs.feeds.feed import Feed
from hyperfs.feeds.names import new_entry
from hyperfs.fs import sizes
from hyperfs.fs.errnos import errno_of, fail
from hyperfs.fs.inodes import FeedSlot, NameFile, Namespace
from hyperfs.store.entry import Kind

log = logging.getLogger("hyperfs.fs")


@dataclass(slots=True)
class Appender:
    """An open handle appending to a live feed of ours."""

    slot: FeedSlot
    feed: Feed
    block_size: int


def create_live(namespace: Namespace, path: bytes, mode: int, ctx: pyfuse3.RequestContext,
                block_size: int) -> tuple[Appender, NameFile]:
    """A new live feed bound to the new name ``path`` (checked by ``naming.new_path``),
    open for appending; the name belongs to the caller."""
    core = namespace.core
    with core.add(live=True) as made:  # the mount's slot holds it open from here on
        assert made.id is not None
        core.names.set_file(path, new_entry(Kind.FILE, mode, made.id, uid=ctx.uid,
                                            gid=ctx.gid), replace=False)
        node = namespace.named(path)
        assert isinstance(node, NameFile) and node.slot is not None
        return Appender(node.slot, node.slot.open(), block_size), node


def open_append(node: NameFile, block_size: int) -> Appender:
    """A name opened with O_APPEND: its live feed, if it is ours (EACCES if someone
    else's, EROFS if the feed is static)."""
    state = node.slot
    if state is None or not state.peek().live:
        raise fail(errno.EROFS)  # an empty file or a static feed: fixed by its id
    feed = state.open()
    if not feed.writable:
        raise fail(errno.EACCES)  # the secret key is elsewhere (or the feed forked)
    return Appender(state, feed, block_size)


async def write(appender: Appender, buf: bytes) -> int:
    """One write(): appended (and signed) now, as one block or blocks of the block size."""
    size = appender.block_size
    view = memoryview(buf)
    try:
        await appender.feed.append([view[at: at + size] for at in range(0, len(view), size)])
    except Exception as exc:
        log.warning("appending to %s failed: %s", appender.feed.hex, exc)
        raise fail(errno_of(exc)) from None
    sizes.live_size(appender.slot)
    return len(buf)
