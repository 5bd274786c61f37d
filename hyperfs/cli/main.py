"""The `hyperfs` command: one sub-command per function, errors as one-line messages.

Each sub-command lives in the module of its layer; this file only parses arguments and
turns every :class:`HyperfsError` (and OSError) into a clear message and exit status.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from hyperfs.base.errors import HyperfsError


def default_db() -> Path:
    """The per-user data directory (XDG_DATA_HOME, else ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "hyperfs"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperfs", description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=None,
                        help=f"database directory (default: {default_db()})")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (repeat for debug output)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from hyperfs.cli import commands  # the sub-commands register themselves

    commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="hyperfs: %(message)s",
    )
    if args.db is None:
        args.db = default_db()
    run: Callable[[argparse.Namespace], object] = args.run
    try:
        result = trio.run(run, args)
    except KeyboardInterrupt:
        return 130
    except (HyperfsError, OSError, TimeoutError, ValueError) as exc:
        print(f"hyperfs: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # A nursery's error: report the user-facing one inside, re-raise anything else.
        user, rest = group.split((HyperfsError, OSError, TimeoutError, ValueError))
        if rest is not None or user is None:
            raise
        print(f"hyperfs: {_first(user)}", file=sys.stderr)
        return 1
    return int(result or 0)


def _first(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error

