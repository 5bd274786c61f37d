"""What the cache keeps in the database: which feeds are made here (``o``), pinned
(``k``), and when each feed was last read (``r``) — see :mod:`.layout`.

Feeds made here are marked in finalize's batch (:meth:`.BlockStore.seal`); live feeds
written here are known by their secret key (``<db>/keys``, :mod:`.keys`). A database
written before the marks existed has none: at its first open here every feed held whole
is marked as made here, because one of those may be the only copy anywhere, and keeping
a fetched feed too long costs disk while evicting the only copy of one made here loses
it. (`hyperfs pin`/`unpin` cannot change a mark ``o``; `rm` of a feed's files can.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from hyperfs.store.keys import KEYS, secret_path
from hyperfs.store.layout import CACHE_KEY, META, OWN, PINNED, READ, U64, prefix
from hyperfs.store.store import Store
from hyperfs.tree.bitfield import PAGE_BITS, Bitfield


class CacheMarks:
    """The ``o``, ``k`` and ``r`` keys of one store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        if store.get(CACHE_KEY) is None:
            self._mark_whole_feeds()

    def _mark_whole_feeds(self) -> None:
        store = self._store
        with store.batch(sync=True) as batch:
            for _feed_id, num, blocks in list(store.feeds()):
                if blocks is not None and store.bitfield(num).count == blocks:
                    batch.put(prefix(OWN, num), b"")
            batch.put(CACHE_KEY, b"1")

    def own(self) -> set[int]:
        """Feeds made here: marked so, or live feeds whose secret key is here (they are
        written here, :mod:`.keys`, whether made here or fetched again after a delete)."""
        own = set(self._store.numbers(OWN))
        folder = self._store.path / KEYS
        if folder.is_dir():
            for path in folder.glob("*.secret"):
                with contextlib.suppress(ValueError):
                    num = self._store.lookup(bytes.fromhex(path.stem))
                    if num is not None:
                        own.add(num)
        return own

    def pinned(self) -> set[int]:
        return set(self._store.numbers(PINNED))

    def is_own(self, num: int, feed_id: bytes | None = None) -> bool:
        """Whether feed ``num`` (of id ``feed_id``, if known) is made here (see :meth:`own`)."""
        if self._store.get(prefix(OWN, num)) is not None:
            return True
        return feed_id is not None and secret_path(self._store.path, feed_id).exists()

    def is_pinned(self, num: int) -> bool:
        return self._store.get(prefix(PINNED, num)) is not None

    def pin(self, num: int, pinned: bool) -> None:
        """Pin feed ``num`` (or unpin it), durably."""
        with self._store.batch(sync=True) as batch:
            if pinned:
                batch.put(prefix(PINNED, num), b"")
            else:
                batch.delete(prefix(PINNED, num))

    def read_times(self) -> dict[int, int]:
        """Per feed, when it was last read (unix seconds), as last saved."""
        return {num: U64.unpack(self._store.get(prefix(READ, num)) or bytes(8))[0]
                for num in self._store.numbers(READ)}

    def save_read_times(self, times: dict[int, float]) -> None:
        """Record when feeds were last read: one batch (coarse: not on the read path)."""
        if not times:
            return
        with self._store.batch() as batch:
            for num, when in times.items():
                if self._store.get(prefix(META, num)) is not None:  # not deleted since
                    batch.put(prefix(READ, num), U64.pack(int(when)))


def evict(store: Store, num: int, indexes: Iterable[int],
          bitfield: Bitfield) -> tuple[int, int]:
    """Evict blocks ``indexes`` of feed ``num`` (those whose bit is set): (blocks, bytes)
    evicted. Also how a feed drops a block (`rm`, damage): a bit without its ``l`` key
    is cleared all the same.

    ``bitfield`` is the feed's (an open feed's own, so it stays in step). The crash rule
    holds as in a put, in reverse: first one batch forgets where the blocks are and
    clears their bits, and is written; only then are their bytes punched out of the data
    file. A kill in between leaves bytes that nothing points at (fsck accepts them; the
    space is given back when the slot is written again), never a bit or an ``l`` key
    without its bytes.
    """
    data = store.data
    gone = [(index, data.location(num, index)) for index in indexes if index in bitfield]
    if not gone:
        return 0, 0
    pages = {index // PAGE_BITS for index, _ in gone}
    try:
        with store.batch() as batch:  # (which may reopen the store: the bits after it)
            for index, _ in gone:
                bitfield.discard(index)
            for index, _ in gone:
                data.delete(batch, num, index)
            for page in pages:
                store.put_page(batch, num, page, bitfield.page(page))
        store.flush()  # inside a group too: the index is written before a byte goes
    except BaseException:
        for index, _ in gone:
            bitfield.add(index)
        raise
    places = [location for _, location in gone if location is not None]
    data.files.punch(num, places)
    return len(gone), sum(location.length for location in places)
