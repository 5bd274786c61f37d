"""The filesystem's life from mount to unmount (the `hyperfs mount` command is in hyperfs.cli).

One process, one trio event loop: pyfuse3's request handlers, the peer connections and
the swarm all run in one nursery, so a read of a block that is not local simply awaits
``feed.get`` and the swarm fills it. SIGINT/SIGTERM (Ctrl-C) unmount cleanly; a mount
left behind by a killed process ("Transport endpoint is not connected") is detected and
lazily unmounted before mounting again.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyfuse3
import trio

from hyperfs.base.errors import HyperfsError
from hyperfs.base.signals import wait_for_stop_signal
from hyperfs.feeds.core import DEFAULT_BLOCK_SIZE, Core
from hyperfs.fs.operations import Operations
from hyperfs.net.node import Node

log = logging.getLogger("hyperfs.mount")

MAX_TASKS = 10_000
"""pyfuse3 worker tasks: each read waiting on the network holds one, so allow many."""

COMMIT_INTERVAL = 5.0
"""Seconds between commits (:meth:`.core.Core.commit`) of what was written: ext4's default
too. A close does not wait for the disk, as on any local filesystem, so `tar -x` of many
small files is not bound by two disk flushes a file; fsync still waits."""


class MountError(HyperfsError):
    """The filesystem cannot be mounted here (mount point, FUSE or a live mount)."""


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
                    allow_other: bool = False, commit_interval: float | None = None,
                    on_ready: Callable[[], None] | None = None) -> None:
    """Mount ``core`` at ``mountpoint`` until unmounted or SIGINT/SIGTERM, serving and
    fetching feeds through ``node``, in the same event loop. ``on_ready`` is called once
    the kernel has the mount (the `--daemon` parent and systemd wait for that).
    ``commit_interval``: commit every so many seconds, and at unmount (for a core that
    is not durable; None: every finalize is synced already)."""
    if node.address is not None:
        print(f"hyperfs: listening on {node.address[0]}:{node.address[1]}", flush=True)
    ops = Operations(core, mountpoint=str(mountpoint), block_size=block_size,
                     timeout=timeout, status=node.status,
                     fetch=lambda feed, index: node.get(feed, index, timeout))
    try:
        pyfuse3.init(ops, str(mountpoint), mount_options(allow_other=allow_other))
    except RuntimeError as exc:
        raise MountError(f"cannot mount at {mountpoint}: {exc} (is FUSE usable here? "
                         "see dmesg; --allow-other needs user_allow_other)") from None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signal, nursery.cancel_scope)
            if commit_interval is not None:
                nursery.start_soon(_commit_every, core, commit_interval, ops.uploads.unfinished)
            print(f"hyperfs: mounted {core.store.path} at {mountpoint}", flush=True)
            if on_ready is not None:
                on_ready()
            await pyfuse3.main(min_tasks=4, max_tasks=MAX_TASKS)
            log.info("unmounted from outside")
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)
        try:
            with trio.CancelScope(shield=True):  # (unmounted by a signal, too)
                await ops.close()
            if commit_interval is not None:
                _commit_last(core)
        finally:
            print(f"hyperfs: unmounted {mountpoint}", flush=True)


def _commit_last(core: Core) -> None:
    """The last commit, at unmount. Its failure (a full disk) is reported, not raised:
    the unmount itself went well, and what it could not sync is in the page cache, which
    the kernel writes back (a power cut before that can lose it)."""
    try:
        core.store.committer()()
    except OSError as exc:
        log.warning("could not sync the last writes at unmount: %s", exc)


async def _commit_every(core: Core, interval: float,
                        unfinished: Callable[[], list[int]]) -> None:
    """Commit what was written, every ``interval`` seconds that saw a write, but for the
    data files of the ``unfinished()`` uploads (synced by the first commit after their
    close: like ext4's delayed allocation, a file being copied in is not forced to the
    disk while it is written). A failure (a full or failing disk) is logged and tried
    again: the writes it covers are in the page cache still, and the next fsync reports
    it to its caller."""
    done = core.store.writes
    while True:
        await trio.sleep(interval)
        if core.store.writes != done:
            done = core.store.writes
            try:
                await core.commit(keep=unfinished())
            except OSError as exc:
                log.warning("commit failed (retrying in %gs): %s", interval, exc)
                done = -1


async def _on_signal(scope: trio.CancelScope) -> None:
    log.info("%s: unmounting", (await wait_for_stop_signal()).name)
    scope.cancel()
