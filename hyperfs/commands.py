"""Sub-commands that work on the database: add, ls, cat (serve and mount live elsewhere)."""

from __future__ import annotations

import argparse
import sys

import trio

from . import fsck, mount
from .core import open_core, parse_id

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
                     help="seconds to wait for a missing block (0 = forever; default 60)")
    cat.set_defaults(run=cmd_cat)

    fsck.add_parser(sub)
    mount.register(sub)  # mount, id: the filesystem (hyperfs.mount)

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
    async with open_core(args.db) as core:
        with core.get(feed_id) as feed:
            if args.index is not None:
                block = await feed.get(args.index, timeout=timeout)
                if block is None:
                    print(f"hyperfs: feed has only {feed.blocks} blocks", file=sys.stderr)
                    return 1
                out.write(block)
                return 0
            index = 0
            while (block := await feed.get(index, timeout=timeout)) is not None:
                out.write(block)
                index += 1
    out.flush()
    return 0
