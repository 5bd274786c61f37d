"""Exceptions a user of the library can cause, each with a message that says what to do.

Everything derives from :class:`HyperfsError` so the CLI and the filesystem can turn any
of them into a clear message or errno instead of a traceback: ``code`` is the errno the
filesystem answers with.
"""

from __future__ import annotations

import errno
from typing import ClassVar


class HyperfsError(Exception):
    """Base of every error hyperfs raises on purpose."""

    code: ClassVar[int] = errno.EIO


class BadProof(HyperfsError):
    """A block or its Merkle proof does not verify against the feed id; nothing was stored."""


class FeedFinalized(HyperfsError):
    """The feed is finalized (immutable); it cannot be appended to or finalized again."""


class EmptyFeed(HyperfsError):
    """A feed with no blocks has no id and cannot be finalized."""


class InvalidId(HyperfsError, ValueError):
    """A feed id must be 32 bytes or 64 hex characters."""


class InvalidIndex(HyperfsError, ValueError):
    """Block indexes are non-negative integers."""


class NameTaken(HyperfsError, FileExistsError):
    """A name is already in use."""

    code = errno.EEXIST


class NoSuchName(HyperfsError, FileNotFoundError):
    """No name (or directory of names) at that path."""

    code = errno.ENOENT


class NotADirectory(HyperfsError, NotADirectoryError):
    """A part of the path is a file, not a directory of names."""

    code = errno.ENOTDIR


class IsADirectory(HyperfsError, IsADirectoryError):
    """The name is a directory where a file was meant."""

    code = errno.EISDIR


class DirectoryNotEmpty(HyperfsError, OSError):
    """A directory of names that still holds names cannot be removed or replaced."""

    code = errno.ENOTEMPTY


class InvalidName(HyperfsError, ValueError):
    """Not a name a file can have here (empty, too long, '.', '..', a feed id at the top,
    or a directory moved into itself)."""

    code = errno.EINVAL


class StorageLocked(HyperfsError):
    """The database directory is in use by another process."""


class CorruptDatabase(HyperfsError):
    """The database cannot be read: damaged, or not a hyperfs database."""


class BlockUnavailable(HyperfsError):
    """A block is not stored locally and the caller asked not to wait for it."""


class BadSignature(BadProof):
    """A live feed's signed length does not verify (forged, another key's, malformed);
    nothing of it was stored."""


class NotWritable(HyperfsError, PermissionError):
    """The feed cannot be appended to here: it is static, or a live feed whose secret key
    is not on this machine."""

    code = errno.EACCES


class FeedForked(HyperfsError):
    """Two different trees were signed with the live feed's key (its secret key was copied
    or a backup restored): the writer stops appending until someone decides which wins."""

    code = errno.EROFS


class SecretKeyMismatch(HyperfsError):
    """A live feed's stored secret key is unreadable or does not belong to its id."""
