"""The cache options of the commands that fetch (serve, cat, mount) and their SIZE type.

The options are kept as text by argparse and checked by :func:`cache_limits` (which
`hyperfs` runs before any command that has them), so that a bad SIZE is one line naming
the option, not argparse's usage text.
"""

from __future__ import annotations

import argparse
import re

from hyperfs.feeds.cache import Limits
from hyperfs.feeds.core import DEFAULT_BLOCK_SIZE

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from ``4096``, ``64K``, ``100M``, ``1.5G`` (binary units; ``MiB``, ``MB``
    read alike). ValueError with a message for anything else."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (a number with an optional suffix K, M "
                         "or G, e.g. 100M)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "cache", "Limit the disk that feeds fetched from peers take: their least recently "
        "read blocks are evicted (fetched again when read). Feeds made here and pinned "
        "ones (`hyperfs pin`) are never evicted nor counted.")
    group.add_argument("--cache-max-size", metavar="SIZE", default=None,
                       help="bytes of block data fetched feeds may take (suffixes K, M, G; "
                            "default: no limit)")
    group.add_argument("--min-free-space", metavar="SIZE", default=None,
                       help="evict to leave this much free on the database's disk "
                            "(suffixes K, M, G; default: no limit)")


def cache_limits(args: argparse.Namespace) -> Limits:
    """The limits the options give; ValueError (one line) for a SIZE that does not parse
    or a cap below one block (``--block-size``, else the default block size)."""
    sizes: list[int | None] = []
    for option, text in (("--cache-max-size", args.cache_max_size),
                         ("--min-free-space", args.min_free_space)):
        try:
            sizes.append(None if text is None else parse_size(text))
        except ValueError as exc:
            raise ValueError(f"{option}: {exc}") from None
    max_size, min_free = sizes
    block = getattr(args, "block_size", None) or DEFAULT_BLOCK_SIZE
    if max_size is not None and max_size < block:
        raise ValueError(f"--cache-max-size: {args.cache_max_size} is smaller than one "
                         f"block ({block} bytes)")
    return Limits(max_size=max_size, min_free=min_free)


def describe(cache: dict[str, object]) -> str:
    """One line of cache use, from :meth:`Cache.status`'s dict."""
    def mib(value: object) -> str:
        return "no limit" if value is None else f"{int(str(value)) / (1 << 20):.1f} MiB"
    return (f"cache: {mib(cache['used'])} used of {mib(cache['max_size'])}, "
            f"{mib(cache['pinned'])} pinned ({cache['pinned_feeds']} feeds), "
            f"{mib(cache['own'])} made here, {mib(cache['free'])} free "
            f"(keep {mib(cache['min_free'])}), {cache['evicted_blocks']} blocks evicted")
