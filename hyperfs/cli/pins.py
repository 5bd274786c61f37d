"""`hyperfs pin ID|PATH` and `hyperfs unpin ID|PATH`: feeds kept whole, never evicted.

A PATH is in a running mount (a name, a feed's directory or its ``.feed``): the mount
holds the database, so the pin is asked of it through the ``user.hyperfs.pinned`` xattr,
and the feed is then read through the mount to the end, which downloads what is
missing. An ID pins in the database directly (no mount of it may be running) and
downloads like `hyperfs cat`, with the same network options.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import trio

from hyperfs.cli.network import add_network_options, node_from_args
from hyperfs.feeds.core import open_core
from hyperfs.fs import attributes as fs_attributes
from hyperfs.fs import pins as fs_pins
from hyperfs.tree.hashes import parse_id

XATTR_ID, XATTR_PINNED = fs_attributes.XATTR_ID.decode(), fs_pins.XATTR_PINNED.decode()


def pin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="ID|PATH",
                        help="a feed id, or a feed's file or directory in a mount")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for a missing block (0 = forever; default 60)")
    add_network_options(parser, listen=None)


def unpin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="ID|PATH",
                        help="a feed id, or a feed's file or directory in a mount")


def _mounted(target: str) -> Path | None:
    """The file to read for ``target`` if it is a path (a feed's directory or one of its
    blocks: its ``.feed``; a name: itself)."""
    path = Path(target)
    if not path.exists():
        return None
    if path.is_dir():
        return path / ".feed"
    whole = path.parent / ".feed"
    return whole if path.name.isdigit() and whole.exists() else path


def _set_pinned(path: Path, pinned: bool) -> None:
    """Ask the mount ``path`` is in; a path elsewhere (which has no feed id) is refused
    before a ``user.`` xattr of that name could land on an ordinary file."""
    try:
        os.getxattr(path, XATTR_ID)
        os.setxattr(path, XATTR_PINNED, b"1" if pinned else b"0")
    except OSError as exc:
        raise OSError(exc.errno, f"{path}: not a feed in a hyperfs mount "
                                 f"({exc.strerror})") from None


def _read_through(path: Path) -> int:
    """Read ``path`` to its end (the mount fetches as it goes); the bytes read."""
    total = 0
    with open(path, "rb", buffering=0) as file:
        while chunk := file.read(4 << 20):
            total += len(chunk)
    return total


async def pin(args: argparse.Namespace) -> int:
    """Pin, then download in full (what was evicted or never fetched)."""
    path = _mounted(args.target)
    if path is not None:
        _set_pinned(path, True)
        await trio.to_thread.run_sync(_read_through, path)
        return 0
    feed_id = parse_id(args.target)
    timeout = args.timeout or None
    async with open_core(args.db) as core, node_from_args(core, args) as node:
        with core.get(feed_id) as feed:
            core.cache.pin(feed)
            feed.prefetch(0, None)
            index = 0
            while await node.get(feed, index, timeout) is not None:
                index += 1
    return 0


async def unpin(args: argparse.Namespace) -> int:
    path = _mounted(args.target)
    if path is not None:
        _set_pinned(path, False)
        return 0
    feed_id = parse_id(args.target)
    async with open_core(args.db) as core:
        if not core.stored(feed_id):
            raise ValueError(f"feed {feed_id.hex()} is not stored here")
        with core.hold(feed_id) as feed:
            core.cache.pin(feed, False)
    return 0
