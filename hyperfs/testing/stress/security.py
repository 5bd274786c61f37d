"""Local security: the mount is private by default, the port serves only feeds a peer
names, and odd file names through the mount neither crash it nor escape it."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Any

import trio

from hyperfs.testing import mounts
from hyperfs.testing.stress.common import (
    HOST,
    Config,
    Result,
    afsck,
    make_data,
    mount,
    serve,
    stop,
    store,
)
from hyperfs.testing.stress.raw import read_until_closed
from hyperfs.wire.connection import Connection
from hyperfs.wire.events import HandshakeReceived


async def private_mount(cfg: Config, db: Path, mnt: Path) -> Result:
    """User nobody (via setpriv) cannot list or stat the mount, unless --allow-other."""

    def as_nobody(*cmd: str | Path) -> subprocess.CompletedProcess[bytes]:
        return mounts.run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                          *cmd, check=False)

    outcomes = {}
    for allow in (False, True):
        mounted = await mount(cfg.mounts, db, mnt, *(["--allow-other"] if allow else []))
        try:
            listing = as_nobody("/usr/bin/ls", mnt)
            stat = as_nobody("/usr/bin/stat", mnt / ".status")
            outcomes[allow] = (listing.returncode, listing.stderr.decode().strip(),
                               stat.returncode)
        finally:
            await stop(mounted)
    denied = outcomes[False][0] != 0 and "Permission denied" in outcomes[False][1] \
        and outcomes[False][2] != 0
    control = outcomes[True][0] == 0
    return Result("security: mount private by default (user nobody via setpriv)",
                  2, int(denied) + int(control),
                  "nobody: `ls`/`stat` denied (EACCES) without --allow-other; "
                  "with --allow-other (control) nobody can list", [repr(outcomes)])


async def named_only(db: Path, ids: list[bytes]) -> Result:
    """The listening port serves only feeds a peer names by id; stored ids never listed."""
    proc, port = await serve(db)
    clean, peers = 0, 20
    try:
        for k in range(peers):
            stream = await trio.open_tcp_stream(HOST, port)
            conn = Connection(os.urandom(32))
            named = ids[k % len(ids)] if k % 2 else None
            msg = conn.start() + b"".join(conn.join(os.urandom(32)) for _ in range(50))
            if named:
                msg += conn.join(named)
            events: list[Any] = []
            with trio.fail_after(10):
                await stream.send_all(msg)
                await stream.send_eof()
                await read_until_closed(stream, conn, events)
            await trio.aclose_forcefully(stream)
            told = {getattr(e, "feed_id", None) for e in events} - {None}
            kinds = {type(e) for e in events}
            clean += told == ({named} if named else set()) and HandshakeReceived in kinds
    finally:
        await stop(proc)
    return Result(
        "security: the port serves only feeds a peer names; stored ids never listed",
        peers, clean, "50 random ids + (every other peer) one stored id each: only "
        "that id is ever mentioned back; a peer naming none hears only the handshake")


ODD_NAMES: dict[bytes, str] = {
    b"..": "EEXIST", b".": "EEXIST", b"...": "created", b"a\nb": "created",
    b"\xff\xfe": "created", b" ": "created", b"-rf": "created", b"a" * 255: "created",
    b"a" * 256: "ENAMETOOLONG", b".status": "EEXIST", b".feed": "created",
    b"ab" * 32: "EEXIST", b"0" * 64: "EEXIST",  # a feed id names its directory already
    b"\x01\x02": "created",
    "\u00fc".encode(): "created", b"..\\..": "created", b"%s%n%x": "created",
    b"name with spaces": "created", b"\x7f": "created",
}
"""Odd names to create through the mount, and what must happen: created (and read back),
or the one errno that says why not."""


def create(path: bytes, payload: bytes) -> str:
    """Create ``path`` exclusively with ``payload``: "created" or the errno's name."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    try:
        os.write(fd, payload)
    finally:
        os.close(fd)
    return "created"


async def odd_names(cfg: Config, work: Path, db: Path, mnt: Path) -> Result:
    """Each odd name gives exactly its expected outcome; the mount survives them all,
    nothing appears outside it, and the database passes fsck after."""
    mounted = await mount(cfg.mounts, db, mnt)
    before = sorted(os.listdir(work))
    held, notes, wrong = 0, [], []
    try:
        mntb = os.fsencode(mnt)
        for name, want in ODD_NAMES.items():
            path, payload = mntb + b"/" + name, b"content of " + name
            outcome = create(path, payload)
            ok = outcome == want and mounted.proc.poll() is None and os.path.ismount(mnt)
            if ok and outcome == "created":
                with open(path, "rb") as f:
                    ok = f.read() == payload and name in os.listdir(mntb)
            held += ok
            shown = f"{name[:20]!r}{'...' if len(name) > 20 else ''}"
            notes.append(f"{shown}: {outcome}")
            if not ok:
                wrong.append(f"{shown}: {outcome}, wanted {want}")
    finally:
        await stop(mounted)
    escaped = sorted(os.listdir(work)) != before
    ok, line = await afsck(db)
    return Result(
        "security: odd file names (.., ., \\n, \\xff, 255/256 bytes, .status, id-like, ...)",
        len(ODD_NAMES), held if ok and not escaped else 0,
        "each one's own outcome, no crash, no escape, created ones read back: "
        + ", ".join(notes), [*wrong, line])


async def case_security(cfg: Config, work: Path) -> list[Result]:
    work.mkdir()
    for path in (work.parent, work):
        path.chmod(0o755)  # so that only FUSE can be what denies another user
    db, mnt = work / "db", work / "mnt"
    await store(db, make_data(200_000, 12))
    private = await private_mount(cfg, db, mnt)
    ids = [await store(db, make_data(5000, 20 + k)) for k in range(5)]
    return [private, await named_only(db, ids), await odd_names(cfg, work, db, mnt)]
