"""crc32c, the checksum a block's bytes are stored with (:mod:`hyperfs.store.blocks`).

The ``crc32c`` package's ``__init__`` imports ``importlib.metadata`` for its version
string: 25-35 ms on every command here, and more than a hash worker's whole start
(:mod:`hyperfs.feeds.hashworker`). Its C function is loaded alone instead. This module
imports only the standard library, so the hash worker can use it too.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable


def _load() -> Callable[[bytes | bytearray | memoryview], int]:
    package = importlib.machinery.PathFinder.find_spec("crc32c")
    assert package is not None and package.submodule_search_locations is not None
    spec = importlib.machinery.PathFinder.find_spec(
        "crc32c._crc32c", list(package.submodule_search_locations))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Callable[[bytes | bytearray | memoryview], int] = module.crc32c
    return function


crc32c = _load()
"""crc32c(data) -> int, hardware-accelerated where the CPU can (the package's own)."""
