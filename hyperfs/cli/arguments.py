"""Argument types the sub-commands share: each turns an option's text into its value, or
raises the :class:`argparse.ArgumentTypeError` whose message argparse prints."""

from __future__ import annotations

import argparse
import ipaddress

from hyperfs.net.address import parse_address


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def host_port(text: str) -> str:
    """HOST:PORT, checked here but kept as text (its default host depends on the option)."""
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {text!r}") from None


def port_number(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("port must be 1-65535")
    return value


PRIVATE_HELP = ("make the new feed private: it is only ever shared over encrypted connections "
                "(with hyperfs peers), never in plain hypercore 1.x (hyperfs.feeds.privacy)")
"""The help of ``--private`` (add, mount)."""
