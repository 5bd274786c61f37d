"""How failures reach the kernel: every handler answers with an errno, never an exception.

Anything but a :class:`pyfuse3.FUSEError` raised out of a pyfuse3 handler ends the whole
main loop, i.e. the mount; :func:`fuse_errors` wraps every handler so it cannot.
"""

from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import pyfuse3

from hyperfs.base.errors import EmptyFeed, HyperfsError, InvalidId, InvalidIndex

log = logging.getLogger("hyperfs.fs")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def fail(code: int) -> pyfuse3.FUSEError:
    """The exception that answers a request with ``code``."""
    return pyfuse3.FUSEError(code)


def errno_of(exc: BaseException) -> int:
    """The errno a failed core call should reach the caller as."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc.errno
    if isinstance(exc, HyperfsError) and exc.code != errno.EIO:
        return exc.code  # the names' errors (EEXIST, ENOENT, ENOTDIR, ENOTEMPTY ...)
    if isinstance(exc, EmptyFeed):
        return errno.ENODATA
    if isinstance(exc, InvalidId | InvalidIndex):
        return errno.ENOENT
    if isinstance(exc, TimeoutError):
        return errno.ETIMEDOUT
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    text = str(exc).lower()
    if "no space" in text or "enospc" in text:  # plyvel.IOError carries only a message
        return errno.ENOSPC
    if "quota" in text:
        return errno.EDQUOT
    return errno.EIO


def fuse_errors(fn: F) -> F:
    """Turn every exception of a handler into a FUSEError (expected ones logged quietly,
    anything else with its traceback)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except (HyperfsError, OSError, TimeoutError) as exc:
            log.debug("%s: %s", fn.__name__, exc)
            raise fail(errno_of(exc)) from None
        except Exception as exc:
            log.exception("%s failed", fn.__name__)
            raise fail(errno_of(exc)) from None

    return cast(F, wrapper)  # the wrapper keeps fn's signature
