"""Consistency check of a core's database (``hyperfs fsck``, :meth:`Core.check`).

Every logical change is one atomic LevelDB batch, written after the block bytes it points
at, so whatever happens to the process the database must satisfy the invariants below.
This module states them as code, walking the store with bounded memory (one feed's
bitfield at a time), so that crash tests, users after a power cut, and bug reports can
all ask the same question: is this database sound?

Checked, for every feed with an id:
- its ``i`` and ``m`` records point at each other;
- when its length is known, its full roots are stored and hash to its id;
- every bit set in its bitfield is within the feed and has its block stored; no block is
  stored without its bit; every stored block lies within its data file, its bytes match
  their crc32c, and (unless ``scrub`` is off) their leaf hash equals the stored verified
  leaf node, the SHA-256 check that reads leave to fsck;
- every stored tree node is within the feed, and either is a full root or has its parent
  stored, and every stored parent whose children are both stored is their hash.
And for the database: the format marker is there, no key and no data file is stored
under a feed number that has no record (except, with ``pending_ok``, a writable feed not
yet finalized, which nobody can see), no format 1 block data is left, and every name
points at a stored feed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hyperfs.base.checksum import crc32c
from hyperfs.base.errors import BadSignature
from hyperfs.store import signed
from hyperfs.store.layout import DATA, PER_FEED
from hyperfs.store.store import Store
from hyperfs.tree import flat_tree, signing
from hyperfs.tree.bitfield import PAGE_BYTES, Bitfield
from hyperfs.tree.hashes import leaf_hash, parent_hash, tree_id


@dataclass
class Report:
    """What :func:`check` found; ``ok`` when ``problems`` is empty."""

    feeds: int = 0
    blocks: int = 0
    problems: list[str] = field(default_factory=list)
    repaired: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check(
    store: Store, *, pending_ok: bool = False, repair: Callable[[int, int], None] | None = None,
    scrub: bool = True,
) -> Report:
    """Check every invariant of the database in ``store`` (see the module docstring).

    ``pending_ok`` tolerates data of writable feeds not finalized yet (as a database has
    it before a core opens it and discards them). ``repair(feed number, block)`` is
    called for each block that is damaged (outside its file, failing its crc32c or its
    hash), instead of reporting it, to mark it missing as a read would (see
    :meth:`Core.check`); with it, data files that belong to no feed are deleted.
    ``scrub=False`` skips the SHA-256 of every block (the crc32c still reads them all).
    """
    report = Report()
    if not store.format_ok():
        report.problems.append("the format marker !format is missing or wrong")
    pending = set(store.pending())
    recorded: set[int] = set()
    for num, feed_id, blocks in store.records():
        recorded.add(num)
        report.feeds += 1
        _check_feed(store, num, feed_id, blocks, report, repair, scrub)
        if num in pending:
            report.problems.append(f"feed #{num} is both finalized and pending")
    for feed_id, num, _blocks in store.feeds():
        if num not in recorded:
            report.problems.append(f"id {feed_id.hex()} points at feed #{num}, which has no record")
    for kind in PER_FEED:
        for num in store.numbers(kind):
            if kind == DATA:
                report.problems.append(f"feed #{num} still has format 1 block data (d keys)")
            if num in recorded or (pending_ok and num in pending):
                continue
            what = "an unfinished writable feed" if num in pending else "no feed"
            report.problems.append(f"{kind.decode()} keys of feed #{num} belong to {what}")
    for num in store.data.numbers():
        if num in recorded or (pending_ok and num in pending):
            continue
        if repair is not None:
            store.data.forget(num)
            report.repaired += 1
        else:
            report.problems.append(f"data file {store.data.files.path(num).name} belongs to "
                                   "no feed")
    if pending and not pending_ok:
        report.problems.append(f"writable feeds left pending: {sorted(pending)}")
    for name, feed_id in store.names():
        if store.lookup(feed_id) is None:
            report.problems.append(f"name {name!r} points at unknown feed {feed_id.hex()}")
    return report


def _check_feed(
    store: Store,
    num: int,
    feed_id: bytes,
    blocks: int | None,
    report: Report,
    repair: Callable[[int, int], None] | None,
    scrub: bool,
) -> None:
    name, problems = feed_id.hex()[:16], report.problems
    if store.lookup(feed_id) != num:
        problems.append(f"feed {name}: its id does not point back at feed #{num}")
    roots: set[int] = set()
    if blocks is not None:
        roots = set(flat_tree.full_roots(blocks))
        found = [(node, store.node(num, node)) for node in flat_tree.full_roots(blocks)]
        digests = [(node, digest) for node, digest in found if digest is not None]
        if len(digests) < len(found):
            problems.append(f"feed {name}: roots missing from storage")
        elif not _roots_genuine(store, num, feed_id, blocks, digests):
            problems.append(f"feed {name}: its roots do not hash to its id"
                            " (nor, live, carry its signature)")
    limit = 2 * blocks if blocks is not None else 0

    bitfield = Bitfield()
    for page, data in store.pages(num):
        if len(data) != PAGE_BYTES:
            problems.append(f"feed {name}: bitfield page of {len(data)} bytes")
        bitfield.load_page(page, data)

    damaged = _check_blocks(store, num, name, limit, bitfield, report, scrub)
    for index, why in damaged:
        if repair is not None:
            repair(num, index)
            report.repaired += 1
        else:
            problems.append(f"feed {name}: block {index} {why}")
    _check_nodes(store, num, name, limit, roots, problems)


def _roots_genuine(store: Store, num: int, feed_id: bytes, blocks: int,
                   roots: list[tuple[int, bytes]]) -> bool:
    """A static feed's roots hash to its id; a live feed's carry its key's signature over
    the stored length (and that signed length is the length recorded)."""
    live = signed.signed(store, num)
    if live is None:
        return tree_id(roots) == feed_id
    if blocks == 0:  # a live feed made here, not appended to yet: nothing is signed
        return live.length == 0
    try:
        signing.verify(feed_id, blocks, roots, live.signature)
    except BadSignature:
        return False
    return live.length == blocks


def _check_blocks(store: Store, num: int, name: str, limit: int, bitfield: Bitfield,
                  report: Report, scrub: bool) -> list[tuple[int, str]]:
    """Every stored block has its bit, lies within the feed and its data file, and matches
    its crc32c (and with ``scrub`` its leaf hash); every bit has its block. Returns the
    damaged blocks, with why, for the caller to report or repair."""
    problems, damaged = report.problems, []
    size = store.data.size(num)
    for index, location in store.data.locations(num):
        report.blocks += 1
        if index not in bitfield:
            problems.append(f"feed {name}: block {index} is stored but not marked held")
        if 2 * index >= limit:
            problems.append(f"feed {name}: block {index} is past the feed's end")
        if location.length and location.offset + location.length > size:
            damaged.append((index, "does not match: it lies past the end of its data file"))
            continue
        data = store.data.read_raw(num, location)
        if crc32c(data) != location.crc:
            damaged.append((index, "does not match its crc32c"))
        elif scrub and store.node(num, 2 * index) != leaf_hash(data):
            damaged.append((index, "does not match its leaf hash"))
    for index in bitfield.iter_set():
        if store.data.location(num, index) is None:
            problems.append(f"feed {name}: block {index} is marked held but not stored")
    return damaged


def _check_nodes(store: Store, num: int, name: str, limit: int, roots: set[int],
                 problems: list[str]) -> None:
    """Every stored node lies within the feed, hangs from a stored parent or is a root,
    and is the hash of its children where both are stored."""
    for node, digest in store.stored_nodes(num):
        if len(digest) != 32:
            problems.append(f"feed {name}: node {node} has a {len(digest)}-byte hash")
            continue
        if flat_tree.right_span(node) >= limit:
            problems.append(f"feed {name}: node {node} lies outside the feed")
            continue
        if node not in roots and store.node(num, flat_tree.parent(node)) is None:
            problems.append(f"feed {name}: node {node} has no stored parent and is no root")
        children = flat_tree.children(node)
        if children is not None:
            left, right = store.node(num, children[0]), store.node(num, children[1])
            if left is not None and right is not None and parent_hash(left, right) != digest:
                problems.append(f"feed {name}: node {node} is not the hash of its children")
