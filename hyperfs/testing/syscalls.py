"""What the filesystem tests check system calls with: the exact errno of a refusal."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

XATTR_ID = "user.hyperfs.id"
XATTR_EMPTY = "user.hyperfs.empty"
SECOND = 10**9
"""Nanoseconds in a second (times in the tests are set to the nanosecond)."""


def fails(code: int, call: Callable[..., object], *args: object) -> None:
    """``call(*args)`` must fail with exactly errno ``code`` (the message names both)."""
    with pytest.raises(OSError) as failed:
        call(*args)
    got = failed.value.errno
    assert got == code, f"{call.__name__}{args}: {errno.errorcode.get(got or 0, got)}"
