"""The cache: limits on the block data of fetched feeds, and eviction to keep them.

A feed fetched from peers is a cache: its blocks can be fetched again, so under a limit
(``--cache-max-size``: bytes of block data on disk; ``--min-free-space``: bytes to leave
free on the database's file system) the least recently read ones are evicted. Feeds made
here and pinned feeds are never evicted, nor counted in the limit (status shows them).

How (the store's half is :mod:`hyperfs.store.cache` and :mod:`hyperfs.store.recency`):
every read and put moves its region (16 blocks) to the young end of an in-memory LRU;
each MiB stored wakes :meth:`Cache.run`, which measures the data files (``st_blocks``)
and the free space and, when over, evicts down to 15/16 of the limit: first blocks not
read this run, feed by feed, the feeds read longest ago (``r`` keys) first; then the
oldest regions of the LRU. An evicted block is one a Have already told peers we hold:
hypercore 1.x has no message to take that back, so a peer that asks for it gets the
silence any missing block gets, and its request moves to another peer once it times out
(as :mod:`hyperfs.replication.peer` treats requests passed over). We ask for it again
like any missing block when it is read.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from hyperfs.feeds.feed import Feed
from hyperfs.store.cache import CacheMarks, evict
from hyperfs.store.layout import META, parse_meta, prefix
from hyperfs.store.store import Store

log = logging.getLogger("hyperfs.cache")

SAVE_EVERY = 60.0
"""Seconds between writes of when feeds were last read (``r`` keys): coarse on purpose."""

BATCH_BLOCKS = 1024
"""Blocks evicted per LevelDB batch while evicting a cold feed."""


@dataclass(frozen=True)
class Limits:
    """How much block data fetched feeds may take (None: no limit)."""

    max_size: int | None = None
    """Bytes of block data on disk of feeds neither made here nor pinned."""
    min_free: int | None = None
    """Bytes to leave free on the file system of the database."""

    @property
    def enabled(self) -> bool:
        return self.max_size is not None or self.min_free is not None


class Cache:
    """Eviction for the feeds of one store. ``opened(id)`` is the open :class:`Feed` of
    an id, if any (the core's registry), so that an open feed's bitfield stays true."""

    def __init__(self, store: Store, opened: Callable[[bytes], Feed | None]) -> None:
        self._store = store
        self._opened = opened
        self.marks = CacheMarks(store)
        self.limits = Limits()
        self.recency = store.data.recency
        self.recency.kept = self.marks.own() | self.marks.pinned()
        self.recency.on_stored = self._wake_up
        self._wake = trio.Event()
        self._cold: list[int] | None = None  # feeds not yet scanned this run, oldest first
        self._used: int | None = None
        self.evicted_blocks = 0
        self.evicted_bytes = 0

    def limit(self, limits: Limits) -> None:
        """Apply ``limits`` from now on (:meth:`run` keeps them)."""
        self.limits = limits
        self.recency.enabled = limits.enabled

    def _wake_up(self) -> None:
        self._wake.set()

    # -- what is where ------------------------------------------------------------------

    def _evictable(self, num: int) -> bytes | None:
        """The id of feed ``num`` if it has a record and is neither made here nor pinned
        (asked of the database each time: a feed finalized or pinned a moment ago counts)."""
        raw = self._store.get(prefix(META, num))
        if raw is None:
            return None
        feed_id = parse_meta(raw)[0]
        if self.marks.is_own(num, feed_id) or self.marks.is_pinned(num):
            return None
        return feed_id

    def _candidates(self) -> list[int]:
        """Every feed whose blocks count in the limit (evictable, with a data file)."""
        kept = self.marks.own() | self.marks.pinned()
        return [num for num, _id, _blocks in self._store.records() if num not in kept]

    def used(self) -> int:
        """Bytes of disk the block data of evictable feeds takes (holes take none)."""
        allocated = self._store.data.files.allocated
        self._used = sum(allocated(num) for num in self._candidates())
        self.recency.stored_bytes = 0
        return self._used

    def free(self) -> int:
        """Bytes free (to this user) on the database's file system."""
        info = os.statvfs(self._store.path)
        return info.f_bavail * info.f_frsize

    def status(self) -> dict[str, object]:
        """Cache use, for `hyperfs status` and the mount's ``.status``."""
        allocated = self._store.data.files.allocated
        own, pinned = self.marks.own(), self.marks.pinned()
        return {
            "used": self.used(), "max_size": self.limits.max_size,
            "min_free": self.limits.min_free, "free": self.free(),
            "pinned": sum(allocated(num) for num in pinned - own),
            "pinned_feeds": len(pinned), "own": sum(allocated(num) for num in own),
            "own_feeds": len(own), "evicted_blocks": self.evicted_blocks,
            "evicted_bytes": self.evicted_bytes,
        }

    # -- eviction -----------------------------------------------------------------------

    def excess(self) -> int:
        """Bytes to evict now to get back under the limits (0: none), with some room
        below them so that eviction does not run at every MiB."""
        limits, excess = self.limits, 0
        if limits.max_size is not None:
            estimate = (self._used or 0) + self.recency.stored_bytes
            if self._used is None or estimate > limits.max_size:
                used = self.used()
                if used > limits.max_size:
                    excess = used - limits.max_size * 15 // 16
        if limits.min_free is not None:
            free = self.free()
            if free < limits.min_free:
                excess = max(excess, limits.min_free + limits.min_free // 16 - free)
        return excess

    def check(self) -> int:
        """Evict what the limits ask for now; returns the bytes freed."""
        excess = self.excess()
        if not excess:
            return 0
        freed = self.evict(excess)
        if freed < excess:
            log.info("cache: evicted %d of %d bytes asked; nothing else is evictable",
                     freed, excess)
        self._used = None
        return freed

    def evict(self, amount: int) -> int:
        """Evict at least ``amount`` bytes of block data if there is that much: blocks not
        read this run first (the feeds read longest ago first), then the LRU's oldest."""
        freed = self._evict_cold(amount)
        while freed < amount and (oldest := self.recency.oldest()) is not None:
            num, blocks = oldest
            freed += self._evict(num, blocks)
        return freed

    def _evict_cold(self, amount: int) -> int:
        if self._cold is None:
            times = self.marks.read_times()
            self._cold = sorted(self._candidates(), key=lambda num: times.get(num, 0))
        freed, hot, data = 0, self.recency.hot, self._store.data
        while freed < amount and self._cold:
            num = self._cold[0]
            victims: list[int] = []
            size = 0
            for index, location in data.locations(num):
                if not hot(num, index):
                    victims.append(index)
                    size += location.length
                    if freed + size >= amount or len(victims) >= BATCH_BLOCKS:
                        break
            else:
                self._cold.pop(0)  # what is left of this feed was read this run
            freed += self._evict(num, victims)
        return freed

    def _evict(self, num: int, indexes: range | list[int]) -> int:
        """Evict the stored ones of ``indexes`` of feed ``num``, if it is evictable."""
        feed_id = self._evictable(num) if indexes else None
        if feed_id is None:
            return 0
        feed = self._opened(feed_id)
        bitfield = feed.bitfield if feed is not None and feed.num == num else None
        if bitfield is None:
            bitfield = self._store.bitfield(num)
        blocks, freed = evict(self._store, num, indexes, bitfield)
        self.evicted_blocks += blocks
        self.evicted_bytes += freed
        return freed

    # -- pins -----------------------------------------------------------------------------

    def pin(self, feed: Feed, pinned: bool = True) -> None:
        """Keep ``feed`` whole (the caller downloads it), or let it be evicted again."""
        self.marks.pin(feed.num, pinned)
        if pinned:
            self.recency.kept.add(feed.num)
            self.recency.forget(feed.num)
        elif not self.marks.is_own(feed.num):
            self.recency.kept.discard(feed.num)
            self._cold = None  # its blocks are cold again
        self._used = None

    def is_pinned(self, feed: Feed) -> bool:
        return self.marks.is_pinned(feed.num)

    # -- running --------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the limits while the node runs: woken by each MiB stored, and every
        :data:`SAVE_EVERY` seconds, when it also records when feeds were last read."""
        saved = time.monotonic()
        while True:
            self.check()
            with trio.move_on_after(SAVE_EVERY):
                await self._wake.wait()
            self._wake = trio.Event()
            if time.monotonic() - saved >= SAVE_EVERY:
                self.save()
                saved = time.monotonic()

    def save(self) -> None:
        """Record when feeds were last read (``r`` keys), and forget it in memory."""
        self.marks.save_read_times(self.recency.read_at)
        self.recency.read_at.clear()
