"""Sub-commands on the database and the network: add, ls, cat, serve (mount lives in mount.py)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio
from tqdm import tqdm

from hyperfs.cli import mount
from hyperfs.cli.options import (
    DEFAULT_PORT,
    add_network_options,
    add_status_command,
    node_from_args,
)
from hyperfs.feeds.core import open_core, parse_id
from hyperfs.feeds.feed import Feed

DEFAULT_BLOCK_SIZE = 64 * 1024


def register(sub: argparse._SubParsersAction) -> None:
    add = sub.add_parser("add", help="store a file (or - for standard input) as a new feed")
    add.add_argument("file", help="file to add, or - for standard input")
    add.add_argument("--block-size", type=_positive, default=DEFAULT_BLOCK_SIZE,
                     help="bytes per block (default 65536)")
    add.set_defaults(run=cmd_add)

    ls = sub.add_parser("ls", help="list stored feeds with their length and what is local")
    ls.set_defaults(run=cmd_ls)

    cat = sub.add_parser("cat", help="write a feed (or one block) to standard output")
    cat.add_argument("id", help="feed id (64 hex characters)")
    cat.add_argument("index", nargs="?", type=_index, help="only this block")
    cat.add_argument("--timeout", type=float, default=60.0,
                     help="seconds to wait for a missing block, after one discovery round "
                          "when discovery is on (0 = forever; default 60)")
    add_network_options(cat, listen=None)
    cat.set_defaults(run=cmd_cat)

    serve = sub.add_parser("serve", help="seed every stored feed to peers until interrupted")
    add_network_options(serve, listen=f"0.0.0.0:{DEFAULT_PORT}")
    serve.set_defaults(run=cmd_serve)

    add_status_command(sub)
    add_fsck_parser(sub)
    mount.register(sub)  # mount, id: the filesystem (hyperfs.cli.mount)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _index(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("block index must not be negative")
    return value


async def cmd_add(args: argparse.Namespace) -> int:
    source = sys.stdin.buffer if args.file == "-" else open(args.file, "rb")  # noqa: SIM115
    async with open_core(args.db) as core:
        try:
            async with core.create_write_stream(block_size=args.block_size) as stream:
                while chunk := await trio.to_thread.run_sync(source.read, 4 << 20):
                    await stream.write(chunk)
        finally:
            if source is not sys.stdin.buffer:
                source.close()
    print(stream.feed.hex)
    return 0


async def cmd_ls(args: argparse.Namespace) -> int:
    async with open_core(args.db) as core:
        for info in core.info():
            blocks = "?" if info.blocks is None else str(info.blocks)
            print(f"{info.id.hex()}  {blocks:>10} blocks  {info.local:>10} local")
    return 0


async def cmd_cat(args: argparse.Namespace) -> int:
    feed_id = parse_id(args.id)
    timeout = args.timeout or None
    out = sys.stdout.buffer
    async with open_core(args.db) as core, node_from_args(core, args) as node:
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
    with tqdm(total=feed.blocks, unit="block", desc=(feed.hex or "")[:12], leave=False,
              file=sys.stderr) as bar:
        def advance(_size: int) -> None:
            if bar.total is None and feed.blocks is not None:
                bar.total = feed.blocks
            bar.update(1)
        yield advance


async def cmd_serve(args: argparse.Namespace) -> int:
    async with open_core(args.db) as core, node_from_args(core, args) as node:
        if node.address is not None:
            host, port = node.address
            print(f"listening on {host}:{port}", flush=True)
        # Also when started in the background, where the shell makes SIGINT ignored.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                print(f"{signal.Signals(signum).name}: stopping", file=sys.stderr)
                break
    return 0


def add_fsck_parser(sub: argparse._SubParsersAction) -> None:
    fsck = sub.add_parser("fsck", help="check the database's consistency (and repair blocks)")
    fsck.add_argument("--repair", action="store_true",
                      help="mark blocks that fail their hash check as missing, to fetch again")
    fsck.set_defaults(run=cmd_fsck)


async def cmd_fsck(args: argparse.Namespace) -> int:
    async with open_core(args.db) as core:
        report = core.check(repair=args.repair)
    for problem in report.problems:
        print(f"hyperfs fsck: {problem}")
    verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    repaired = f", {report.repaired} damaged block(s) marked missing" if report.repaired else ""
    print(f"{report.feeds} feeds, {report.blocks} blocks: {verdict}{repaired}")
    return 0 if report.ok else 1
