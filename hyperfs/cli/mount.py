"""`hyperfs mount` and `hyperfs id`: the filesystem from the command line."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from hyperfs.cli.options import add_network_options, node_from_args
from hyperfs.feeds.core import open_core
from hyperfs.fs.mount import DEFAULT_BLOCK_SIZE, prepare_mountpoint, run_mount
from hyperfs.fs.operations import XATTR_ID


def register(sub: argparse._SubParsersAction) -> None:
    mount = sub.add_parser(
        "mount", help="mount the feeds as a filesystem (foreground; Ctrl-C unmounts)",
        description="Mount the database's feeds at MOUNTPOINT: one directory per feed "
                    "(<id>/0, <id>/1, ... and <id>/.feed, the whole feed), one file per "
                    "name; copy a file in to make a feed. Serves and fetches like serve.")
    mount.add_argument("mountpoint", type=Path, help="an existing, empty directory")
    add_network_options(mount, listen=None)
    mount.add_argument("--timeout", type=float, default=60.0,
                       help="seconds a read waits for a missing block before failing "
                            "with ETIMEDOUT (0 = forever; default 60)")
    mount.add_argument("--block-size", type=_positive, default=DEFAULT_BLOCK_SIZE,
                       help="bytes per block of files copied in (default 65536)")
    mount.add_argument("--allow-other", action="store_true",
                       help="let other users use the mount (needs user_allow_other in "
                            "/etc/fuse.conf unless root); private by default")
    mount.set_defaults(run=cmd_mount)

    ident = sub.add_parser("id", help="print the feed id of a file or directory in a mount")
    ident.add_argument("path", nargs="+", type=Path)
    ident.set_defaults(run=cmd_id)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


async def cmd_mount(args: argparse.Namespace) -> int:
    mountpoint = prepare_mountpoint(args.mountpoint)
    async with open_core(args.db) as core, node_from_args(core, args) as node:
        await run_mount(core, mountpoint, node, block_size=args.block_size,
                        timeout=args.timeout or None, allow_other=args.allow_other)
    return 0


async def cmd_id(args: argparse.Namespace) -> int:
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
