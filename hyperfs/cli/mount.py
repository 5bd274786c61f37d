"""`hyperfs mount` and `hyperfs id`: the filesystem from the command line."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from hyperfs.cli.arguments import positive_int
from hyperfs.cli.network import add_network_options, node_from_args
from hyperfs.feeds.core import DEFAULT_BLOCK_SIZE, open_core
from hyperfs.fs.mount import prepare_mountpoint, run_mount
from hyperfs.fs.operations import XATTR_ID

MOUNT_DESCRIPTION = (
    "Mount the database's feeds at MOUNTPOINT: one directory per feed (<id>/0, <id>/1, ... "
    "and <id>/.feed, the whole feed), one file per name; copy a file in to make a feed. "
    "Serves and fetches like serve.")


def mount_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", type=Path, help="an existing, empty directory")
    add_network_options(parser, listen=None)
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a read waits for a missing block before failing "
                             "with ETIMEDOUT (0 = forever; default 60)")
    parser.add_argument("--block-size", type=positive_int, default=DEFAULT_BLOCK_SIZE,
                        help=f"bytes per block of files copied in (default {DEFAULT_BLOCK_SIZE})")
    parser.add_argument("--allow-other", action="store_true",
                        help="let other users use the mount (needs user_allow_other in "
                             "/etc/fuse.conf unless root); private by default")


async def mount(args: argparse.Namespace) -> int:
    mountpoint = prepare_mountpoint(args.mountpoint)
    async with open_core(args.db) as core, node_from_args(core, args) as node:
        await run_mount(core, mountpoint, node, block_size=args.block_size,
                        timeout=args.timeout or None, allow_other=args.allow_other)
    return 0


def id_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="+", type=Path)


async def print_ids(args: argparse.Namespace) -> int:
    """Print each path's feed id (the user.hyperfs.id xattr); works while mounted."""
    status = 0
    for path in args.path:
        try:
            value = os.getxattr(path, XATTR_ID.decode())
        except OSError as exc:
            reason = ("not a feed in a hyperfs mount" if exc.errno in (errno.ENODATA,
                      errno.ENOTSUP) else exc.strerror)
            print(f"hyperfs: {path}: {reason}", file=sys.stderr)
            status = 1
            continue
        print(value.decode() if len(args.path) == 1 else f"{value.decode()}  {path}")
    return status
