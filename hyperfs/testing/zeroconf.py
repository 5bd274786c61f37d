"""Moving zeroconf off the mDNS port 5353, for tests only (two instances on one machine
must not meet the real mDNS responders, nor each other's tests).

zeroconf has no per-instance port: it reads ``_MDNS_PORT`` from module constants bound in
default arguments and module globals at import time, so this patches zeroconf's private
modules. That is why it lives here and not in :mod:`hyperfs.net.discovery.mdns`, which
only offers the seam (``port_override``) that :func:`install` fills.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import zeroconf._core as _zc_core
import zeroconf._handlers.query_handler as _zc_query_handler
import zeroconf._utils.net as _zc_net

from hyperfs.net.discovery import mdns
from hyperfs.net.discovery.mdns import MDNS_PORT


def install() -> None:
    """Let :func:`~hyperfs.net.discovery.mdns.open_mdns` use any port in this process."""
    mdns.port_override = PortPatch.moved


class PortPatch:
    """Process-wide override of zeroconf's mDNS port, reference counted.

    zeroconf has no per-instance port: ``_MDNS_PORT`` is baked into default arguments
    (sockets, sends) and module globals (the unicast-source test of the query handler).
    We rewrite exactly those while custom-port instances exist and restore them after.
    """

    _lock = threading.Lock()
    _users = 0
    _port = MDNS_PORT

    @classmethod
    def acquire(cls, port: int) -> None:
        with cls._lock:
            if cls._users and port != cls._port:
                raise RuntimeError(
                    f"mDNS port {cls._port} already in use in this process; cannot also use {port}"
                )
            if cls._users == 0 and port != cls._port:
                cls._apply(port)
            cls._users += 1

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            cls._users -= 1
            if cls._users == 0 and cls._port != MDNS_PORT:
                cls._apply(MDNS_PORT)

    @classmethod
    @contextlib.contextmanager
    def moved(cls, port: int) -> Iterator[None]:
        """zeroconf on ``port`` while the block runs (what ``open_mdns`` asks for)."""
        cls.acquire(port)
        try:
            yield
        finally:
            cls.release()

    @classmethod
    def _apply(cls, port: int) -> None:
        _set_default(_zc_net.new_socket, "port", port)
        _set_default(_zc_core.Zeroconf.async_send, "port", port)
        _set_default(_zc_core.Zeroconf.send, "port", port)
        _zc_net._MDNS_PORT = port  # new_respond_socket
        _zc_core._MDNS_PORT = port  # async_send_with_transport's "port or _MDNS_PORT"
        _zc_query_handler._MDNS_PORT = port  # "port != _MDNS_PORT" = legacy unicast querier
        cls._port = port


def _set_default(func: Callable[..., Any], name: str, value: object) -> None:
    """Replace the default of positional parameter ``name`` of a Python function."""
    code = func.__code__
    defaults = list(func.__defaults__ or ())
    params = code.co_varnames[: code.co_argcount]
    index = params.index(name) - (len(params) - len(defaults))
    if index < 0:
        raise RuntimeError(f"{func.__qualname__}: {name} has no default")
    defaults[index] = value
    func.__defaults__ = tuple(defaults)
