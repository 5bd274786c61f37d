"""The node key's file (base.keyfile) and the private marks (feeds.privacy), on real files
and through the `hyperfs` command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nacl.bindings import crypto_scalarmult_base, crypto_sign_seed_keypair

from hyperfs import open_core
from hyperfs.base.keyfile import KeyFileError, load_or_create_keypair
from hyperfs.feeds.privacy import PRIVATE_FILE, PrivateFeeds
from hyperfs.replication.secure import NODE_KEY_FILE, node_keypair
from hyperfs.testing.network import arun_hyperfs, assert_clean_error, astart_serve, run_hyperfs


def test_a_key_is_made_once_mode_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    secret, public = load_or_create_keypair(path)
    assert public == crypto_scalarmult_base(secret)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_keypair(path) == (secret, public)
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]  # no temp file left
    other = tmp_path / "other"
    other.mkdir()
    assert node_keypair(other) == node_keypair(other) != node_keypair(tmp_path)


def test_the_same_file_serves_signing_keys(tmp_path: Path) -> None:
    """Generic: ``derive`` gives the public key of another kind of secret (ed25519)."""
    def ed25519_public(seed: bytes) -> bytes:
        return crypto_sign_seed_keypair(seed)[0]
    path = tmp_path / "feed.key"
    seed, public = load_or_create_keypair(path, ed25519_public)
    assert load_or_create_keypair(path, ed25519_public) == (seed, public)
    with pytest.raises(KeyFileError, match="damaged"):
        load_or_create_keypair(path)  # read as X25519, its public half does not match


@pytest.mark.parametrize("damage", ["mode", "short", "flipped", "symlink"])
def test_a_readable_or_damaged_key_is_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "node.key"
    load_or_create_keypair(path)
    if damage == "mode":
        path.chmod(0o644)
    elif damage == "short":
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "flipped":
        data = bytearray(path.read_bytes())
        data[3] ^= 1
        path.write_bytes(bytes(data))
    else:
        target = tmp_path / "elsewhere"
        path.rename(target)
        path.symlink_to(target)
    with pytest.raises(KeyFileError, match=r"read by others|damaged|symbolic link"):
        load_or_create_keypair(path)


def test_a_node_key_readable_by_others_is_a_clean_error(tmp_path: Path) -> None:
    db = tmp_path / "db"
    result = run_hyperfs("--db", db, "ls")
    assert result.returncode == 0
    node_keypair(db)
    (db / NODE_KEY_FILE).chmod(0o640)
    result = run_hyperfs("--db", db, "serve", "--listen", "127.0.0.1:0", timeout=30)
    assert_clean_error(result, "may be read by others", "chmod 600")


def test_private_marks_persist_and_survive_a_torn_line(tmp_path: Path) -> None:
    marks = PrivateFeeds(tmp_path)
    a, b = os.urandom(32), os.urandom(32)
    marks.mark(a)
    marks.mark(a)
    assert (tmp_path / PRIVATE_FILE).stat().st_mode & 0o777 == 0o600
    with open(tmp_path / PRIVATE_FILE, "a") as file:
        file.write(b.hex()[:20])  # a crash in the middle of the next mark
    again = PrivateFeeds(tmp_path)
    assert a in again and b not in again and len(again) == 1
    again.mark(b)  # on a line of its own, not glued to the torn one
    assert b in PrivateFeeds(tmp_path) and len(PrivateFeeds(tmp_path)) == 2


async def test_hyperfs_add_private_marks_the_feed(tmp_path: Path) -> None:
    source = tmp_path / "file"
    source.write_bytes(b"secret " * 1000)
    db = tmp_path / "db"
    private = run_hyperfs("--db", db, "add", "--private", source).stdout.decode().strip()
    source.write_bytes(b"public " * 1000)
    public = run_hyperfs("--db", db, "add", source).stdout.decode().strip()
    async with open_core(db) as core:
        assert bytes.fromhex(private) in core.private
        assert bytes.fromhex(public) not in core.private


async def test_cat_private_fetches_over_encryption_and_marks_the_feed(tmp_path: Path) -> None:
    source = tmp_path / "file"
    source.write_bytes(os.urandom(50_000))
    feed_id = run_hyperfs("--db", tmp_path / "seed", "add", source).stdout.decode().strip()
    serve, port = await astart_serve(tmp_path / "seed")
    with serve:
        got = await arun_hyperfs("--db", tmp_path / "fetch", "cat", "--private", feed_id,
                                 "--peer", f"127.0.0.1:{port}", "--timeout", "30")
    assert got.returncode == 0, got.stderr
    assert got.stdout == source.read_bytes()
    async with open_core(tmp_path / "fetch") as core:
        assert bytes.fromhex(feed_id) in core.private
