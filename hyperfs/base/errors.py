"""Exceptions a user of the library can cause, each with a message that says what to do.

Everything derives from :class:`HyperfsError` so the CLI and the filesystem can turn any
of them into a clear message or errno instead of a traceback.
"""

from __future__ import annotations


class HyperfsError(Exception):
    """Base of every error hyperfs raises on purpose."""


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
    """A feed name is already in use."""


class StorageLocked(HyperfsError):
    """The database directory is in use by another process."""


class CorruptDatabase(HyperfsError):
    """The database cannot be read: damaged, or not a hyperfs database."""


class BlockUnavailable(HyperfsError):
    """A block is not stored locally and the caller asked not to wait for it."""
