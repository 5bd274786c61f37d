"""The `hyperfs` command: one sub-command per function, errors as one-line messages.

:data:`COMMANDS` lists every sub-command, in the order `hyperfs --help` shows them; each one's
arguments and work live in the module of what it does (:mod:`.feeds`, :mod:`.network`,
:mod:`.status`, :mod:`.mount`, :mod:`.migrate`). This file only parses arguments and turns every
:class:`HyperfsError` (and OSError) into a clear message and exit status.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from hyperfs.base.errors import HyperfsError
from hyperfs.cli import feeds, live, migrate, mount, network, pins, status
from hyperfs.cli.cache import cache_limits


@dataclass(frozen=True)
class Command:
    """A sub-command: its name and one-line help, the function adding its arguments to its
    parser (if it takes any), and the one run under trio with the parsed arguments, which
    returns the exit status. ``description`` is the longer text of its own --help."""

    name: str
    help: str
    run: Callable[[argparse.Namespace], Awaitable[int]]
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    description: str | None = None


COMMANDS = (
    Command("add", "store a file (or - for standard input) as a new feed",
            feeds.add, feeds.add_arguments),
    Command("append", "append a file (or - for standard input) to a live feed of ours",
            live.append, live.append_arguments),
    Command("ls", "list stored feeds with their length and what is local", feeds.ls),
    Command("cat", "write a feed (or one block) to standard output",
            feeds.cat, feeds.cat_arguments),
    Command("serve", "seed every stored feed to peers until interrupted",
            network.serve, network.serve_arguments),
    Command("status", "show a running node's peers and discovery state",
            status.show_status, status.status_arguments),
    Command("pin", "download a feed in full and keep it (never evicted)",
            pins.pin, pins.pin_arguments),
    Command("unpin", "let a pinned feed be evicted again (under a cache limit)",
            pins.unpin, pins.unpin_arguments),
    Command("fsck", "check the database's consistency (and repair blocks)",
            feeds.fsck, feeds.fsck_arguments),
    Command("migrate", "move an earlier hyperfs's database to this format (also done on open)",
            migrate.migrate),
    Command("mount", "mount the feeds as a filesystem (in the foreground, or --daemon)",
            mount.mount, mount.mount_arguments, description=mount.MOUNT_DESCRIPTION),
    Command("umount", "unmount a hyperfs mount and wait for its process to end",
            mount.umount, mount.umount_arguments),
    Command("id", "print the feed id of a file or directory in a mount",
            mount.print_ids, mount.id_arguments),
)

USER_ERRORS = (HyperfsError, OSError, TimeoutError, ValueError)
"""What a sub-command may fail with that the user can act on: printed as one line."""


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
    for command in COMMANDS:
        command_parser = sub.add_parser(command.name, help=command.help,
                                        description=command.description)
        if command.arguments is not None:
            command.arguments(command_parser)
        command_parser.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` (default: this process's arguments); ``args.argv`` keeps
    it, for `mount --daemon`, which starts the same command again in the background."""
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="hyperfs: %(message)s",
    )
    if args.db is None:
        args.db = default_db()
    run: Callable[[argparse.Namespace], Awaitable[int]] = args.run
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
