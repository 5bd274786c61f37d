"""The Store: a thin typed layer over plyvel that knows the key layout (:mod:`.layout`),
not the rules of feeds.

Every logical change goes through one :meth:`Store.batch`, which LevelDB applies
atomically: a process killed at any moment leaves either all of a change or none of it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import plyvel

from hyperfs.base.errors import CorruptDatabase, StorageLocked
from hyperfs.store.entry import Entry, Kind
from hyperfs.store.entry import decode as decode_entry
from hyperfs.store.entry import encode as encode_entry
from hyperfs.store.layout import (
    DATA,
    FORMAT,
    FORMAT_KEY,
    HASH,
    ID,
    KEY,
    LEGACY_NAME,
    META,
    NEXT_KEY,
    PAGE,
    PENDING,
    PER_FEED,
    U64,
    block_key,
    entry_key,
    feed_number,
    id_key,
    key_index,
    meta_value,
    node_key,
    page_key,
    parse_meta,
    prefix,
)
from hyperfs.tree.bitfield import PAGE_BYTES, Bitfield

Node = tuple[int, bytes]


class Batch(Protocol):
    """What :meth:`Store.batch` gives: a plyvel write batch, or inside :meth:`Store.group`
    an object with the same two methods."""

    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...


class Store:
    """A thin typed layer over plyvel; it knows the key layout, not the feed rules."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self.db = plyvel.DB(
                str(self.path),
                create_if_missing=True,
                # Block data is mostly incompressible (media, archives) and hashes always
                # are: snappy only costs time (measured: halves 64 KiB append speed).
                compression=None,
                # Two memtables (one being flushed) of this size are most of a process's
                # memory while it downloads: 32 MiB keeps a 1 GiB download under 150 MB.
                write_buffer_size=32 << 20,
                lru_cache_size=64 << 20,
                block_size=64 << 10,
                max_open_files=512,
                # Fewer, larger tables: a 1 GiB feed is 41 files instead of 476, and adds
                # ~10 % faster (less compaction bookkeeping).
                max_file_size=32 << 20,
            )
        except plyvel.IOError as exc:
            if "lock" in str(exc).lower():
                raise StorageLocked(_lock_message(self.path)) from None
            raise CorruptDatabase(f"cannot open database {self.path}: {exc}") from None
        except plyvel.CorruptionError as exc:
            raise CorruptDatabase(f"database {self.path} is damaged: {exc}") from None
        try:
            self._check_format()
            self._migrate_names()
        except BaseException:
            self.db.close()
            raise
        self._group: dict[bytes, bytes | None] | None = None
        raw = self.db.get(NEXT_KEY)
        self._next = U64.unpack(raw)[0] if raw else 0

    def _check_format(self) -> None:
        marker = self.db.get(FORMAT_KEY)
        if marker == FORMAT:
            return
        if marker is not None or next(self.db.iterator(include_value=False), None) is not None:
            raise CorruptDatabase(f"{self.path} is not a hyperfs database (format {marker!r})")
        self.db.put(FORMAT_KEY, FORMAT, sync=True)

    def close(self) -> None:
        self.db.close()

    def batch(self, *, sync: bool = False) -> AbstractContextManager[Batch]:
        """A write batch applied atomically when its ``with`` block ends without error.

        ``sync`` also waits for the disk, for the few changes (finalize) that must outlive
        a power cut; a killed process loses nothing LevelDB has written either way.
        Inside :meth:`group`, the batch joins the group's single write instead.
        """
        if self._group is not None and not sync:
            return _GroupedBatch(self._group)
        self.flush()
        return self.db.write_batch(transaction=True, sync=sync)

    @contextmanager
    def group(self) -> Iterator[None]:
        """Merge every batch made inside into one LevelDB write, done on exit.

        A LevelDB write costs far more than the few keys of one verified block, so the
        replication layer groups all the blocks of one network read. Each batch still
        joins whole or not at all, so the group is as atomic as its parts; reads inside
        see the grouped writes.
        """
        if self._group is not None:
            yield
            return
        self._group = {}
        try:
            yield
        finally:
            self.flush()
            self._group = None

    def flush(self) -> None:
        """Write what the current group holds so far (iterators only see written data)."""
        if self._group:
            with self.db.write_batch() as batch:
                for key, value in self._group.items():
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value)
            self._group.clear()

    def _get(self, key: bytes) -> bytes | None:
        group = self._group
        if group and key in group:  # written in this group (None: deleted in it)
            return group[key]
        return self.db.get(key)

    # -- feeds ---------------------------------------------------------------------

    def allocate(self, batch: Batch) -> int:
        """A fresh local feed number, recorded in ``batch``."""
        num = self._next
        self._next += 1
        batch.put(NEXT_KEY, U64.pack(self._next))
        return num

    def lookup(self, feed_id: bytes) -> int | None:
        raw = self._get(id_key(feed_id))
        return None if raw is None else U64.unpack(raw)[0]

    def blocks(self, num: int) -> int | None:
        raw = self._get(prefix(META, num))
        return None if raw is None else parse_meta(raw)[1]

    def put_feed(self, batch: Batch, num: int, feed_id: bytes, blocks: int | None):
        batch.put(id_key(feed_id), U64.pack(num))
        batch.put(prefix(META, num), meta_value(feed_id, blocks))

    def retire_feed(self, batch: Batch, num: int) -> None:
        """Unlist feed ``num`` and mark what it holds as leftovers (deleted by
        :meth:`delete_feed` now, or on the next open after a crash), inside ``batch``:
        for a change that replaces one feed by another atomically."""
        batch.delete(prefix(META, num))
        batch.put(prefix(PENDING, num), b"")

    def put_pending(self, batch: Batch, num: int, pending: bool) -> None:
        if pending:
            batch.put(prefix(PENDING, num), b"")
        else:
            batch.delete(prefix(PENDING, num))

    def feeds(self) -> Iterator[tuple[bytes, int, int | None]]:
        """Every feed with an id: (id, local number, blocks or None), in id order."""
        self.flush()
        for key, value in self.db.iterator(prefix=ID):
            num = U64.unpack(value)[0]
            yield key[1:], num, self.blocks(num)

    def pending(self) -> list[int]:
        """Writable feeds that were never finalized (left by a crash)."""
        self.flush()
        keys = self.db.iterator(prefix=PENDING, include_value=False)
        return [U64.unpack(key[1:])[0] for key in keys]

    def delete_feed(self, num: int, feed_id: bytes | None) -> None:
        """Remove a feed and all it holds, in bounded batches (it may be gigabytes).

        The id and meta keys go first, in one batch, so a crash half way leaves only
        unreachable data behind, never a feed with holes in it.
        """
        with self.batch() as batch:
            if feed_id is not None and self.lookup(feed_id) == num:
                batch.delete(id_key(feed_id))
            batch.delete(prefix(META, num))
            batch.put(prefix(PENDING, num), b"")  # marks the leftovers for clean-up on open
        self.flush()
        for kind in PER_FEED:
            keys = self.db.iterator(prefix=prefix(kind, num), include_value=False)
            while True:
                chunk = [key for key, _ in zip(keys, range(4096), strict=False)]
                if not chunk:
                    break
                with self.batch() as batch:
                    for key in chunk:
                        batch.delete(key)
        self.flush()
        self.db.delete(prefix(PENDING, num))

    # -- blocks, nodes, bitfields ----------------------------------------------------

    def block(self, num: int, index: int) -> bytes | None:
        return self._get(block_key(num, index))

    def put_block(self, batch: Batch, num: int, index: int, data: bytes) -> None:
        batch.put(block_key(num, index), data)

    def put_blocks(
        self, batch: Batch, num: int, start: int, blocks: Iterable[bytes]
    ) -> None:
        """Blocks ``start, start+1, ...``: the append hot path, one key pack per block."""
        put, pack, head = batch.put, KEY.pack, prefix(DATA, num)
        for index, data in enumerate(blocks, start):
            put(pack(head, index), data)

    def iter_blocks(self, num: int, start: int, end: int) -> Iterator[tuple[bytes, bytes | None]]:
        """Blocks ``start, start+1, ...`` before ``end`` as (data, stored leaf hash or None),
        up to the first one not stored.

        Two range scans (data and hashes) walked in step instead of two point lookups per
        block: whole-feed reads go at the speed of LevelDB's iterators.
        """
        data_prefix, hash_prefix, pack = prefix(DATA, num), prefix(HASH, num), KEY.pack
        self.flush()
        blocks = self.db.iterator(
            start=pack(data_prefix, start), stop=pack(data_prefix, end), fill_cache=False)
        hashes = self.db.iterator(
            start=pack(hash_prefix, 2 * start), stop=pack(hash_prefix, 2 * end), fill_cache=False)
        key, digest, done, index = b"", None, (b"\xff", None), start
        with blocks, hashes:
            for data_key, data in blocks:
                if data_key != pack(data_prefix, index):
                    return
                wanted = pack(hash_prefix, 2 * index)
                while key < wanted:  # skips the parent nodes between two leaves
                    key, digest = next(hashes, done)
                yield data, digest if key == wanted else None
                index += 1

    def drop_block(self, num: int, index: int) -> None:
        """Forget a block of a feed nobody has open: the block and its bit, atomically.

        (An open feed drops through :meth:`Feed.drop`, which keeps its bitfield in step.)
        """
        page = index // (PAGE_BYTES * 8)
        key = page_key(num, page)
        field = Bitfield()
        field.load_page(0, self._get(key) or bytes(PAGE_BYTES))
        field.discard(index % (PAGE_BYTES * 8))
        with self.batch() as batch:
            self.delete_block(batch, num, index)
            batch.put(key, field.page(0))

    def delete_block(self, batch: Batch, num: int, index: int) -> None:
        batch.delete(block_key(num, index))

    def node(self, num: int, index: int) -> bytes | None:
        return self._get(node_key(num, index))

    def put_node(self, batch: Batch, num: int, index: int, digest: bytes) -> None:
        batch.put(node_key(num, index), digest)

    def put_nodes(self, batch: Batch, num: int, nodes: Iterable[Node]) -> None:
        """Many verified nodes at once (the append hot path)."""
        put, pack, head = batch.put, KEY.pack, prefix(HASH, num)
        for index, digest in nodes:
            put(pack(head, index), digest)

    def bitfield(self, num: int) -> Bitfield:
        field = Bitfield()
        for page, data in self.pages(num):
            field.load_page(page, data)
        return field

    def put_page(self, batch: Batch, num: int, page: int, data: bytes) -> None:
        assert len(data) == PAGE_BYTES
        batch.put(page_key(num, page), data)

    # -- scans (for fsck: every record as stored, whatever the feed rules say) ----------

    def format_ok(self) -> bool:
        return self.db.get(FORMAT_KEY) == FORMAT

    def records(self) -> Iterator[tuple[int, bytes, int | None]]:
        """Every ``m`` record: (local number, feed id, blocks or None), by number."""
        self.flush()
        for key, value in self.db.iterator(prefix=META):
            yield (feed_number(key), *parse_meta(value))

    def numbers(self, kind: bytes) -> Iterator[int]:
        """The feed numbers that have keys of ``kind`` (one of ``PER_FEED``), seeking past
        each feed's keys instead of reading them."""
        self.flush()
        with self.db.iterator(prefix=kind, include_value=False) as keys:
            while (key := next(keys, None)) is not None:
                num = feed_number(key)
                yield num
                keys.seek(prefix(kind, num + 1))

    def _scan(self, kind: bytes, num: int) -> Iterator[tuple[int, bytes]]:
        self.flush()
        for key, value in self.db.iterator(prefix=prefix(kind, num)):
            yield key_index(key), value

    def pages(self, num: int) -> Iterator[tuple[int, bytes]]:
        """(page number, page bytes) of feed ``num``'s bitfield, as stored."""
        return self._scan(PAGE, num)

    def stored_blocks(self, num: int) -> Iterator[tuple[int, bytes]]:
        """(index, data) of every block stored for feed ``num``."""
        return self._scan(DATA, num)

    def stored_nodes(self, num: int) -> Iterator[tuple[int, bytes]]:
        """(flat index, hash) of every tree node stored for feed ``num``."""
        return self._scan(HASH, num)

    # -- names (entries) -------------------------------------------------------------

    def entry(self, path: bytes) -> Entry | None:
        raw = self._get(entry_key(path))
        return None if raw is None else decode_entry(raw)

    def put_entry(self, batch: Batch, path: bytes, entry: Entry | None) -> None:
        if entry is None:
            batch.delete(entry_key(path))
        else:
            batch.put(entry_key(path), encode_entry(entry))

    def entries(self, under: bytes = b"") -> Iterator[tuple[bytes, Entry]]:
        """Every (path, entry) whose path starts with ``under``, in path order."""
        self.flush()
        for key, value in self.db.iterator(prefix=entry_key(under)):
            yield key[1:], decode_entry(value)

    def children(self, directory: bytes) -> Iterator[tuple[bytes, Entry]]:
        """The entries directly in ``directory`` (b"" for the top), as (name, entry).

        One range scan that seeks past each subdirectory's contents instead of reading
        them: a directory entry ``a/b`` sorts before its contents ``a/b/...``.
        """
        head = entry_key(directory + b"/" if directory else b"")
        self.flush()
        with self.db.iterator(prefix=head) as items:
            for key, value in items:
                name = key[len(head):]
                slash = name.find(b"/")
                if slash >= 0:  # inside a subdirectory: skip the rest of it
                    items.seek(head + name[:slash] + b"0")  # b"0" sorts right after b"/"
                    continue
                yield name, decode_entry(value)

    def names(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (path, feed id) of a file bound to a feed, in path order."""
        for path, entry in self.entries():
            if entry.feed_id is not None:
                yield path, entry.feed_id

    def _migrate_names(self) -> None:
        """Names stored before they had records (``n`` name -> id) become file entries,
        in one batch: mode 0644, owned by whoever opens the database, dated now."""
        legacy = list(self.db.iterator(prefix=LEGACY_NAME))
        if not legacy:
            return
        now = time.time_ns()
        with self.db.write_batch(transaction=True, sync=True) as batch:
            for key, feed_id in legacy:
                entry = Entry(Kind.FILE, 0o644, os.getuid(), os.getgid(), now, now, now,
                              feed_id)
                batch.put(entry_key(key[1:]), encode_entry(entry))
                batch.delete(key)


class _GroupedBatch:
    """A batch inside :meth:`Store.group`: collects its keys, joins the group on success."""

    __slots__ = ("_group", "_ops")

    def __init__(self, group: dict[bytes, bytes | None]) -> None:
        self._group = group
        self._ops: dict[bytes, bytes | None] = {}

    def put(self, key: bytes, value: bytes) -> None:
        self._ops[key] = value

    def delete(self, key: bytes) -> None:
        self._ops[key] = None

    def __enter__(self) -> _GroupedBatch:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self._group.update(self._ops)


def _lock_message(path: Path) -> str:
    """Say which process holds the database's lock, read from /proc/locks."""
    holder = ""
    try:
        inode = (path / "LOCK").stat().st_ino
        with open("/proc/locks") as locks:
            for line in locks:
                match = re.search(r"\s(\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s", line)
                if match and int(match.group(2)) == inode:
                    pid = int(match.group(1))
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    holder = f" (pid {pid}: {cmd.decode(errors='replace').strip()})"
                    break
    except OSError:
        pass
    if not holder:
        holder = " (another process, or another open core in this one)"
    return f"database {path} is in use by another process{holder}; close it first"
