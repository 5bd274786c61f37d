"""File sizes, guessed without waiting and without reading more than a block or two.

Blocks are assumed to be of one size except the last (as ``hyperfs add`` and ``cp``
write them). The size of a local block is read from storage only when that one file is
stat'ed; listings derive it from the feed's block size (the length of its first local
block). The whole-feed file's size is known once the block size and the last block are
(else 0). Every file is opened with direct I/O, so reads always run to the true end of
file whatever st_size says; a feed seen to have blocks of varying size is no longer
``uniform`` and its whole-feed size is 0.
"""

from __future__ import annotations

import logging

from hyperfs.fs.inodes import FeedSlot

log = logging.getLogger("hyperfs.fs")


def block_size(state: FeedSlot) -> int | None:
    """The size of every block but the last, from the first local non-last block."""
    if state.block_size is not None:
        return state.block_size
    feed = state.open()
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
        feed = state.open()
        if feed.blocks and feed.has(feed.blocks - 1):
            data = feed.read_local(feed.blocks - 1)
            if data is not None:
                state.last_size = len(data)
    return state.last_size


def block_len(state: FeedSlot, index: int) -> int:
    """The guessed size of block ``index`` (0 while unknown)."""
    feed = state.open()
    if feed.blocks is not None and index == feed.blocks - 1:
        return last_size(state) or 0
    return block_size(state) or 0


def whole_size(state: FeedSlot) -> int:
    """The size of the blocks laid end to end, 0 while unknown (or not uniform)."""
    feed = state.open()
    if not feed.blocks or not state.uniform:
        return 0
    last = last_size(state)
    if last is None:
        return 0
    if feed.blocks == 1:
        return last
    size = block_size(state)
    return 0 if size is None else (feed.blocks - 1) * size + last


def whole_local_bytes(state: FeedSlot) -> int:
    """About how many of the feed's bytes are held here (for st_blocks and du)."""
    feed = state.open()
    if not feed.local:
        return 0
    size = block_size(state) or last_size(state) or 0
    return feed.local * size


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


def forget(state: FeedSlot) -> None:
    """Forget what was learned (the feed was deleted; another may come under its id)."""
    state.block_size = state.last_size = None
    state.uniform = True
