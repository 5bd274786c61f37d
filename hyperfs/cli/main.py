"""The `hyperfs` command: one sub-command per function, errors as one-line messages.

:data:`COMMANDS` lists every sub-command, in the order `hyperfs --help` shows them; each one's
arguments and work live in the module of what it does (:mod:`.feeds`, :mod:`.network`,
:mod:`.status`, :mod:`.mount`, :mod:`.migrate`). This file only parses arguments and turns every
:class:`HyperfsError` (and OSError) into a clear message and exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from hyperfs.base.errors import HyperfsError
from hyperfs.cli.cache import cache_limits

Run = Callable[[argparse.Namespace], Awaitable[int]]


@dataclass(frozen=True)
class Command:
    """A sub-command: its name and one-line help, and where its work lives: ``module`` (of
    :mod:`hyperfs.cli`) with its ``run`` function (run under trio with the parsed arguments;
    returns the exit status), the function adding its arguments to its parser (if it takes
    any) and the name of the longer text of its own --help (if any).

    Names, not objects: a command imports only its own module, when it is the one run
    (`hyperfs cat` never loads the filesystem, pyfuse3 or discovery it does not use; each
    import costs every invocation its start-up time)."""

    name: str
    help: str
    module: str
    run: str
    arguments: str | None = None
    description: str | None = None

    def load(self, attribute: str) -> Any:
        return getattr(importlib.import_module(f"hyperfs.cli.{self.module}"), attribute)


COMMANDS = (
    Command("add", "store a file (or - for standard input) as a new feed",
            "feeds", "add", "add_arguments"),
    Command("append", "append a file (or - for standard input) to a live feed of ours",
            "live", "append", "append_arguments"),
    Command("ls", "list stored feeds with their length and what is local", "feeds", "ls"),
    Command("cat", "write a feed (or one block) to standard output",
            "feeds", "cat", "cat_arguments"),
    Command("rm", "delete feeds, with every name bound to them, from the database",
            "feeds", "rm", "rm_arguments"),
    Command("serve", "seed every stored feed to peers until interrupted",
            "network", "serve", "serve_arguments"),
    Command("status", "show a running node's peers and discovery state",
            "status", "show_status", "status_arguments"),
    Command("pin", "download a feed in full and keep it (never evicted)",
            "pins", "pin", "pin_arguments"),
    Command("unpin", "let a pinned feed be evicted again (under a cache limit)",
            "pins", "unpin", "unpin_arguments"),
    Command("fsck", "check the database's consistency (and repair blocks)",
            "feeds", "fsck", "fsck_arguments"),
    Command("migrate", "move an earlier hyperfs's database to this format (also done on open)",
            "migrate", "migrate"),
    Command("mount", "mount the feeds as a filesystem (in the foreground, or --daemon)",
            "mount", "mount", "mount_arguments", description="MOUNT_DESCRIPTION"),
    Command("umount", "unmount a hyperfs mount and wait for its process to end",
            "mount", "umount", "umount_arguments"),
    Command("id", "print the feed id of a file or directory in a mount",
            "mount", "print_ids", "id_arguments"),
)

USER_ERRORS = (HyperfsError, OSError, TimeoutError, ValueError)
"""What a sub-command may fail with that the user can act on: printed as one line."""


def default_db() -> Path:
    """The per-user data directory (XDG_DATA_HOME, else ~/.local/share)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "hyperfs"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every sub-command, or (``only``) with the arguments of that one alone
    (the others keep their name and help): what :func:`main` builds, to import no more than
    the command it runs."""
    parser = _top_parser()
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        if only is not None and command.name != only:
            sub.add_parser(command.name, help=command.help)
            continue
        description = command.load(command.description) if command.description else None
        command_parser = sub.add_parser(command.name, help=command.help,
                                        description=description)
        if command.arguments is not None:
            command.load(command.arguments)(command_parser)
        command_parser.set_defaults(run=command.load(command.run))
    return parser


def _top_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperfs", description=__doc__.splitlines()[0],
                                     add_help=add_help)
    parser.add_argument("--db", type=Path, default=None,
                        help=f"database directory (default: {default_db()})")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (repeat for debug output)")
    return parser


def _command_name(argv: list[str]) -> str | None:
    """The sub-command ``argv`` names (None: none, or --help before it), found without
    loading any command's module."""
    parser = _top_parser(add_help=False)
    parser.add_argument("command", nargs="?")
    known, _ = parser.parse_known_args(argv)
    names = {command.name for command in COMMANDS}
    return known.command if known.command in names else None


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: this process's arguments); ``args.argv`` keeps
    it, for `mount --daemon`, which starts the same command again in the background."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_name(argv)).parse_args(argv)
    args.argv = argv
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="hyperfs: %(message)s",
    )
    if args.db is None:
        args.db = default_db()
    run: Run = args.run
    try:
        if hasattr(args, "cache_max_size"):
            cache_limits(args)  # a bad SIZE: one line, before anything starts
        return trio.run(run, args)
    except KeyboardInterrupt:
        return 130
    except USER_ERRORS as exc:
        print(f"hyperfs: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # A nursery's error: report the user-facing one inside, re-raise anything else.
        user, rest = group.split(USER_ERRORS)
        if rest is not None or user is None:
            raise
        print(f"hyperfs: {_first(user)}", file=sys.stderr)
        return 1


def _first(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
