"""Network addresses as the net layer passes them around: ``(host, port)`` pairs.

Every part of the layer (a node's listener and dialing, DHT nodes, peers found by the DHT
or mDNS) speaks of addresses in this one form, so it is named once here, below them all.
"""

from __future__ import annotations

Address = tuple[str, int]
"""A (host, port) pair: a TCP listener, a DHT node, a peer found by discovery."""


def parse_address(text: str, default_host: str = "127.0.0.1") -> Address:
    """HOST:PORT (or :PORT, or PORT) as a (host, port) pair; ValueError says what's wrong."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"bad address {text!r}: expected HOST:PORT") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"bad address {text!r}: port must be 0-65535")
    return host, number
