"""Secret keys in files of their own, readable by their owner only.

A database's node key (the static key of its encrypted connections) and, later, the
secret keys of live feeds must survive restarts, must never be readable by other users,
and must never be torn by a crash (a half-written key is a lost identity). So a key is
one small file beside the LevelDB files, not a LevelDB record: created with mode 0600
under a temporary name, fsynced, then linked into place (so two processes starting at
once agree on one key: the second finds the first's), and refused when it is readable
by group or others, as ssh refuses such keys.

The file holds the secret, then the public key derived from it: ``derive`` recomputes
the public key on every load, so a damaged file is an error, never a wrong key.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from nacl.bindings import crypto_scalarmult_base

from hyperfs.base.errors import HyperfsError

__all__ = ["KeyFileError", "load_or_create_keypair"]

SECRET_SIZE = 32


class KeyFileError(HyperfsError, PermissionError):
    """A key file that is damaged or that others may read."""


def load_or_create_keypair(
    path: str | os.PathLike[str],
    derive: Callable[[bytes], bytes] = crypto_scalarmult_base,
) -> tuple[bytes, bytes]:
    """The (secret, public) key pair stored at ``path``, made and stored if missing.

    ``derive`` turns a 32-byte secret into its public key (X25519 by default; an ed25519
    seed's public key for signing keys).
    """
    path = Path(path)
    try:
        return _load(path, derive)
    except FileNotFoundError:
        pass
    secret = os.urandom(SECRET_SIZE)
    _create(path, secret + derive(secret))
    return _load(path, derive)  # another process may have won the race: use its key


def _load(path: Path, derive: Callable[[bytes], bytes]) -> tuple[bytes, bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyFileError(f"{path} is a symbolic link: a key file must be the file "
                               "itself") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode) or mode & 0o077:
            raise KeyFileError(f"{path} may be read by others (mode {stat.filemode(mode)}): "
                               f"run chmod 600 {path}, or remove it to make a new key")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    secret, public = data[:SECRET_SIZE], data[SECRET_SIZE:]
    if len(data) != 2 * SECRET_SIZE or derive(secret) != public:
        raise KeyFileError(f"{path} is damaged (not a key pair of {2 * SECRET_SIZE} bytes)")
    return secret, public


def _create(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600; keep an existing file."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)  # fails if the key exists: never replace one
    except FileExistsError:
        pass
    finally:
        temp.unlink()
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
