"""Which stored blocks were read least recently: an in-memory LRU of regions, cheap enough
for every read.

Why regions and memory, not a LevelDB write per read: a read of a whole feed runs at
GB/s, one ``pread`` per block; a LevelDB write each would cost more than the read. So
blocks are grouped in regions of :data:`REGION_BLOCKS` consecutive blocks of one feed, and
a read only moves its region to the young end of an ``OrderedDict`` (skipped while the
reader stays in the region it read last). A region stands for 1 MiB of 64 KiB blocks:
a 100 GiB cache is ~100,000 entries. What outlives the process is coarser: per feed, when
it was last read (``r`` keys, written by :mod:`hyperfs.feeds.eviction` every minute and
at the end), so after a restart the feeds read longest ago are evicted first.

The :class:`~.blockstore.BlockStore` calls :meth:`Recency.touch` for every block read and
:meth:`Recency.stored` for every block put.
Until :attr:`Recency.enabled` is set (a cache limit was given) both return at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

REGION_BLOCKS = 16
"""Blocks per region: the unit of recency (and of eviction order)."""

STORED_STEP = 1 << 20
"""After this many bytes stored, :attr:`Recency.on_stored` is called (the evictor then
checks the cap and the free space): bounds how far a download overshoots the cap."""


class Recency:
    """The LRU of regions of evictable feeds, and the bytes stored since the last check.

    Two queues: regions read, least recently read first, and regions stored but not read
    yet (fetched ahead of a reader), oldest first. Eviction takes from the first queue
    before the second: a region fetched ahead is about to be read, one read is behind
    its reader (a video watched, a file copied), so under a cap larger than the
    read-ahead, what was fetched for a reader stays until it was read.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.kept: set[int] = set()
        """Feed numbers that are never evicted (made here, pinned): not tracked."""
        self.read_at: dict[int, float] = {}
        """Per feed, when it was last read this run (unix time), to persist coarsely."""
        self.stored_bytes = 0
        """Bytes put since the evictor last looked (it resets this)."""
        self.on_stored: Callable[[], None] | None = None
        self._read: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._unread: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._last: tuple[int, int] | None = None

    def touch(self, num: int, index: int) -> None:
        """Block ``index`` of feed ``num`` was just read."""
        if not self.enabled:
            return
        key = (num, index // REGION_BLOCKS)
        if key == self._last:
            return
        self._last = key
        if num in self.kept:
            return
        self._unread.pop(key, None)
        read = self._read
        read[key] = None
        read.move_to_end(key)
        self.read_at[num] = time.time()

    def stored(self, num: int, index: int, length: int) -> None:
        """Block ``index`` of feed ``num`` (``length`` bytes) was just put."""
        if not self.enabled:
            return
        key = (num, index // REGION_BLOCKS)
        if num not in self.kept and key not in self._read:
            self._unread[key] = None
        before = self.stored_bytes
        self.stored_bytes = before + length
        if self.on_stored is not None and (before // STORED_STEP != self.stored_bytes
                                           // STORED_STEP or length >= STORED_STEP):
            self.on_stored()

    def hot(self, num: int, index: int) -> bool:
        """Whether block ``index``'s region was read or stored this run."""
        key = (num, index // REGION_BLOCKS)
        return key in self._read or key in self._unread

    def oldest(self) -> tuple[int, range] | None:
        """The region to evict first, taken out of the queues: (feed number, blocks)."""
        queue = self._read or self._unread
        if not queue:
            return None
        (num, region), _ = queue.popitem(last=False)
        if self._last == (num, region):
            self._last = None
        start = region * REGION_BLOCKS
        return num, range(start, start + REGION_BLOCKS)

    def forget(self, num: int) -> None:
        """Feed ``num`` is kept from now on (or gone): stop tracking its regions."""
        for queue in (self._read, self._unread):
            for key in [key for key in queue if key[0] == num]:
                del queue[key]
        self.read_at.pop(num, None)
        self._last = None

    def __len__(self) -> int:
        return len(self._read) + len(self._unread)
