"""What is mounted where (from /proc/self/mountinfo), and taking a FUSE mount down with
fusermount3 so that, when it refuses, the user is told why and what to do.

A hyperfs mount shows as type ``fuse.hyperfs`` with source ``hyperfs`` (the fsname and
subtype options of :func:`hyperfs.fs.mount.mount_options`), which is how `mount`, `df`,
updatedb's PRUNEFS and :attr:`MountEntry.is_hyperfs` tell it from other filesystems.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hyperfs.base.errors import HyperfsError

HYPERFS_TYPE = "fuse.hyperfs"
HYPERFS_SOURCE = "hyperfs"

_ESCAPE = re.compile(rb"\\([0-7]{3})")


class UnmountError(HyperfsError):
    """A mount cannot be taken down: not mounted, not ours, or fusermount3 refused."""


class MountBusy(UnmountError):
    """Files or working directories are still open in the mount."""

    code = errno.EBUSY


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo: where, what type (``fuse.<subtype>`` for FUSE)
    and from what source (a FUSE mount's fsname)."""

    point: Path
    fstype: str
    source: str

    @property
    def is_hyperfs(self) -> bool:
        return self.fstype == HYPERFS_TYPE


def _unescape(field: bytes) -> bytes:
    """The kernel writes space, tab, newline and backslash in paths as \\ooo."""
    return _ESCAPE.sub(lambda match: bytes([int(match[1], 8)]), field)


def mounts() -> Iterator[MountEntry]:
    """Every mount this process sees, in mount order."""
    with open("/proc/self/mountinfo", "rb") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            rest = fields[fields.index(b"-") + 1:]  # optional fields come before the "-"
            yield MountEntry(Path(os.fsdecode(_unescape(fields[4]))),
                             os.fsdecode(rest[0]), os.fsdecode(_unescape(rest[1])))


def mount_at(path: Path) -> MountEntry | None:
    """What is mounted exactly at ``path`` (the topmost of stacked mounts), or None."""
    found = None
    for entry in mounts():
        if entry.point == path:
            found = entry
    return found


def unmount_fuse(path: Path, *, lazy: bool = False) -> None:
    """``fusermount3 -u`` (``-uz`` if ``lazy``) ``path``; :class:`MountBusy` or
    :class:`UnmountError` with fusermount3's reason when it refuses."""
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise UnmountError("fusermount3 not found (install fuse3)")
    result = subprocess.run([tool, "-uz" if lazy else "-u", str(path)], capture_output=True,
                            check=False, env={**os.environ, "LC_ALL": "C"})
    if result.returncode == 0:
        return
    reason = result.stderr.decode(errors="replace").strip().splitlines()
    if any("busy" in line for line in reason):
        raise MountBusy(f"{path} is busy: a process has a file or its working directory "
                        f"there; close those and retry, or detach it now with "
                        f"`fusermount3 -uz {path}` (it goes once they close)")
    raise UnmountError(f"cannot unmount {path}: {reason[-1] if reason else 'fusermount3 failed'}")
