"""`hyperfs mount`, `hyperfs umount` and `hyperfs id`: the filesystem from the command line.

A mount in the background (`--daemon`), the systemd notifications and the pid file by
which `umount` waits for a mount's process are in :mod:`hyperfs.cli.daemon`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from pathlib import Path

from hyperfs.cli.arguments import PRIVATE_HELP, positive_int
from hyperfs.cli.daemon import (
    EXIT_TIMEOUT,
    MountFiles,
    MountProcess,
    Readiness,
    is_daemon_child,
    start_daemon,
)
from hyperfs.cli.network import add_network_options, node_from_args
from hyperfs.feeds.core import DEFAULT_BLOCK_SIZE, open_core
from hyperfs.fs.attributes import XATTR_ID
from hyperfs.fs.mount import COMMIT_INTERVAL, prepare_mountpoint, run_mount
from hyperfs.fs.mounted import UnmountError, mount_at, unmount_fuse

MOUNT_DESCRIPTION = (
    "Mount the database's feeds at MOUNTPOINT: one directory per feed (<id>/0, <id>/1, ... "
    "and <id>/.feed, the whole feed), one file per name; copy a file in to make a feed. "
    "Serves and fetches like serve. In the foreground unless --daemon; `hyperfs umount "
    "MOUNTPOINT` (or Ctrl-C in the foreground) unmounts.")


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
    parser.add_argument("--private", action="store_true",
                        help=PRIVATE_HELP.replace("the new feed", "every feed copied in"))
    parser.add_argument("--commit-interval", type=float, default=COMMIT_INTERVAL,
                        metavar="SECONDS",
                        help="files copied in reach the disk, safe from a power cut, at "
                             "most this long after their close, all at once (fsync: at "
                             f"once; 0: at each close; default {COMMIT_INTERVAL:g})")
    parser.add_argument("--daemon", action="store_true",
                        help="mount in the background: return once mounted (exit status 0) "
                             "or failed (1); the log's path is printed")


async def mount(args: argparse.Namespace) -> int:
    if args.daemon and not is_daemon_child():
        return await start_daemon(args.argv, args.mountpoint)
    mountpoint = prepare_mountpoint(args.mountpoint)
    with Readiness(mountpoint) as readiness:
        durable = args.commit_interval <= 0
        async with open_core(args.db, durable=durable) as core, \
                node_from_args(core, args) as node:
            core.private.new_feeds = args.private
            await run_mount(core, mountpoint, node, block_size=args.block_size,
                            timeout=args.timeout or None, allow_other=args.allow_other,
                            commit_interval=None if durable else args.commit_interval,
                            on_ready=readiness.ready)
    return 0


def umount_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", type=Path, help="where a hyperfs mount is")


async def umount(args: argparse.Namespace) -> int:
    """Unmount a hyperfs mount; when its process is one of ours (it left a pid file),
    return only once that process has ended, so that its database is free again."""
    path = Path(os.path.realpath(os.path.expanduser(args.mountpoint)))
    entry = mount_at(path)
    if entry is None:
        raise UnmountError(f"{path} is not mounted")
    if not entry.is_hyperfs:
        raise UnmountError(f"{path} is not a hyperfs mount (it is {entry.fstype})")
    process = MountProcess.find(path)
    with process or contextlib.nullcontext():
        unmount_fuse(path)
        if process is not None and not await process.wait(EXIT_TIMEOUT):
            raise UnmountError(f"unmounted {path}, but its process {process.pid} has not "
                               f"ended after {EXIT_TIMEOUT:.0f} s; see "
                               f"{MountFiles.of(path).log}")
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
