"""The live-feed commands as a user runs them: `hyperfs add --live`, `hyperfs append`.

Real `hyperfs` subprocesses on real databases; a second database fetches the live feed
over loopback from `hyperfs serve` with `hyperfs cat`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from hyperfs.testing.network import (
    ENV,
    HYPERFS,
    assert_clean_error,
    run_hyperfs,
    start_serve,
)


def _ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


def test_add_live_then_append_and_cat_elsewhere(tmp_path: Path) -> None:
    db, source = tmp_path / "db", tmp_path / "part"
    source.write_bytes(b"first part\n")
    feed_id = _ok(run_hyperfs("--db", db, "add", "--live", source))
    assert len(feed_id) == 64
    source.write_bytes(b"x" * 10 + b"y" * 5)
    assert _ok(run_hyperfs("--db", db, "append", feed_id, source, "--block-size", "10")) \
        == feed_id
    piped = subprocess.run([*HYPERFS, "--db", str(db), "append", feed_id, "-"],
                           input=b"from a pipe\n", capture_output=True, env=ENV, timeout=60)
    _ok(piped)
    listing = _ok(run_hyperfs("--db", db, "ls"))
    assert f"{feed_id}           4 blocks           4 local  live\n" in listing + "\n"
    assert _ok(run_hyperfs("--db", db, "fsck")).endswith("ok")
    server, port = start_serve(db)
    try:
        fetched = run_hyperfs("--db", tmp_path / "other", "cat", feed_id, "--peer",
                              f"127.0.0.1:{port}", "--timeout", "20")
    finally:
        server.terminate()
    assert fetched.stdout == b"first part\n" + b"x" * 10 + b"y" * 5 + b"from a pipe\n"


def test_append_by_name_makes_a_live_feed(tmp_path: Path) -> None:
    db, source = tmp_path / "db", tmp_path / "line"
    source.write_bytes(b"one\n")
    feed_id = _ok(run_hyperfs("--db", db, "append", "log", source))
    assert _ok(run_hyperfs("--db", db, "append", "log", source)) == feed_id
    assert f"{feed_id}           2 blocks" in _ok(run_hyperfs("--db", db, "ls"))
    static = tmp_path / "static"
    static.write_bytes(b"still\n")
    static_id = _ok(run_hyperfs("--db", db, "add", static))
    assert f"{static_id}           1 blocks           1 local  static" in _ok(
        run_hyperfs("--db", db, "ls"))


def test_append_refuses_static_unknown_and_foreign_feeds(tmp_path: Path) -> None:
    db, source = tmp_path / "db", tmp_path / "f"
    source.write_bytes(b"data")
    static = _ok(run_hyperfs("--db", db, "add", source))
    assert_clean_error(run_hyperfs("--db", db, "append", static, source), "static feed")
    assert_clean_error(run_hyperfs("--db", db, "append", "ab" * 32, source),
                       "no such feed")
    live = _ok(run_hyperfs("--db", db, "add", "--live", source))
    (db / "keys" / f"{live}.secret").unlink()  # as on a machine that only follows it
    assert_clean_error(run_hyperfs("--db", db, "append", live, source), "someone else's")
    assert_clean_error(run_hyperfs("--db", db, "append", "log", tmp_path / "missing"),
                       "No such file")
    assert len(_ok(run_hyperfs("--db", db, "ls")).splitlines()) == 2  # no feed made for it
