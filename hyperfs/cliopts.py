"""Command-line options shared by the commands that go on the network (serve, cat, mount).

One place defines them, so `serve`, `cat` and `mount` spell and document them alike.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .core import Core
from .network import Node, open_node, parse_address

DEFAULT_PORT = 3282


def _address(text: str) -> str:
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_network_options(parser: argparse.ArgumentParser, *, listen: str | None) -> None:
    """--listen and --peer; ``listen`` is the default (None: do not listen)."""
    parser.add_argument("--listen", metavar="HOST:PORT", type=_address, default=listen,
                        help=f"accept peers on this address (default: {listen or 'none'})")
    parser.add_argument("--peer", metavar="HOST:PORT", type=_address, action="append",
                        default=[], help="connect to this peer (repeatable)")
    parser.add_argument("--request-timeout", type=float, default=10.0, metavar="S",
                        help="drop a peer that leaves requests unanswered this long")


@asynccontextmanager
async def node_from_args(core: Core, args: argparse.Namespace) -> AsyncIterator[Node]:
    async with open_node(core, listen=args.listen, peers=args.peer,
                         request_timeout=args.request_timeout) as node:
        yield node
