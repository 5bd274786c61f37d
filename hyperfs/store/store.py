"""The Store: a thin typed layer over plyvel and the data files that knows the key layout
(:mod:`.layout`) and where blocks go (:mod:`.blocks`), not the rules of feeds.

Every logical change goes through one :meth:`Store.batch`, which LevelDB applies
atomically: a process killed at any moment leaves either all of a change or none of it.
Block bytes are written to their data file before the batch that points at them.

Integrity, and the threat it answers. Every block read is checked against the crc32c
kept in its ``l`` key (hardware-accelerated: a few GB/s, far cheaper than the SHA-256 a
read used to cost): it catches what disks and file systems do (bit rot, torn or lost
writes, a truncated or overwritten file), and a block that fails is never returned: the
feed drops it and fetches it again. It does not stop someone who can write the database:
they can forge a block and its crc (or the hashes) alike, and nothing local could stop
them. SHA-256 stays the check for everything that arrives from the network (a put is
verified against the feed id before a byte is written), and ``hyperfs fsck`` re-hashes
every stored block against its verified leaf.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import plyvel

from hyperfs.base.callbacks import Callbacks
from hyperfs.base.errors import CorruptDatabase, StorageLocked
from hyperfs.store.blocks import DataFiles, sync_and_close
from hyperfs.store.blockstore import BlockStore
from hyperfs.store.entry import Entry
from hyperfs.store.entry import decode as decode_entry
from hyperfs.store.entry import encode as encode_entry
from hyperfs.store.index import Batch
from hyperfs.store.layout import (
    FORMAT,
    FORMAT_KEY,
    HASH,
    ID,
    KEY,
    LEGACY_FORMAT,
    META,
    NEXT_KEY,
    PAGE,
    PENDING,
    PER_FEED,
    U64,
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
from hyperfs.tree.hashes import Node


class Store:
    """A thin typed layer over plyvel and the data files; it knows the key layout, not the
    feed rules.

    A database of an earlier format opens with :attr:`outdated` set; only
    :func:`.migrate.open_store` (which the core uses) brings it up to date.
    """

    durable = True
    """Whether a finalize waits for the disk (its feed's file fdatasynced, then a synced
    batch) before it returns. Those who set it False (a mount, `hyperfs add` without
    ``--fsync``) treat close like a local filesystem does: not a promise of durability;
    they make changes durable when asked (fsync) or every few seconds, all at once, with
    :meth:`committer`. A killed process loses nothing either way: only a power cut can
    lose what no commit covered, and what it loses reads as damage (crc32c), never as
    wrong bytes."""

    writes = 0
    """How many LevelDB writes this process made: whether a commit has anything to do."""

    write_failures = 0
    """How many LevelDB writes failed: what was kept in memory beside a write that may
    have been among them (a feed's verified nodes) is no longer known to be stored."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.path.mkdir(parents=True, exist_ok=True)
        self.db = self._open_db()
        self._failed: str | None = None  # a LevelDB write failed: reopen before the next
        self.reopened: Callbacks[[]] = Callbacks()
        """Called after a reopen that followed a failed write: what LevelDB recovered need
        not be what this process believed it held (measured on a full tmpfs: a failed
        group write left bitfield pages ahead of the ``l`` keys), so whoever keeps state
        beside the database (a feed's bitfield) must read it again, and set it right."""
        self._group: dict[bytes, bytes | None] | None = None
        try:
            self.outdated = self._check_format()
            """Whether the database is of format 1 (block data inside LevelDB)."""
        except BaseException:
            self.db.close()
            raise
        self.data = BlockStore(self, DataFiles(self.path / "data"))
        """The feeds' blocks: bytes in data files, places in ``l`` keys."""
        raw = self.db.get(NEXT_KEY)
        self._next = U64.unpack(raw)[0] if raw else 0

    def _open_db(self) -> Any:
        """The plyvel database, with the options this layout is tuned for."""
        try:
            return plyvel.DB(
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

    def _writing(self) -> None:
        """Before a LevelDB write: after a failed one, reopen the database first.

        A write that fails half way (a full disk) leaves a torn record at the end of
        LevelDB's log; this LevelDB goes on accepting writes after it, but recovery stops
        at the torn record, so they would be lost at the next open. Reopening recovers now
        and starts a fresh log. While the disk is still full the reopen fails too, and so
        does the write (ENOSPC): nothing is accepted that would not last.
        """
        self.writes += 1
        if self._failed is not None:
            self.reopen()

    def reopen(self) -> None:
        """Close and open LevelDB again (recovering its log). While that fails, the
        database stands closed: each use tries again, and says why it cannot."""
        self.db.close()
        try:
            self.db = self._open_db()
        except CorruptDatabase:
            self.db = _ClosedDb(self)
            raise OSError(errno.ENOSPC, f"database {self.path}: {self._failed}") from None
        self._failed = None
        self.reopened()

    def _write_failed(self, exc: Exception) -> OSError:
        """The OSError a failed LevelDB write becomes (the next write reopens first)."""
        self.write_failures += 1
        self._failed = str(exc)
        code = errno.ENOSPC if "space" in str(exc).lower() else errno.EIO
        return OSError(code, f"database {self.path}: {exc}")

    def _check_format(self) -> bool:
        """Whether the database is of format 1 (to migrate); a new one is marked."""
        marker = self.db.get(FORMAT_KEY)
        if marker in (FORMAT, LEGACY_FORMAT):
            return marker == LEGACY_FORMAT
        if marker is not None or next(self.db.iterator(include_value=False), None) is not None:
            raise CorruptDatabase(f"{self.path} is not a hyperfs database (format {marker!r})")
        self.db.put(FORMAT_KEY, FORMAT, sync=True)
        return False

    def committer(self, keep: Collection[int] = ()) -> Callable[[], None]:
        """The work that makes every change made so far outlive a power cut, to run in a
        worker thread (it waits for the disk): fdatasync each data file written since its
        last sync, then an empty synced LevelDB write, which syncs LevelDB's log and so
        every batch before it. Files first: a batch durable before its blocks' bytes
        would point at bytes a power cut can take. What changes after this call is left
        to the next commit, and so are the data files of the feeds in ``keep``."""
        self.flush()
        fds = self.data.files.take_written(keep)

        def commit() -> None:
            sync_and_close(fds)
            try:
                self.db.write_batch(sync=True).write()
            except plyvel.IOError as exc:
                raise self._write_failed(exc) from None

        return commit

    def close(self) -> None:
        self.data.close()
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
        self._writing()
        return _Batch(self, self.db.write_batch(transaction=True, sync=sync))

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
            self._writing()
            try:
                with self.db.write_batch() as batch:
                    for key, value in self._group.items():
                        if value is None:
                            batch.delete(key)
                        else:
                            batch.put(key, value)
            except plyvel.IOError as exc:
                raise self._write_failed(exc) from None
            finally:
                self._group.clear()

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key`` as this process sees it (inside a group, with its writes)."""
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
        raw = self.get(id_key(feed_id))
        return None if raw is None else U64.unpack(raw)[0]

    def blocks(self, num: int) -> int | None:
        raw = self.get(prefix(META, num))
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
        unreachable data behind, never a feed with holes in it; the data file goes last,
        before the mark that says there is something left to delete.
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
        self.data.forget(num)
        with self.batch() as batch:
            batch.delete(prefix(PENDING, num))

    def node(self, num: int, index: int) -> bytes | None:
        return self.get(node_key(num, index))

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

    def scan(self, kind: bytes, num: int) -> Iterator[tuple[int, bytes]]:
        """(index, value) of every key of ``kind`` of feed ``num``, as stored."""
        self.flush()
        for key, value in self.db.iterator(prefix=prefix(kind, num)):
            yield key_index(key), value

    def pages(self, num: int) -> Iterator[tuple[int, bytes]]:
        """(page number, page bytes) of feed ``num``'s bitfield, as stored."""
        return self.scan(PAGE, num)

    def stored_nodes(self, num: int) -> Iterator[tuple[int, bytes]]:
        """(flat index, hash) of every tree node stored for feed ``num``."""
        return self.scan(HASH, num)

    # -- names (entries) -------------------------------------------------------------

    def entry(self, path: bytes) -> Entry | None:
        raw = self.get(entry_key(path))
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


class _Batch:
    """A plyvel write batch whose failed write becomes an OSError (see Store._writing)."""

    __slots__ = ("_batch", "_store", "delete", "put")

    def __init__(self, store: Store, batch: Any) -> None:
        self._store, self._batch = store, batch
        self.put, self.delete = batch.put, batch.delete

    def __enter__(self) -> _Batch:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._batch.clear()  # an error inside: nothing of it is written
            return
        try:
            self._batch.write()
        except plyvel.IOError as error:
            raise self._store._write_failed(error) from None


class _ClosedDb:
    """Stands for the database while a reopen after a failed write is not possible yet
    (the disk is still full): each use tries the reopen again, and fails with ENOSPC
    while it cannot be done."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        self._store.reopen()
        return getattr(self._store.db, name)

    def close(self) -> None:
        pass


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
