"""A feed's blocks as the store keeps them: bytes in the data files (:mod:`.blocks`),
their places and crc32c in ``l`` keys, written through the :class:`.store.Store`'s batches.

Every method takes the feed's local number; the rules of feeds (which blocks may be
written, verification) are the caller's. Reads check each block's crc32c (the threat
model is in :mod:`.store`'s docstring).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from hyperfs.base.checksum import crc32c
from hyperfs.store.blocks import BytesLike, DataFiles, Location, ReadBuffer, Slots, aligned
from hyperfs.store.dropbehind import DropBehind
from hyperfs.store.index import Batch, Index
from hyperfs.store.layout import (
    KEY,
    LOCATION,
    LOCATION_VALUE,
    OWN,
    SLOTS,
    SLOTS_VALUE,
    location_key,
    page_key,
    prefix,
)
from hyperfs.store.recency import Recency
from hyperfs.tree.bitfield import PAGE_BYTES, Bitfield


@dataclass
class _Shape:
    """What a writable feed's appends were like, for finalize to record its slots."""

    size: int
    """The first block's size."""
    last: int
    """The last block's size so far."""
    fits: bool
    """Whether every block so far is at ``index * size`` and all before the last are of
    ``size`` (then the slots ``Slots(0, size)`` describe the file)."""

    def add(self, offset: int, length: int, index: int) -> None:
        self.fits = self.fits and self.last == self.size and offset == index * self.size
        self.last = length


class Run(NamedTuple):
    """Blocks read one after another into a buffer (:meth:`BlockStore.read_run`)."""

    data: memoryview
    """Their bytes, laid end to end."""
    lengths: list[int]
    """Each block's length, in order."""
    damaged: bool
    """Whether the block after them is stored but failed its crc32c."""


def _stretches(locations: Sequence[Location]) -> Iterator[Sequence[Location]]:
    """``locations`` cut where a block does not begin where the one before it ends."""
    begin = 0
    for at in range(1, len(locations) + 1):
        if at == len(locations) or \
                locations[at].offset != locations[at - 1].offset + locations[at - 1].length:
            yield locations[begin:at]
            begin = at


class BlockStore:
    """The blocks of every feed of one :class:`.store.Store` (its :attr:`~.Store.data`)."""

    def __init__(self, store: Index, files: DataFiles) -> None:
        self._store = store
        self.files = files
        self._slots: dict[int, Slots | None] = {}
        self._appended: dict[int, _Shape] = {}
        self.recency = Recency()
        """What was read least recently (told of every read and put; for eviction)."""
        self._behind = DropBehind()

    def forget(self, num: int) -> None:
        """Delete feed ``num``'s data file (its keys are the store's to delete)."""
        self.files.remove(num)
        self._behind.forget(num)
        self._slots.pop(num, None)
        self._appended.pop(num, None)

    def close(self) -> None:
        self._behind.close()
        self.files.close()

    def location(self, num: int, index: int) -> Location | None:
        raw = self._store.get(location_key(num, index))
        return None if raw is None else Location._make(LOCATION_VALUE.unpack(raw))

    def read(self, num: int, index: int) -> bytes | None:
        """Block ``index`` if it is stored and its bytes still match their crc32c."""
        location = self.location(num, index)
        if location is None:
            return None
        data = self.files.read(num, location)
        if crc32c(data) != location.crc or len(data) != location.length:
            return None
        self.recency.touch(num, index)
        return data

    def place_of(self, num: int, index: int) -> tuple[Path, int, int] | None:
        """Where block ``index``'s bytes are on disk: (data file, offset, length). For
        tools and tests that inspect or damage a block behind hyperfs's back."""
        location = self.location(num, index)
        if location is None:
            return None
        return self.files.path(num), location.offset, location.length

    def append(self, batch: Batch, num: int, start: int,
               blocks: Sequence[bytes | memoryview]) -> None:
        """Blocks ``start, start+1, ...`` of a writable feed: their bytes written now at
        the end of its file, in one call; their ``l`` keys in ``batch``."""
        offset = self.files.end(num)
        self.files.write(num, offset, blocks, durable=self._store.durable)
        self.record(batch, num, start, offset, [len(data) for data in blocks],
                    [crc32c(data) for data in blocks])

    def copy_in(self, num: int, source: int, source_offset: int, length: int) -> int:
        """Bytes of the file ``source`` copied to the end of a writable feed's file, for
        blocks to :meth:`record` once they are hashed: :meth:`DataFiles.copy_in`, synced
        behind as appends are when the store is durable. Blocking (a worker thread)."""
        return self.files.copy_in(num, source, source_offset, length,
                                  durable=self._store.durable)

    def record(self, batch: Batch, num: int, start: int, offset: int,
               lengths: Sequence[int], crcs: Sequence[int]) -> None:
        """Blocks ``start, start+1, ...`` of a writable feed whose bytes are in its file
        already, one after another from ``offset`` (written by :meth:`append` or
        :meth:`copy_in`; ``crcs`` of those bytes): their ``l`` keys in ``batch``."""
        put, pack, head = batch.put, KEY.pack, prefix(LOCATION, num)
        value, shape = LOCATION_VALUE.pack, self._appended.get(num)
        for index, (length, crc) in enumerate(zip(lengths, crcs, strict=True), start):
            put(pack(head, index), value(offset, length, crc))
            if index == 0:
                shape = self._appended[num] = _Shape(length, length, offset == 0)
            elif shape is not None:
                shape.add(offset, length, index)
            offset += length

    def seal(self, batch: Batch, num: int) -> None:
        """Before finalize's synced ``batch``: the feed's bytes to disk, its slots
        recorded when its blocks allow (so a block fetched again lands at its place), and
        its mark as made here (the only copy: never evicted). A store that is not durable
        leaves the sync to its next commit (:meth:`.store.Store.committer`)."""
        if self._store.durable:
            self.files.sync(num)
        batch.put(prefix(OWN, num), b"")
        self.recency.kept.add(num)
        shape = self._appended.get(num)
        if shape is not None and shape.fits and 0 < shape.last <= shape.size:
            self._put_slots(batch, num, Slots(0, shape.size))

    def put(self, batch: Batch, num: int, index: int, data: BytesLike,
            blocks: int | None) -> None:
        """Block ``index`` of a feed of ``blocks`` blocks (a verified put): :meth:`put_many`
        of one block."""
        self.put_many(batch, num, [(index, data)], blocks)

    def put_many(self, batch: Batch, num: int, received: Sequence[tuple[int, BytesLike]],
                 blocks: int | None) -> None:
        """Blocks ``(index, data)`` of a feed of ``blocks`` blocks (verified puts): their
        bytes written now, each at its place, those at consecutive places in one write;
        their ``l`` keys in ``batch``. ``blocks`` None: a live feed, whose length grows;
        slots depend on the length, so its blocks go at the end of its file instead."""
        files = self.files
        chunks: list[BytesLike] = []  # bytes not written yet, to go at [start, stop)
        start = stop = 0
        for index, data in received:
            length = len(data)
            offset = 0  # (an empty block has no bytes to place)
            if length:
                offset = self._place(batch, num, index, length, blocks,
                                     max(files.end(num), stop))
                if chunks and offset != stop:
                    self._write(num, start, chunks)
                    chunks = []
                if not chunks:
                    start = stop = offset
                chunks.append(data)
                stop += length
            batch.put(location_key(num, index), LOCATION_VALUE.pack(offset, length,
                                                                     crc32c(data)))
            self.recency.stored(num, index, length)
        if chunks:
            self._write(num, start, chunks)

    def _write(self, num: int, offset: int, chunks: Sequence[BytesLike]) -> None:
        length = self.files.write(num, offset, chunks)
        self._behind.wrote(num, offset, length, self.files.duplicate)  # (past a feed's start)

    def _place(self, batch: Batch, num: int, index: int, length: int, blocks: int | None,
               end: int) -> int:
        """Where a put block goes in a file that ends at ``end`` (:mod:`.blocks`): its
        slot when it fits, else past the slots and the end."""
        slots = None if blocks is None else self._slots_of(batch, num, index, length,
                                                            blocks, end)
        if slots is None or blocks is None:
            return end
        return slots.place(index, length, blocks, end)

    def _slots_of(self, batch: Batch, num: int, index: int, length: int,
                  blocks: int, end: int) -> Slots | None:
        """Feed ``num``'s slots, made from this block's size if it is the first put that
        is not the last block (past ``end``, where the file ends)."""
        if num not in self._slots:
            raw = self._store.get(prefix(SLOTS, num))
            self._slots[num] = None if raw is None else Slots._make(SLOTS_VALUE.unpack(raw))
        slots = self._slots[num]
        if slots is None and index != blocks - 1:
            slots = self._put_slots(batch, num, Slots(aligned(end), length))
        return slots

    def _put_slots(self, batch: Batch, num: int, slots: Slots) -> Slots:
        batch.put(prefix(SLOTS, num), SLOTS_VALUE.pack(*slots))
        self._slots[num] = slots
        return slots

    def iter(self, num: int, start: int, end: int) -> Iterator[bytes | None]:
        """Blocks ``start, start+1, ...`` before ``end``, up to the first one not stored:
        each one's bytes, or None for one that fails its crc32c (and nothing after it).

        One range scan of the ``l`` keys and a ``pread`` per block: a whole feed is read
        at the speed of the disk (or page cache), with no hashing but the crc32c.
        """
        head, pack, unpack, read = prefix(LOCATION, num), KEY.pack, LOCATION_VALUE.unpack, \
            self.files.read
        touch = self.recency.touch
        self._store.flush()
        index = start
        with self._store.db.iterator(start=pack(head, start), stop=pack(head, end),
                              fill_cache=False) as places:
            for key, value in places:
                if key != pack(head, index):
                    return
                location = Location._make(unpack(value))
                data = read(num, location)
                if crc32c(data) != location.crc or len(data) != location.length:
                    yield None
                    return
                touch(num, index)
                yield data
                index += 1

    def read_run(self, num: int, start: int, end: int, want: int,
                 buffer: ReadBuffer) -> Run:
        """Blocks ``start, start+1, ...`` before ``end``, up to the first one not stored,
        read one after another into ``buffer`` until they hold ``want`` bytes, each one's
        crc32c checked (the first that fails ends the run: :attr:`Run.damaged`).

        For reads of many blocks at once (a FUSE read of 1 MiB is 16 blocks of 64 KiB):
        one short range scan of the ``l`` keys, one ``preadv`` for each stretch of blocks
        that lie one after another in the data file (all of an added feed's, and of one
        downloaded in order), straight into the buffer: no bytes object per block, no
        join. The bytes are the buffer's until its next use.
        """
        locations = self._run_locations(num, start, end, want)
        view = buffer.view(sum(location.length for location in locations))
        read, got = self.files.read_at, 0  # got: the bytes of the view read so far
        for stretch in _stretches(locations):
            length = sum(location.length for location in stretch)
            filled = read(num, stretch[0].offset, view[got : got + length])
            got += filled
            if filled < length:  # the file ends early (truncated): the rest fails
                break
        lengths: list[int] = []
        at, touch = 0, self.recency.touch
        for index, location in enumerate(locations, start):
            end_at = at + location.length
            if end_at > got or crc32c(view[at:end_at]) != location.crc:
                return Run(view[:at], lengths, True)
            touch(num, index)
            lengths.append(location.length)
            at = end_at
        return Run(view[:at], lengths, False)

    def _run_locations(self, num: int, start: int, end: int, want: int) -> list[Location]:
        """The locations of blocks ``start, ...`` (before ``end``, while stored) that
        hold at least ``want`` bytes."""
        head, pack, unpack = prefix(LOCATION, num), KEY.pack, LOCATION_VALUE.unpack
        self._store.flush()
        locations: list[Location] = []
        total = 0
        with self._store.db.iterator(start=pack(head, start), stop=pack(head, end),
                                     fill_cache=False) as places:
            for key, value in places:
                if key != pack(head, start + len(locations)):
                    break
                location = Location._make(unpack(value))
                locations.append(location)
                total += location.length
                if total >= want:
                    break
        return locations

    def drop(self, num: int, index: int) -> None:
        """Forget a block of a feed nobody has open: its ``l`` key and its bit, atomically.

        (An open feed drops through :meth:`Feed.drop`, which keeps its bitfield in step.)
        """
        page = index // (PAGE_BYTES * 8)
        key = page_key(num, page)
        field = Bitfield()
        field.load_page(0, self._store.get(key) or bytes(PAGE_BYTES))
        field.discard(index % (PAGE_BYTES * 8))
        with self._store.batch() as batch:
            self.delete(batch, num, index)
            batch.put(key, field.page(0))

    def delete(self, batch: Batch, num: int, index: int) -> None:
        """Forget where block ``index`` is (its bytes stay until overwritten or deleted)."""
        batch.delete(location_key(num, index))

    def locations(self, num: int) -> Iterator[tuple[int, Location]]:
        """(index, location) of every block stored for feed ``num``."""
        for index, raw in self._store.scan(LOCATION, num):
            yield index, Location._make(LOCATION_VALUE.unpack(raw))

    def read_raw(self, num: int, location: Location) -> bytes:
        """The bytes at ``location`` in feed ``num``'s data file, as they are (unchecked)."""
        return self.files.read(num, location)

    def size(self, num: int) -> int:
        """The size of feed ``num``'s data file (0 when it has none)."""
        return self.files.size(num)

    def numbers(self) -> list[int]:
        """The feed numbers that have a data file, in order."""
        return sorted(self.files.numbers())
