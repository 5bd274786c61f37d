"""Sub-commands on the feeds of the database: add, ls, cat (which may fetch), rm, fsck."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hyperfs.cli.arguments import PRIVATE_HELP, positive_int
from hyperfs.feeds.core import DEFAULT_BLOCK_SIZE, open_core, parse_id
from hyperfs.feeds.feed import Feed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="file to add, or - for standard input")
    parser.add_argument("--block-size", type=positive_int, default=DEFAULT_BLOCK_SIZE,
                        help=f"bytes per block (default {DEFAULT_BLOCK_SIZE})")
    parser.add_argument("--private", action="store_true", help=PRIVATE_HELP)
    parser.add_argument("--live", action="store_true",
                        help="make a live feed (appendable, signed) instead of a static one")
    parser.add_argument("--fsync", action="store_true",
                        help="return only once the feed is on the disk, safe from a power "
                             "cut (like cp, add otherwise leaves that to the kernel)")


async def add(args: argparse.Namespace) -> int:
    if args.live:
        from hyperfs.cli import live  # (here: the other commands of this module never use it)

        return await live.add_live(args)
    async with open_core(args.db, durable=args.fsync) as core:
        core.private.new_feeds = args.private
        feed_id: bytes | None
        if args.file != "-":
            feed_id = await core.add_file(args.file, args.block_size)
        else:
            async with core.create_write_stream(block_size=args.block_size) as stream:
                await stream.write_from(sys.stdin.buffer.read)
            feed_id = stream.id
    assert feed_id is not None
    print(feed_id.hex())
    return 0


async def ls(args: argparse.Namespace) -> int:
    async with open_core(args.db) as core:
        for info in core.info():
            blocks = "?" if info.blocks is None else str(info.blocks)
            print(f"{info.id.hex()}  {blocks:>10} blocks  {info.local:>10} local  {info.kind}")
    return 0


def cat_arguments(parser: argparse.ArgumentParser) -> None:
    from hyperfs.cli.network import add_network_options  # (cat's alone: see cat)

    parser.add_argument("id", help="feed id (64 hex characters)")
    parser.add_argument("index", nargs="?", type=_index, help="only this block")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for a missing block, after one discovery round "
                             "when discovery is on (0 = forever; default 60)")
    parser.add_argument("--private", action="store_true",
                        help="mark the feed private before fetching it: it is then asked "
                             "for over encrypted connections only, never by its id in "
                             "plain hypercore 1.x")
    add_network_options(parser, listen=None)


def _index(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("block index must not be negative")
    return value


async def cat(args: argparse.Namespace) -> int:
    # Here, not at the top: of this module's commands only cat needs the network (the
    # node, replication, the wire: ~35 ms of every `hyperfs add`'s start-up).
    from hyperfs.cli.network import node_from_args

    feed_id = parse_id(args.id)
    timeout = args.timeout or None
    out = sys.stdout.buffer
    async with open_core(args.db) as core, node_from_args(core, args) as node:
        if args.private:
            core.private.mark(feed_id)  # before core.get joins it on any connection
        with core.get(feed_id) as feed:
            if args.index is not None:
                block = await node.get(feed, args.index, timeout)
                if block is None:
                    print(f"hyperfs: feed has only {feed.blocks} blocks", file=sys.stderr)
                    return 1
                out.write(block)
                out.flush()
                return 0
            feed.prefetch(0, None)
            with _progress(feed) as progress:
                index = 0
                while (block := await node.get(feed, index, timeout)) is not None:
                    out.write(block)
                    index += 1
                    progress(len(block))
    out.flush()
    return 0


@contextmanager
def _progress(feed: Feed) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal (tqdm), nothing otherwise."""
    if not sys.stderr.isatty():
        yield lambda _size: None
        return
    from tqdm import tqdm  # type: ignore[import-untyped]  # (ships no types; here: 10 ms of start-up)

    with tqdm(total=feed.blocks, unit="block", desc=(feed.hex or "")[:12], leave=False,
              file=sys.stderr) as bar:
        def advance(_size: int) -> None:
            if bar.total is None and feed.blocks is not None:
                bar.total = feed.blocks
            bar.update(1)
        yield advance


def rm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="+", metavar="ID",
                        help="feed id (64 hex characters); every name bound to it goes too")


async def rm(args: argparse.Namespace) -> int:
    """Delete feeds from the database, as `rm -r MNT/<id>` does in a mount (whose running
    process holds the database: use that there). Like rm(1), goes on past an id that is not
    stored, and then exits 1."""
    feed_ids = [parse_id(text) for text in args.ids]  # a bad id: nothing deleted
    status = 0
    async with open_core(args.db) as core:
        for feed_id in feed_ids:
            if not core.stored(feed_id):
                print(f"hyperfs rm: no feed {feed_id.hex()} in {args.db}", file=sys.stderr)
                status = 1
                continue
            await core.remove(feed_id)
    return status


def fsck_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repair", action="store_true",
                        help="mark damaged blocks as missing, to fetch again, and delete "
                             "data files that belong to no feed")
    parser.add_argument("--quick", action="store_true",
                        help="check every block's crc32c only, not its SHA-256 (the scrub)")


async def fsck(args: argparse.Namespace) -> int:
    async with open_core(args.db) as core:
        report = core.check(repair=args.repair, scrub=not args.quick)
    for problem in report.problems:
        print(f"hyperfs fsck: {problem}")
    verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    repaired = f", {report.repaired} repaired (damaged blocks marked missing, orphan files " \
        "deleted)" if report.repaired else ""
    print(f"{report.feeds} feeds, {report.blocks} blocks: {verdict}{repaired}")
    return 0 if report.ok else 1
