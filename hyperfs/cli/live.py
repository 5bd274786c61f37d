"""Sub-commands on live feeds: `hyperfs append`, and `hyperfs add --live`.

A live feed is appended to where its secret key is (this database); each chunk read from
the input is cut into blocks of ``--block-size`` and appended as one batch, signed once,
so `tail -f log | hyperfs append log -` signs as often as lines arrive, not per byte.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import trio

from hyperfs.base.errors import InvalidId, NotWritable
from hyperfs.cli.arguments import positive_int
from hyperfs.feeds.core import DEFAULT_BLOCK_SIZE, Core, open_core
from hyperfs.feeds.feed import Feed
from hyperfs.feeds.names import new_entry
from hyperfs.store.entry import Kind
from hyperfs.tree.hashes import parse_id

CHUNK = 4 << 20


def append_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("feed", help="a live feed's id (64 hex) or name; a new name makes "
                                     "a new live feed of that name")
    parser.add_argument("file", help="file to append, or - for standard input")
    parser.add_argument("--block-size", type=positive_int, default=DEFAULT_BLOCK_SIZE,
                        help=f"bytes per block at most (default {DEFAULT_BLOCK_SIZE})")


async def append(args: argparse.Namespace) -> int:
    with _source(args.file) as source:  # first: a missing file makes no feed
        async with open_core(args.db) as core:
            with _open_for_append(core, args.feed) as feed:
                await append_from(feed, source, args.block_size)
                print(feed.hex)
    return 0


async def add_live(args: argparse.Namespace) -> int:
    """`hyperfs add --live FILE`: a new live feed holding FILE, left open for appends."""
    with _source(args.file) as source:
        async with open_core(args.db) as core:
            with core.add(live=True) as feed:
                await append_from(feed, source, args.block_size)
                print(feed.hex)
    return 0


@contextmanager
def _source(name: str) -> Iterator[BinaryIO]:
    """The file to append (``-``: standard input, left open)."""
    if name == "-":
        yield sys.stdin.buffer
        return
    with open(name, "rb") as source:
        yield source


def _open_for_append(core: Core, target: str) -> Feed:
    """The feed named ``target`` (an id or a name), open and writable; a new name gets a
    new live feed."""
    try:
        feed_id = parse_id(target)
    except InvalidId:
        path = target.strip("/").encode()
        bound = core.names.feed_of(path)
        if bound is None:
            feed = core.add(live=True)
            assert feed.id is not None
            core.names.set_file(path, new_entry(Kind.FILE, 0o644, feed.id), replace=False)
            return feed
        feed_id = bound
    if not core.stored(feed_id):
        raise NotWritable(f"cannot append to {target}: no such feed in this database")
    feed = core.get(feed_id)
    if not feed.writable:
        feed.close()
        why = "a static feed (it never changes)" if not feed.live else \
            "someone else's live feed (its secret key is not in this database)"
        raise NotWritable(f"cannot append to {target}: it is {why}")
    return feed


async def append_from(feed: Feed, source: BinaryIO, block_size: int) -> None:
    """Append what ``source`` gives, as it arrives (a pipe's lines as they come), in
    blocks of at most ``block_size``: one signed append per read."""
    read = getattr(source, "read1", source.read)  # what has arrived, not a full chunk
    while chunk := await trio.to_thread.run_sync(read, CHUNK):
        view = memoryview(chunk)
        await feed.append([view[at: at + block_size] for at in range(0, len(view), block_size)])
