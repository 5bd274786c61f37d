"""`hyperfs mount` and `hyperfs id`: the filesystem's life from mount to unmount.

One process, one trio event loop: pyfuse3's request handlers, the peer connections and
the swarm all run in one nursery, so a read of a block that is not local simply awaits
``feed.get`` and the swarm fills it. SIGINT/SIGTERM (Ctrl-C) unmount cleanly; a mount
left behind by a killed process ("Transport endpoint is not connected") is detected and
lazily unmounted before mounting again.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyfuse3
import trio

from .cliopts import add_network_options, node_from_args
from .core import Core, open_core
from .errors import HyperfsError
from .fs import XATTR_ID, HyperFS
from .network import Node

log = logging.getLogger("hyperfs.mount")

DEFAULT_BLOCK_SIZE = 64 * 1024
MAX_TASKS = 10_000
"""pyfuse3 worker tasks: each read waiting on the network holds one, so allow many."""


class MountError(HyperfsError):
    """The filesystem cannot be mounted here (mount point, FUSE or a live mount)."""


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


# -- the mount point --------------------------------------------------------------------


def _mount_type(path: Path) -> str | None:
    """The filesystem type mounted exactly at ``path`` (from /proc/self/mountinfo)."""
    target = os.fsencode(path)
    found = None
    try:
        with open("/proc/self/mountinfo", "rb") as mountinfo:
            for line in mountinfo:
                fields = line.split()
                point = fields[4].replace(b"\\040", b" ").replace(b"\\134", b"\\")
                if point == target:
                    found = fields[fields.index(b"-") + 1].decode()
    except (OSError, ValueError, IndexError):
        return None
    return found


def unmount(path: Path, *, lazy: bool = False) -> bool:
    """fusermount3 -u (or -uz) ``path``; True when it worked."""
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        return False
    result = subprocess.run([tool, "-uz" if lazy else "-u", str(path)],
                            capture_output=True, check=False)
    return result.returncode == 0


def prepare_mountpoint(path: Path) -> Path:
    """Check ``path`` can be mounted on, recovering a stale mount left by a crash.

    Errors say what to do: a missing directory, a live mount, a non-empty directory,
    FUSE missing from this machine.
    """
    path = Path(os.path.abspath(os.path.expanduser(path)))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mount point {path} does not exist; create it with mkdir") from None
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise MountError(f"mount point {path}: {exc.strerror}") from None
        log.warning("%s is a stale mount left by a process that died; unmounting it", path)
        if not unmount(path, lazy=True):
            raise MountError(f"{path} is a stale FUSE mount and `fusermount3 -uz {path}` "
                             "failed; unmount it by hand") from None
        info = os.stat(path)
    if not os.path.isdir(path):
        raise MountError(f"mount point {path} is not a directory")
    if os.path.ismount(path):
        kind = _mount_type(path)
        if kind == "fuse.hyperfs":
            raise MountError(f"{path} is already a live hyperfs mount; unmount it first "
                             f"(Ctrl-C its hyperfs process, or fusermount3 -u {path})")
        raise MountError(f"something ({kind or 'a filesystem'}) is already mounted at {path}")
    if os.listdir(path):
        raise MountError(f"mount point {path} is not empty; use an empty directory")
    del info
    if not os.path.exists("/dev/fuse"):
        raise MountError("FUSE is unavailable: /dev/fuse is missing (load the fuse module, "
                         "or give the container --device /dev/fuse)")
    if os.geteuid() != 0 and shutil.which("fusermount3") is None:
        raise MountError("FUSE is unavailable: fusermount3 not found (install fuse3)")
    return path


def mount_options(*, allow_other: bool) -> set[str]:
    """fsname/subtype make `mount` show 'hyperfs on ... type fuse.hyperfs'. No max_read:
    libfuse 3.14 refuses the mount with it."""
    options = {"fsname=hyperfs", "subtype=hyperfs", "default_permissions", "noatime"}
    if allow_other:
        options.add("allow_other")
    return options


# -- running ---------------------------------------------------------------------------


async def run_mount(core: Core, mountpoint: Path, node: Node, *,
                    block_size: int = DEFAULT_BLOCK_SIZE, timeout: float | None = 60.0,
                    allow_other: bool = False) -> None:
    """Mount ``core`` at ``mountpoint`` until unmounted or SIGINT/SIGTERM, serving and
    fetching feeds through ``node``, in the same event loop."""
    if node.address is not None:
        print(f"hyperfs: listening on {node.address[0]}:{node.address[1]}", flush=True)
    ops = HyperFS(core, mountpoint=str(mountpoint), block_size=block_size,
                  timeout=timeout, status=node.status,
                  fetch=lambda feed, index: node.get(feed, index, timeout))
    try:
        pyfuse3.init(ops, str(mountpoint), mount_options(allow_other=allow_other))
    except RuntimeError as exc:
        raise MountError(f"cannot mount at {mountpoint}: {exc} (is FUSE usable here? "
                         "see dmesg; --allow-other needs user_allow_other)") from None
    try:
        async with trio.open_nursery() as nursery:
            ops.nursery = nursery
            nursery.start_soon(_on_signal, nursery.cancel_scope)
            print(f"hyperfs: mounted {core.store.path} at {mountpoint}", flush=True)
            await pyfuse3.main(min_tasks=4, max_tasks=MAX_TASKS)
            log.info("unmounted from outside")
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)
        try:
            ops.close()
        finally:
            print(f"hyperfs: unmounted {mountpoint}", flush=True)


async def _on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            scope.cancel()
            return


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
