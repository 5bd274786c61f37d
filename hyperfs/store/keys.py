"""The secret keys of the live feeds written on this machine, one file each, apart from
the LevelDB index.

``<db>/keys/<id>.secret`` holds the 32-byte ed25519 seed of the feed whose id (public key)
names it; the directory is 0700 and each file 0600, written whole (a temporary file,
fsynced, renamed, the directory fsynced) before the feed's record exists, so a crash never
leaves a live feed of ours whose key is lost. A key is checked against its id when it is
loaded: a file copied under the wrong name, or damaged, is refused with a clear error,
never used to sign. Keys never leave the machine: nothing in the wire layer can read them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hyperfs.base.errors import SecretKeyMismatch
from hyperfs.tree.signing import SEED_SIZE, Signer

KEYS = "keys"


def secret_path(db: Path, feed_id: bytes) -> Path:
    """Where the secret key of live feed ``feed_id`` is kept for the database at ``db``."""
    return db / KEYS / f"{feed_id.hex()}.secret"


def save_secret(db: Path, feed_id: bytes, seed: bytes) -> None:
    """Store ``seed`` as the secret key of ``feed_id`` durably, readable by us alone."""
    folder = db / KEYS
    folder.mkdir(mode=0o700, exist_ok=True)
    path = secret_path(db, feed_id)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask said
        os.write(fd, seed)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_signer(db: Path, feed_id: bytes) -> Signer | None:
    """The signer of ``feed_id`` if its secret key is here (None if it is not), checked
    against the id; SecretKeyMismatch for a key file that is wrong or open to others."""
    path = secret_path(db, feed_id)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretKeyMismatch(f"cannot read the secret key {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        seed = os.read(fd, SEED_SIZE + 1)
    finally:
        os.close(fd)
    if not stat.S_ISREG(mode) or mode & 0o077:
        raise SecretKeyMismatch(
            f"the secret key {path} is readable by others (mode {stat.S_IMODE(mode):o});"
            f" make it private (chmod 600) before this feed can be appended to")
    if len(seed) != SEED_SIZE:
        raise SecretKeyMismatch(f"the secret key {path} is not {SEED_SIZE} bytes: damaged")
    signer = Signer(seed)
    if signer.public_key != feed_id:
        raise SecretKeyMismatch(
            f"the secret key {path} belongs to another feed"
            f" ({signer.public_key.hex()}), not to {feed_id.hex()}")
    return signer
