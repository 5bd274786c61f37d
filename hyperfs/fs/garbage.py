"""Feeds no one else can know of go with their last name.

Removing a name leaves its feed stored under its id (docs/SEMANTICS.md): another name,
or a peer that was given the id, may still want it. That would make every temporary
file a lasting feed: a SQLite journal per transaction, an editor's swap file, each
version of a file saved over, git's lock files. So a feed is deleted when its last name
goes, if this mount made it, its bytes were not stored here before, and its id has not
left the mount since:

* nobody read its id (the ``user.hyperfs.id`` xattr: `hyperfs id`, getfattr), used it
  (looked into its directory ``MNT/<id>``: listed it, or opened or stat'ed a file in it)
  or pinned it;
* no peer named it, and it was not offered to a plaintext peer (a 1.x Join carries the
  id): the core's ``shared`` event;
* nothing of it was stored before: the core's ``created`` event, which a copy of bytes
  already here (the same id) does not send.

What is only shown (the listing of the mount's root, ``.status``) does not count: the id
is then only on this machine's screen. A feed that still has a name, or that a reader has
open (POSIX keeps an unlinked file's bytes until its last close), stays; the latter goes
at that close. The record lives in the mount's memory: after a restart, every feed is
kept as before.

Whether a feed still has a name takes a scan of every name (names are kept by path), so
the feeds that lost one are swept together: at once in a mount of up to ``SWEEP_SHARE``
feeds with names, else once per ``1/SWEEP_SHARE`` of their number (`rm -r` of many files
stays linear), and at unmount.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import pyfuse3

from hyperfs.fs.inodes import ROOT, Namespace
from hyperfs.fs.removal import delete_feed

log = logging.getLogger("hyperfs.fs")

SWEEP_SHARE = 256
"""A sweep reads every name: it waits for this share of them in feeds that lost one."""


class Garbage:
    """The feeds of ``namespace`` that may go with their last name (``unnamed``).

    ``in_use(feed_id)`` says whether an open handle reads the feed.
    """

    def __init__(self, namespace: Namespace, in_use: Callable[[bytes], bool]) -> None:
        self.namespace = namespace
        self.in_use = in_use
        self.fresh: set[bytes] = set()
        """Made by this mount, not stored before, id not out: deleted once unnamed."""
        self.unnamed_since_sweep: set[bytes] = set()
        """Fresh feeds that lost a name since the last sweep."""
        self.open_unnamed: set[bytes] = set()
        """Fresh feeds with no name but a reader: deleted at its last close."""
        self._batch = 1
        core = namespace.core
        self._unsubscribe = [core.on("created", self.fresh.add),
                             core.on("shared", self.keep)]

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()

    def keep(self, feed_id: bytes) -> None:
        """The id left the mount: the feed outlives its names from now on."""
        self.fresh.discard(feed_id)
        self.unnamed_since_sweep.discard(feed_id)
        self.open_unnamed.discard(feed_id)

    async def unnamed(self, feed_id: bytes | None) -> None:
        """A name of ``feed_id`` went (removed, or bound to another feed)."""
        if feed_id is None or feed_id not in self.fresh:
            return
        self.unnamed_since_sweep.add(feed_id)
        if len(self.unnamed_since_sweep) >= self._batch:
            await self.sweep()

    async def closed(self, feed_id: bytes) -> None:
        """A reader of ``feed_id`` closed it."""
        if feed_id in self.open_unnamed and not self.in_use(feed_id):
            self.open_unnamed.discard(feed_id)
            if feed_id not in self.namespace.core.names.bound():  # (or named again)
                await self._delete(feed_id)

    async def sweep(self, *, unmounted: bool = False) -> None:
        """Delete the feeds that lost their last name and that no reader has open (or
        every one, ``unmounted``: no reader is left)."""
        candidates, self.unnamed_since_sweep = self.unnamed_since_sweep, set()
        if unmounted:
            candidates |= self.open_unnamed
        if not candidates:
            return
        bound = self.namespace.core.names.bound()
        self._batch = max(1, len(bound) // SWEEP_SHARE)
        for feed_id in candidates - bound:
            if not unmounted and self.in_use(feed_id):
                self.open_unnamed.add(feed_id)
            else:
                await self._delete(feed_id)

    async def _delete(self, feed_id: bytes) -> None:
        self.fresh.discard(feed_id)
        if self.namespace.core.cache.is_pinned(self.namespace.slot(feed_id).peek()):
            return
        try:
            await delete_feed(self.namespace, feed_id)
        except OSError as exc:  # the name is gone either way; the feed stays a leftover
            log.warning("could not delete the unnamed feed %s: %s", feed_id.hex(), exc)
            return
        log.info("deleted feed %s with its last name", feed_id.hex())
        with contextlib.suppress(Exception):  # not mounted, or never looked up
            pyfuse3.invalidate_entry_async(ROOT, feed_id.hex().encode(), ignore_enoent=True)
