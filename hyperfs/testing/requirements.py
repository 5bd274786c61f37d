"""What a test needs from the machine (FUSE, the JS reference peer, network namespaces).

On a developer's machine a missing piece skips the tests that need it, with the reason. In
CI (``CI=true``) the same gap fails them instead: there a skip would hide that 20-odd tests
never ran, and a green run would claim more than it checked.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

from hyperfs.testing import jsref

__all__ = ["FUSE", "JS_PEER", "fuse_available", "in_ci", "js_available", "missing", "require"]

FUSE = "FUSE (/dev/fuse and fusermount3)"
JS_PEER = "node and the hypercore 1.8.0 reference in tests/js (run scripts/setup.sh)"


def in_ci() -> bool:
    """Whether this run is a CI run (``CI=true``, as GitHub Actions and most CIs set)."""
    return os.environ.get("CI") == "true"


def require(condition: object, what: str) -> None:
    """Go on if ``condition`` holds; otherwise fail the test in CI, skip it elsewhere.

    ``what`` names the missing piece and how to get it, for the skip or failure message.
    Called at a module's top level, it skips (or fails) the whole module.
    """
    if not condition:
        missing(what)


def missing(what: str) -> NoReturn:
    """Fail the test in CI, skip it elsewhere: it needs ``what``, found missing (for a
    check that can only be tried, such as creating a network namespace)."""
    if in_ci():
        pytest.fail(f"CI=true and this test needs {what}", pytrace=False)
    pytest.skip(f"needs {what}", allow_module_level=True)


def fuse_available() -> bool:
    """Whether real FUSE mounts can be made here (/dev/fuse and fusermount3)."""
    return Path("/dev/fuse").exists() and shutil.which("fusermount3") is not None


def js_available() -> bool:
    """Whether node and the hypercore 1.8.0 reference in tests/js are installed."""
    return jsref.JS_AVAILABLE
