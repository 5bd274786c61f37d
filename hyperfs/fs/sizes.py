"""File sizes, guessed without waiting and without reading more than a block or two,
and known exactly where they must be: before a file is read through the page cache.

Blocks are assumed to be of one size except the last (as ``hyperfs add`` and ``cp``
write them). The size of a local block is read from storage only when that one file is
stat'ed or opened; listings derive it from the feed's block size (the length of its
first local block). The whole-feed file's size is guessed once the block size and the
last block are known (else 0); a feed seen to have blocks of varying size is no longer
``uniform`` and its whole-feed size is 0.

A guess may be wrong (a feed of varying block sizes not yet seen to vary), and the
kernel's page cache trusts ``st_size``; so a file is read through the page cache only
when its size is *exact* (:func:`exact_block_size`, :func:`exact_whole_size`), and with
direct I/O otherwise, which reads to the true end whatever ``st_size`` says. A whole
feed's size is exact once every block's size has been seen: written here, read through
in order by a reader, or checked when a small complete feed is opened. Exact sizes never
change: a feed's content is fixed by its id.

Live feeds grow, so their sizes are never exact (they are always read with direct I/O,
to the true end); their whole size is the bytes of the blocks held from the start, which
grows as blocks arrive and never shrinks, which is what `tail -f` polls for.
"""

from __future__ import annotations

import logging

from hyperfs.fs.inodes import FeedSlot

log = logging.getLogger("hyperfs.fs")

CHECK_BYTES = 64 << 20
"""A complete local feed of up to about this many bytes has its blocks' sizes checked
(read and verified, ~0.1 s here) when first opened, so it opens through the page cache at
once; a bigger one does after a reader has gone through it in order."""


def block_size(state: FeedSlot) -> int | None:
    """The size of every block but the last, from the first local non-last block."""
    if state.block_size is not None:
        return state.block_size
    feed = state.peek()
    if feed.blocks is None or feed.blocks < 2:
        return None
    for index in feed.bitfield.iter_set(0, feed.blocks - 1):
        data = feed.read_local(index)
        if data is not None:
            state.block_size = len(data)
            return state.block_size
    return None


def last_size(state: FeedSlot) -> int | None:
    """The size of the last block, once it is local."""
    if state.last_size is None:
        feed = state.peek()
        if feed.blocks and feed.has(feed.blocks - 1):
            data = feed.read_local(feed.blocks - 1)
            if data is not None:
                state.last_size = len(data)
    return state.last_size


def block_len(state: FeedSlot, index: int) -> int:
    """The guessed size of block ``index`` (0 while unknown)."""
    feed = state.peek()
    if feed.blocks is not None and index == feed.blocks - 1:
        return last_size(state) or 0
    return block_size(state) or 0


def whole_size(state: FeedSlot) -> int:
    """The size of the blocks laid end to end, 0 while unknown (or not uniform)."""
    feed = state.peek()
    if not feed.blocks or not state.uniform:
        return 0
    last = last_size(state)
    if last is None:
        return 0
    if feed.blocks == 1:
        return last
    size = block_size(state)
    return 0 if size is None else (feed.blocks - 1) * size + last


def live_size(state: FeedSlot) -> int:
    """A live feed's size: the bytes of its blocks held here from block 0 on (counted on
    from where the last call stopped, so each block's size is read once)."""
    feed = state.peek()
    index = state.live_blocks
    for data in feed.iter_local(index):
        state.live_bytes += len(data)
        index += 1
    state.live_blocks = index
    return state.live_bytes


def whole_local_bytes(state: FeedSlot) -> int:
    """About how many of the feed's bytes are held here (for st_blocks and du)."""
    feed = state.peek()
    if not feed.local:
        return 0
    size = block_size(state) or last_size(state) or 0
    return feed.local * size


def exact_block_size(state: FeedSlot, index: int) -> int | None:
    """The size of block ``index`` read from storage, None when it is not local."""
    data = state.peek().read_local(index)
    if data is None:
        return None
    check_uniform(state, index, len(data))
    return len(data)


def exact_whole_size(state: FeedSlot) -> int | None:
    """The whole feed's size when every block's size is known (see the module's
    docstring), else None; checks a small complete local feed's blocks first."""
    feed = state.peek()
    if feed.live:
        return None  # it grows: never exact
    if not state.exact and state.uniform and feed.blocks and feed.local >= feed.blocks:
        guess = (block_size(state) or last_size(state) or 0) * feed.blocks
        if guess <= CHECK_BYTES:
            checked = 0
            for data in feed.iter_local(0, feed.blocks):
                checked = read_in_order(state, checked, len(data))
                if not state.uniform:
                    break
    size = whole_size(state) if state.exact and state.uniform else 0
    return size or None


def read_in_order(state: FeedSlot, checked: int, size: int) -> int:
    """Note that block ``checked`` has ``size`` bytes, after blocks ``0 .. checked-1``;
    returns how many blocks are now checked in order. Once that is all of them and they
    are of one size, the feed's sizes are exact."""
    check_uniform(state, checked, size)
    checked += 1
    feed = state.feed
    if feed is not None and feed.blocks is not None and checked >= feed.blocks:
        state.exact = state.uniform and not feed.live
    return checked


def check_uniform(state: FeedSlot, index: int, size: int) -> None:
    """Note a non-last block of ``size`` bytes: one off the block size ends the guessing."""
    feed = state.feed
    if feed is None or feed.blocks is None or index >= feed.blocks - 1:
        return
    expected = block_size(state)
    if expected is not None and size != expected and state.uniform:
        log.info("feed %s has blocks of varying size; whole-file size unknown",
                 state.id.hex()[:16])
        state.uniform = False


def learn_written(state: FeedSlot, size: int, block_size: int | None, blocks: int) -> None:
    """Sizes of a feed just written here: ``size`` bytes cut into ``blocks`` blocks of
    ``block_size`` (the last one shorter), so nothing need be read to list it."""
    if block_size and state.block_size is None and size > 0:
        if blocks > 1:
            state.block_size = block_size
        state.last_size = size - (blocks - 1) * block_size
        state.exact = True


def forget(state: FeedSlot) -> None:
    """Forget what was learned (the feed was deleted; another may come under its id)."""
    state.block_size = state.last_size = None
    state.uniform = True
    state.exact = False
