"""Drive the JavaScript reference peer (hypercore 1.8.0, ``tests/js/ref.js``) from Python.

hyperfs claims byte compatibility with hypercore 1.x, so interop tests and benchmarks run
the real JS implementation next to ours. Everything here starts ``node`` subprocesses,
reads their JSON-line output, and keeps a registry of what it started so test fixtures
(see ``conftest.py``) can terminate exactly those processes, by PID, after every test.

Blocking calls are fine in plain tests. Inside a trio test where hyperfs runs in the same
event loop, use the ``a``-prefixed variants (they run the blocking wait in a worker
thread), or the JS side waits forever for a peer whose loop we are blocking.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import trio

from hyperfs.testing.procs import Watched

JS_DIR = Path(__file__).resolve().parents[2] / "tests" / "js"
REF_JS = JS_DIR / "ref.js"
BENCH_CORE_JS = JS_DIR / "bench_core.js"
ENCODE_JS = JS_DIR / "encode.js"
NODE = shutil.which("node")
JS_AVAILABLE = NODE is not None and (JS_DIR / "node_modules" / "hypercore").is_dir()
DEFAULT_TIMEOUT = 120.0
_MISSING = "node or tests/js/node_modules/hypercore missing: run scripts/setup.sh"


class JsRefError(RuntimeError):
    """A JS peer failed, exited early, or did not say what we waited for in time."""


class JsPeer(Watched):
    """One running ``node tests/js/ref.js ...`` process and the JSON events it printed."""

    def __init__(self, args: Sequence[str], stdin: bytes | None = None, *,
                 steered: bool = False) -> None:
        if not JS_AVAILABLE:
            raise JsRefError(_MISSING)
        self.events: list[dict[str, Any]] = []  # every event, in order, once consumed or not
        super().__init__([str(NODE), str(REF_JS), *args], cwd=JS_DIR, stdin=stdin,
                         keep_stdin=steered)

    def command(self, op: str, **fields: Any) -> None:
        """Tell a steered peer (:func:`start_js_peer`) what to do next: ``op`` is one of
        ref.js's peer ops (connect, fetch, drop), ``fields`` its arguments."""
        self.write_line(json.dumps({"op": op, **fields}).encode() + b"\n")

    def _line(self, line: bytes) -> None:
        self.events.append(_parse(line))
        super()._line(line)

    def _fail(self, why: str) -> JsRefError:
        return JsRefError(f"{why}\n  cmd: {' '.join(self.args)}\n  stderr: {self.stderr[-4000:]}")

    def next_event(self, name: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """Return the next printed event (with ``"event" == name`` if given, skipping others).

        Waiting on the output, not on a timer, is how callers synchronise with the peer.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.next_line(deadline - time.monotonic())
            except queue.Empty:
                raise self._fail(f"no {name or 'event'!r} within {timeout}s") from None
            if line is None:
                raise self._fail(f"exited ({self.proc.returncode}) before {name or 'an event'!r}")
            event = _parse(line)
            if name is None or event.get("event") == name:
                return event

    async def anext_event(self, name: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """`next_event` without blocking the trio loop (hyperfs may be the peer in it)."""
        return await trio.to_thread.run_sync(self.next_event, name, timeout)

    def wait(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Wait for exit; raise if it failed. Returns the exit status (0)."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self._fail(f"still running after {timeout}s") from None
        self.join_readers()
        self.terminate()  # only forgets it: it has ended
        if rc != 0:
            raise self._fail(f"exit status {rc}")
        return rc

    async def await_exit(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """`wait` without blocking the trio loop."""
        return await trio.to_thread.run_sync(self.wait, timeout)


def _parse(line: bytes) -> dict[str, Any]:
    """A JSON event line; anything else is kept as a 'raw' event."""
    try:
        return json.loads(line)
    except ValueError:
        return {"event": "raw", "line": line.decode(errors="replace")}


def _ext_args(ext: Iterable[str]) -> list[str]:
    return [a for name in ext for a in ("--ext", name)]


def js_ids(feeds: Iterable[Sequence[bytes]], timeout: float = DEFAULT_TIMEOUT) -> list[str | None]:
    """Feed ids (hex) the reference computes for each list of blocks; None for an empty feed."""
    lines = [json.dumps({"blocks": [bytes(b).hex() for b in blocks]}) for blocks in feeds]
    peer = JsPeer(["ids"], stdin="".join(line + "\n" for line in lines).encode())
    peer.wait(timeout)
    ids = [e["id"] for e in peer.events]
    if len(ids) != len(lines):
        raise peer._fail(f"{len(ids)} ids for {len(lines)} feeds")
    return ids


def js_encode(messages: Sequence[tuple[str, dict[str, Any]]],
              timeout: float = DEFAULT_TIMEOUT) -> list[bytes]:
    """Protobuf bodies the reference's own schema encoder makes for (message name,
    fields) pairs, e.g. ("Join", {"channel": 0, "id": feed_id}); bytes values are sent
    as {"hex": ...} (tests/js/encode.js)."""
    if not JS_AVAILABLE:
        raise JsRefError(_MISSING)

    def revivable(value: Any) -> Any:
        if isinstance(value, bytes):
            return {"hex": value.hex()}
        if isinstance(value, list):
            return [revivable(v) for v in value]
        return value

    entries = [[name, {k: revivable(v) for k, v in fields.items()}] for name, fields in messages]
    done = subprocess.run([str(NODE), str(ENCODE_JS)], input=json.dumps(entries).encode(),
                          cwd=JS_DIR, capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise JsRefError(f"encode.js failed ({done.returncode}): {done.stderr.decode()}")
    return [bytes.fromhex(line) for line in done.stdout.decode().split()]


def start_js_seeder(
    file: str | os.PathLike[str] | None = None,
    block_size: int | None = None,
    ext: Sequence[str] = (),
    *,
    blocks: Sequence[bytes] | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[JsPeer, str, int]:
    """Start a JS peer serving a feed (file split into block_size blocks, or `blocks`).

    Returns once it is listening: (peer, feed id hex, TCP port). It serves every
    connection until terminated; its ping/pong/handshake events stay readable on `peer`.
    """
    args = ["seed", "--port", str(port), "--host", host, *_ext_args(ext)]
    tmp: str | None = None
    if blocks is not None:
        tmp = _json_file({"blocks": [bytes(b).hex() for b in blocks]})
        args += ["--blocks-json", tmp]
    else:
        if file is None or block_size is None:
            raise ValueError("give file and block_size, or blocks")
        args += ["--file", os.fspath(file), "--block-size", str(block_size)]
    peer = JsPeer(args)
    ready = _listening(peer, timeout, tmp)
    return peer, ready["id"], ready["port"]


def _json_file(content: object) -> str:
    """A temporary file holding ``content`` as JSON (feeds for a JS peer to read)."""
    fd, path = tempfile.mkstemp(prefix="jsref-feeds-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(content, f)
    return path


def _listening(peer: JsPeer, timeout: float, tmp: str | None) -> dict[str, Any]:
    """The peer's "listening" event (it is ended if that does not come); the file ``tmp``
    it read its feeds from is removed either way."""
    try:
        return peer.next_event("listening", timeout)
    except BaseException:
        peer.terminate()
        raise
    finally:
        if tmp is not None:
            os.unlink(tmp)


def start_js_peer(feeds: Sequence[Sequence[bytes]] = (), *, port: int = 0,
                  host: str = "127.0.0.1",
                  timeout: float = DEFAULT_TIMEOUT) -> tuple[JsPeer, list[str], int]:
    """Start a JS peer the test steers with :meth:`JsPeer.command`: it has ``feeds`` open
    (each a list of blocks, opened in that order) and serves them on ``port``; it
    connects, fetches and drops its connections when told to. Returns once it listens:
    (peer, the feeds' ids in hex, TCP port)."""
    tmp = _json_file({"feeds": [[bytes(b).hex() for b in blocks] for blocks in feeds]})
    peer = JsPeer(["peer", "--feeds-json", tmp, "--port", str(port), "--host", host],
                  steered=True)
    ready = _listening(peer, timeout, tmp)
    return peer, ready["ids"], ready["port"]


def start_js_fetcher(
    connect: str | Sequence[str],
    feed_id: str,
    *,
    block: int | None = None,
    out: str | os.PathLike[str] | None = None,
    listen: int | None = None,
    host: str = "127.0.0.1",
    ext: Sequence[str] = (),
) -> JsPeer:
    """Start a JS peer fetching `feed_id` from HOST:PORT peer(s); does not wait.

    With `listen` (0 = any port) it also serves on that port, from before the fetch
    until terminated, so it can be the middle or the end of a replication chain; read
    the port from its ``listening`` event. Its ``done`` event reports blocks, bytes,
    seconds (connect -> all verified, or -> the one `block` verified).
    """
    targets = [connect] if isinstance(connect, str) else list(connect)
    args = ["fetch", "--id", feed_id, "--host", host, *_ext_args(ext)]
    for target in targets:
        args += ["--connect", target]
    if block is not None:
        args += ["--block", str(block)]
    if out is not None:
        args += ["--out", os.fspath(out)]
    if listen is not None:
        args += ["--listen", str(listen)]
    return JsPeer(args)


def run_js_fetch(
    connect: str | Sequence[str],
    feed_id: str,
    *,
    block: int | None = None,
    out: str | os.PathLike[str] | None = None,
    ext: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Fetch a whole feed (or one block) with a JS peer and wait for it to finish.

    Returns the ``done`` event plus ``data`` (bytes: the block, or the whole feed
    concatenated; absent when `out` is given), ``block_list`` (list of blocks, whole-feed
    fetch without `out`) and ``events`` (everything it printed, e.g. ping/pong).
    """
    peer = start_js_fetcher(connect, feed_id, block=block, out=out, ext=ext)
    try:
        peer.wait(timeout)
    finally:
        peer.terminate()
    result: dict[str, Any] = {}
    for event in peer.events:
        kind = event.get("event")
        if kind == "done":
            result.update(event)
        elif kind == "block":
            result["data"] = bytes.fromhex(event["hex"])
        elif kind == "data":
            result["block_list"] = [bytes.fromhex(h) for h in event["blocks"]]
            result["data"] = b"".join(result["block_list"])
    if "seconds" not in result:
        raise peer._fail("exited 0 without a done event")
    result["events"] = peer.events
    return result


async def arun_js_fetch(
    connect: str | Sequence[str],
    feed_id: str,
    *,
    block: int | None = None,
    out: str | os.PathLike[str] | None = None,
    ext: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """`run_js_fetch` for trio tests whose hyperfs peer runs in the same event loop."""

    def run() -> dict[str, Any]:
        return run_js_fetch(connect, feed_id, block=block, out=out, ext=ext, timeout=timeout)

    return await trio.to_thread.run_sync(run)


# ---------------------------------------------------------------- baselines (JS side only)


def js_bench_core(blocks: int, block_size: int, timeout: float = 600) -> dict[str, Any]:
    """One run of tests/js/bench_core.js: append+finalize and read-back speed on memdb."""
    if not JS_AVAILABLE:
        raise JsRefError(_MISSING)
    done = subprocess.run(
        [str(NODE), str(BENCH_CORE_JS), str(blocks), str(block_size)],
        cwd=JS_DIR, capture_output=True, timeout=timeout, check=False,
    )
    if done.returncode != 0:
        raise JsRefError(f"bench_core.js failed ({done.returncode}): {done.stderr.decode()}")
    return json.loads(done.stdout)


def js_replication_run(
    file: str | os.PathLike[str], block_size: int, timeout: float = 600
) -> dict[str, Any]:
    """One JS seeder -> JS fetcher run over loopback TCP (setNoDelay on both ends).

    Measures, in the fetcher from connect on: the whole feed (to a file, verified against
    the source bytes), then with a fresh fetcher the time to the first verified middle block.
    """
    size = os.path.getsize(file)
    blocks = -(-size // block_size)
    seeder, feed_id, port = start_js_seeder(file, block_size, timeout=timeout)
    try:
        with tempfile.TemporaryDirectory(prefix="jsref-") as tmp:
            out = Path(tmp) / "fetched"
            full = run_js_fetch(f"127.0.0.1:{port}", feed_id, out=out, timeout=timeout)
            if out.read_bytes() != Path(file).read_bytes():
                raise JsRefError("JS fetcher wrote different bytes than the JS seeder serves")
        mid = run_js_fetch(f"127.0.0.1:{port}", feed_id, block=blocks // 2, timeout=timeout)
    finally:
        seeder.terminate()
    return {
        "blocks": full["blocks"],
        "bytes": full["bytes"],
        "seconds": full["seconds"],
        "mb_per_s": full["mb_per_s"],
        "blocks_per_s": full["blocks_per_s"],
        "middle_block_seconds": mid["seconds"],
    }


def js_baseline(
    blocks: int, block_size: int, runs: int = 3, workdir: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Medians over `runs` of the JS core benchmark and JS<->JS replication.

    The reference numbers hyperfs's own benchmarks are compared with; the random source
    file is made once and shared by the runs.
    """
    core_runs = [js_bench_core(blocks, block_size) for _ in range(runs)]
    with tempfile.TemporaryDirectory(prefix="jsref-bench-", dir=workdir) as tmp:
        src = Path(tmp) / "source"
        with src.open("wb") as f:
            for _ in range(blocks):
                f.write(os.urandom(block_size))
        repl_runs = [js_replication_run(src, block_size) for _ in range(runs)]

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    return {
        "blocks": blocks,
        "block_size": block_size,
        "runs": runs,
        "append_seconds": med(core_runs, "append_seconds"),
        "append_blocks_per_s": med(core_runs, "append_blocks_per_s"),
        "append_mb_per_s": med(core_runs, "append_mb_per_s"),
        "read_seconds": med(core_runs, "read_seconds"),
        "read_blocks_per_s": med(core_runs, "read_blocks_per_s"),
        "read_mb_per_s": med(core_runs, "read_mb_per_s"),
        "replication_seconds": med(repl_runs, "seconds"),
        "replication_mb_per_s": med(repl_runs, "mb_per_s"),
        "replication_blocks_per_s": med(repl_runs, "blocks_per_s"),
        "middle_block_seconds": med(repl_runs, "middle_block_seconds"),
    }
