"""Databases of earlier formats brought up to date, in place, when a :class:`.Store` opens.

Format 1 kept block data inside LevelDB (``d`` keys); format 2 keeps it in data files
(:mod:`.blocks`). :func:`move_blocks` moves it feed by feed, in bounded steps: each step
writes a batch of blocks to their places in the data files, fdatasyncs them, then one
LevelDB batch writes their ``l`` keys and deletes their ``d`` keys. So whatever is left
under ``d`` is exactly what remains to move, and no block is ever in neither place: an
interrupted migration (kill -9, power cut, Ctrl-C) goes on from where it stopped at the
next open, losing at most one step's work. ``!format`` turns to ``hyperfs 2`` only once
no ``d`` key is left. It is automatic (a database that opens is one that works; the
move needs no decision from anyone) and `hyperfs migrate` runs it on its own.

Names stored before they had records (``n`` keys) become file entries (:func:`move_names`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hyperfs.store.entry import Entry, Kind
from hyperfs.store.entry import encode as encode_entry
from hyperfs.store.layout import (
    DATA,
    FORMAT,
    FORMAT_KEY,
    LEGACY_NAME,
    block_key,
    entry_key,
    key_index,
    prefix,
)
from hyperfs.store.store import Store

log = logging.getLogger("hyperfs.store")

STEP_BLOCKS = 4096
STEP_BYTES = 64 << 20
"""A step moves at most this many blocks and bytes (memory stays flat)."""

Progress = Callable[[int, int], None]
"""``progress(blocks moved so far, blocks to move in all)``, after each step."""


def open_store(path: str | os.PathLike[str], progress: Progress | None = None
               ) -> tuple[Store, int]:
    """Open the database at ``path``, bringing one of an earlier format up to date first;
    returns the store and how many blocks were moved (``progress`` hears each step;
    without it, a progress bar shows on a terminal)."""
    store = Store(path)
    try:
        moved = move_blocks(store, progress) if store.outdated else 0
        move_names(store)
    except BaseException:
        store.close()
        raise
    store.outdated = False
    return store, moved


def move_blocks(store: Store, progress: Progress | None = None) -> int:
    """Move every block of a format 1 database into the data files; how many were moved.

    ``progress`` hears each step; without it, a progress bar shows on a terminal.
    """
    total = sum(store.bitfield(num).count - sum(1 for _ in store.data.locations(num))
                for num in store.numbers(DATA))  # held, less what an earlier run moved
    log.warning("moving the block data of %s into files (format 2): %d blocks; if "
                "interrupted, this goes on at the next open", store.path, total)
    moved = 0
    with _bar(total, progress) as report:
        for num in list(store.numbers(DATA)):
            blocks = store.blocks(num)
            while step := list(_step(store, num)):
                _move(store, num, blocks, step)
                moved += len(step)
                report(moved, total)
    store.db.put(FORMAT_KEY, FORMAT, sync=True)
    return moved


def _step(store: Store, num: int) -> Iterator[tuple[int, bytes]]:
    """The next (index, data) of feed ``num`` to move, at most one step's worth."""
    size = 0
    with store.db.iterator(prefix=prefix(DATA, num)) as items:
        for count, (key, data) in enumerate(items):
            if count == STEP_BLOCKS or (count and size + len(data) > STEP_BYTES):
                return
            size += len(data)
            yield key_index(key), data


def _move(store: Store, num: int, blocks: int | None, step: list[tuple[int, bytes]]) -> None:
    """One step: the bytes to their places and to disk, then one batch that points at
    them and deletes the old keys."""
    with store.db.write_batch(transaction=True) as batch:
        for index, data in step:
            if blocks is None:  # a writable feed's (discarded on open anyway): appended
                store.data.append(batch, num, index, [data])
            else:
                store.data.put(batch, num, index, data, blocks)
            batch.delete(block_key(num, index))
        store.data.files.sync(num)


@contextmanager
def _bar(total: int, progress: Progress | None) -> Iterator[Progress]:
    if progress is not None or not sys.stderr.isatty():
        yield progress or (lambda _done, _total: None)
        return
    # Here, not at the top: tqdm imports importlib.metadata (~35 ms of every command).
    from tqdm import tqdm  # type: ignore[import-untyped]  # (ships no types)
    with tqdm(total=total, unit="block", desc="migrating", file=sys.stderr) as bar:
        def report(done: int, _total: int) -> None:
            bar.update(done - bar.n)
        yield report


def move_names(store: Store) -> None:
    """Names stored before they had records (``n`` name -> id) become file entries,
    in one batch: mode 0644, owned by whoever opens the database, dated now."""
    legacy = list(store.db.iterator(prefix=LEGACY_NAME))
    if not legacy:
        return
    now = time.time_ns()
    with store.db.write_batch(transaction=True, sync=True) as batch:
        for key, feed_id in legacy:
            entry = Entry(Kind.FILE, 0o644, os.getuid(), os.getgid(), now, now, now, feed_id)
            batch.put(entry_key(key[1:]), encode_entry(entry))
            batch.delete(key)
