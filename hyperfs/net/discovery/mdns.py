"""Local-network peer discovery over multicast DNS (zeroconf), driven by trio.

Every node registers one DNS-SD service of type ``_hyperfs._tcp.local.``: the SRV record
carries our TCP port, A records our addresses, and the TXT record the *discovery keys*
(see :mod:`hyperfs.net.discovery.keys`) of the feeds we hold or want. Browsing nodes resolve
each service they see and report ``(key, (address, port))`` for every key they want.

Why one service with keys in TXT rather than one service per feed: a node with many feeds
stays one record set (one announcement, one goodbye) and browsers need a single browse
type. Discovery keys reveal nothing about feed ids, so publishing them is fine. TXT
strings are limited to 255 bytes, so keys are packed raw, 12 per string (``k0``, ``k1``,
...); at most :data:`MAX_TXT_KEYS` keys are advertised (about 8 KB, under mDNS's 9000-byte
message limit) - beyond that the oldest keys are advertised and the rest counted in
``stats()['keys_not_advertised']``.

Threads: zeroconf is an asyncio library; its synchronous API starts a private event-loop
thread and blocks callers for seconds. Instead, the whole zeroconf instance lives in an
asyncio loop that runs inside *one* ``trio.to_thread.run_sync`` worker for the lifetime of
:func:`open_mdns`. trio talks to it with ``run_coroutine_threadsafe`` and it answers with
the trio token's ``run_sync_soon``, so neither side ever blocks the other and there are no
other threads.

Non-standard mDNS port (tests only): zeroconf reads its port from module constants, bound
in default arguments and module globals at import time. Moving it means patching
zeroconf, which is test-only code: ``hyperfs.testing.zeroconf`` does it and installs
:data:`port_override`, which :func:`open_mdns` uses while an instance with a custom port
is open; all instances in one process must then use the same port.

(Over ~400 lines: the thread bridge, the advertising and the browsing share one zeroconf
instance and its loop; they are one state machine whose halves would call each other.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ifaddr
import trio
import zeroconf
from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from hyperfs.base.callbacks import Callbacks
from hyperfs.net.address import Address

__all__ = [
    "MAX_TXT_KEYS",
    "MDNS_PORT",
    "SERVICE_TYPE",
    "MdnsNode",
    "MdnsOptions",
    "open_mdns",
]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_hyperfs._tcp.local."
MDNS_PORT = 5353
_KEY_SIZE = 20
_KEYS_PER_STRING = 12  # 3 ("kNN=") + 12*20 = 243 <= 255 bytes per TXT string
MAX_TXT_KEYS = 32 * _KEYS_PER_STRING
_TXT_VERSION = b"1"

PeerCallback = Callable[[bytes, Address], None]
T = TypeVar("T")


@dataclass(frozen=True)
class MdnsOptions:
    """Where and how to run mDNS."""

    #: IPv4 addresses of the interfaces to use. Empty = every IPv4 interface. Tests must
    #: name loopback or addresses inside their own network namespaces.
    interfaces: tuple[str, ...] = ()
    #: UDP port of mDNS itself. Only tests change it (process-wide, see module doc).
    port: int = MDNS_PORT
    service_type: str = SERVICE_TYPE
    #: Period at which known matching services are reported again (the consumer
    #: deduplicates); also bounds how stale a missed report can get.
    refresh: float = 30.0
    #: How long to wait for a seen service's SRV/TXT/A records.
    resolve_timeout: float = 3.0


@dataclass
class _Service:
    addresses: list[str]
    port: int
    keys: frozenset[bytes]


@dataclass
class _Stats:
    registered: bool = False
    services_seen: int = 0
    reports: int = 0
    updates: int = 0
    errors: list[str] = field(default_factory=list)


PortOverride = Callable[[int], contextlib.AbstractContextManager[object]]
port_override: PortOverride | None = None
"""What moves zeroconf off port 5353 for this process while an instance uses another
port. zeroconf has no per-instance port, so this patches zeroconf itself: only tests do
that, and ``hyperfs.testing.zeroconf.install()`` is what sets this."""


def _on_port(port: int) -> contextlib.AbstractContextManager[object]:
    if port == MDNS_PORT:
        return contextlib.nullcontext()
    if port_override is None:
        raise ValueError(f"mDNS port {port}: zeroconf only runs on {MDNS_PORT} unless a test "
                         "installs hyperfs.testing.zeroconf")
    return port_override(port)


def _check_key(key: bytes) -> bytes:
    key = bytes(key)
    if len(key) != _KEY_SIZE:
        raise ValueError(f"discovery key must be {_KEY_SIZE} bytes, got {len(key)}")
    return key


def encode_keys(keys: Iterable[bytes]) -> dict[bytes, bytes]:
    """TXT properties advertising ``keys`` (at most :data:`MAX_TXT_KEYS`)."""
    keys = list(keys)[:MAX_TXT_KEYS]
    props = {b"v": _TXT_VERSION}
    for i in range(0, len(keys), _KEYS_PER_STRING):
        props[b"k%d" % (i // _KEYS_PER_STRING)] = b"".join(keys[i : i + _KEYS_PER_STRING])
    return props


def decode_keys(props: dict[bytes, bytes | None]) -> frozenset[bytes]:
    """Keys from TXT properties; malformed strings are ignored (untrusted input)."""
    if props.get(b"v") != _TXT_VERSION:
        return frozenset()
    keys: set[bytes] = set()
    for name, value in props.items():
        if not (name.startswith(b"k") and name[1:].isdigit()) or not value:
            continue
        if len(value) % _KEY_SIZE:
            continue
        keys.update(value[i : i + _KEY_SIZE] for i in range(0, len(value), _KEY_SIZE))
    return frozenset(keys)


def local_ipv4_addresses(include_loopback: bool = False) -> list[str]:
    """This machine's IPv4 addresses, asked afresh (interfaces come and go): what mDNS
    advertises by default, and how discovery recognises reports of itself."""
    addrs = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not (ip.is_IPv4 and isinstance(ip.ip, str)):
                continue
            if include_loopback or not ipaddress.ip_address(ip.ip).is_loopback:
                addrs.append(ip.ip)
    return addrs


class MdnsNode:
    """Our mDNS presence: one advertised service plus a browser. Create with
    :func:`open_mdns`; methods are called from trio.

    ``advertise(key)`` puts a key in our TXT record; ``want(key)`` makes services that
    list the key be reported to the listeners as ``(key, (address, port))``.
    """

    def __init__(self, port: int, options: MdnsOptions) -> None:
        self.options = options
        self.port = port
        self.node_id = os.urandom(8).hex()
        self.instance_name = f"{self.node_id}.{options.service_type}"
        self.addresses = list(options.interfaces) or local_ipv4_addresses()
        self._advertised: dict[bytes, None] = {}  # insertion-ordered set
        self._wanted: set[bytes] = set()
        self._services: dict[str, _Service] = {}
        self._listeners: Callbacks[[bytes, Address]] = Callbacks()
        self._stats = _Stats()
        self._dirty = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._astop: asyncio.Event | None = None
        self._aiozc: AsyncZeroconf | None = None
        self._atasks: set[asyncio.Task[None]] = set()
        self._ready = trio.Event()
        self._stop_requested = False
        # Events from the asyncio thread are queued here and run by a trio task, so an
        # exception in a listener propagates through the nursery like any other (raised
        # inside run_sync_soon it would abort the whole trio run).
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[
            tuple[Callable[..., None], tuple[Any, ...]]
        ](math.inf)

    # -- public API (trio) --------------------------------------------------------------

    def add_listener(self, callback: PeerCallback) -> Callable[[], None]:
        """Register ``callback(key, (host, port))``; returns a function removing it."""
        return self._listeners.add(callback)

    def advertise(self, key: bytes) -> None:
        """List ``key`` in our TXT record (published asynchronously)."""
        key = _check_key(key)
        if key not in self._advertised:
            self._advertised[key] = None
            self._dirty.set()

    def withdraw(self, key: bytes) -> None:
        """Remove ``key`` from our TXT record."""
        key = bytes(key)
        if key in self._advertised:
            del self._advertised[key]
            self._dirty.set()

    def want(self, key: bytes) -> None:
        """Report services listing ``key``, starting with those already known."""
        key = _check_key(key)
        if key in self._wanted:
            return
        self._wanted.add(key)
        for name in list(self._services):
            self._report(name, only=key)

    def unwant(self, key: bytes) -> None:
        self._wanted.discard(bytes(key))

    def stats(self) -> dict[str, Any]:
        return {
            "instance": self.instance_name,
            "addresses": list(self.addresses),
            "mdns_port": self.options.port,
            "registered": self._stats.registered,
            "advertised_keys": min(len(self._advertised), MAX_TXT_KEYS),
            "keys_not_advertised": max(0, len(self._advertised) - MAX_TXT_KEYS),
            "wanted_keys": len(self._wanted),
            "services_known": len(self._services),
            "services_seen": self._stats.services_seen,
            "reports": self._stats.reports,
            "txt_updates": self._stats.updates,
            "errors": list(self._stats.errors[-5:]),
        }

    # -- trio side ----------------------------------------------------------------------

    def _report(self, name: str, only: bytes | None = None) -> None:
        service = self._services.get(name)
        if service is None:
            return
        keys = service.keys & self._wanted if only is None else service.keys & {only}
        for key in keys:
            for address in service.addresses:
                self._stats.reports += 1
                self._listeners(key, (address, service.port))

    def _service_resolved(self, name: str, service: _Service) -> None:
        self._stats.services_seen += 1
        self._services[name] = service
        self._report(name)

    def _service_removed(self, name: str) -> None:
        self._services.pop(name, None)

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the zeroconf asyncio loop and await its result from trio."""
        assert self._aloop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._aloop)
        done = trio.Event()
        token = self._token

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            future.cancel()
            raise
        return future.result()

    async def _publisher(self) -> None:
        """Push TXT changes to zeroconf, coalescing bursts of advertise()/withdraw()."""
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            await self._call(self._aupdate(encode_keys(self._advertised)))
            self._stats.updates += 1

    async def _refresher(self) -> None:
        while True:
            await trio.sleep(self.options.refresh)
            for name in list(self._services):
                self._report(name)

    # -- asyncio side (runs in the worker thread) ---------------------------------------

    def _to_trio(self, fn: Callable[..., None], *args: Any) -> None:
        """Queue ``fn(*args)`` to run in trio (callable from the asyncio thread)."""
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._enqueue, (fn, args))

    def _enqueue(self, item: tuple[Callable[..., None], tuple[Any, ...]]) -> None:
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._inbox_send.send_nowait(item)

    async def _dispatcher(self) -> None:
        async for fn, args in self._inbox_recv:
            fn(*args)

    def _service_info(self, props: dict[bytes, bytes]) -> AsyncServiceInfo:
        return AsyncServiceInfo(
            self.options.service_type,
            self.instance_name,
            port=self.port,
            properties=props,
            server=f"hyperfs-{self.node_id}.local.",
            parsed_addresses=self.addresses,
        )

    def _thread_main(self) -> None:
        asyncio.run(self._amain())

    async def _amain(self) -> None:
        self._astop = asyncio.Event()
        self._aloop = asyncio.get_running_loop()
        if self._stop_requested:  # closed before the loop existed
            self._astop.set()
        interfaces: Any = list(self.options.interfaces) or zeroconf.InterfaceChoice.All
        aiozc = AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        self._aiozc = aiozc
        browser: AsyncServiceBrowser | None = None
        try:
            # Random 64-bit instance names do not collide in practice, so skip the
            # ~0.75 s of RFC 6762 probing ("cooperating responders" does exactly that).
            # Registered with no keys: the trio-side publisher pushes them (this thread
            # must not read state that trio mutates).
            await aiozc.async_register_service(
                self._service_info(encode_keys(())), cooperating_responders=True
            )
            self._to_trio(self._mark_registered)
            browser = AsyncServiceBrowser(
                aiozc.zeroconf,
                self.options.service_type,
                handlers=[self._on_change],
                port=self.options.port,
                # Always multicast questions: unicast (QU) answers land on one socket
                # only when several instances share a port (tests on one host).
                question_type=DNSQuestionType.QM,
            )
            self._to_trio(self._ready.set)
            await self._astop.wait()
        finally:
            for task in list(self._atasks):
                task.cancel()
            if browser is not None:
                await browser.async_cancel()
            await aiozc.async_close()  # sends goodbyes for our service

    def _mark_registered(self) -> None:
        self._stats.registered = True

    async def _aupdate(self, props: dict[bytes, bytes]) -> None:
        assert self._aiozc is not None
        await self._aiozc.async_update_service(self._service_info(props))

    def _on_change(
        self,
        zeroconf: zeroconf.Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if name.lower() == self.instance_name.lower():
            return
        if state_change is ServiceStateChange.Removed:
            self._to_trio(self._service_removed, name)
            return
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, name))
        self._atasks.add(task)
        task.add_done_callback(self._atasks.discard)

    async def _resolve(self, zc: zeroconf.Zeroconf, name: str) -> None:
        info = AsyncServiceInfo(self.options.service_type, name)
        try:
            found = await info.async_request(
                zc,
                int(self.options.resolve_timeout * 1000),
                question_type=DNSQuestionType.QM,
                port=self.options.port,
            )
        except Exception as exc:  # a remote's bad records must not stop discovery
            log.debug("resolving %s failed", name, exc_info=True)
            self._to_trio(self._stats.errors.append, f"resolve {name}: {exc!r}")
            return
        if not found or not info.port:
            return
        service = _Service(
            addresses=info.parsed_addresses(IPVersion.V4Only),
            port=info.port,
            keys=decode_keys(info.properties),
        )
        self._to_trio(self._service_resolved, name, service)

    def _stop_loop(self) -> None:
        self._stop_requested = True
        if self._aloop is not None and self._astop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._aloop.call_soon_threadsafe(self._astop.set)


def _validate(port: int, options: MdnsOptions) -> None:
    if not 0 < port < 65536:
        raise ValueError(f"bad service port {port}")
    if not 0 < options.port < 65536:
        raise ValueError(f"bad mDNS port {options.port}")
    for address in options.interfaces:
        if ipaddress.ip_address(address).version != 4:
            raise ValueError(f"only IPv4 interface addresses are supported: {address}")


@contextlib.asynccontextmanager
async def open_mdns(
    port: int, options: MdnsOptions | None = None, on_peer: PeerCallback | None = None
) -> AsyncIterator[MdnsNode]:
    """Run our mDNS service advertising TCP ``port``; yields once registered and browsing.

    Leaving the context sends goodbye packets, closes zeroconf and joins its worker.
    """
    options = options or MdnsOptions()
    _validate(port, options)
    node = MdnsNode(port, options)
    if on_peer is not None:
        node.add_listener(on_peer)
    with _on_port(options.port):
        async with trio.open_nursery() as nursery:

            async def run_thread() -> None:
                try:
                    await trio.to_thread.run_sync(
                        node._thread_main,
                        thread_name=f"hyperfs-mdns-{node.node_id}",
                        limiter=trio.CapacityLimiter(1),
                    )
                finally:
                    node._ready.set()  # unblock the waiter below if startup failed
                    node._inbox_send.close()

            nursery.start_soon(node._dispatcher)
            nursery.start_soon(run_thread)
            try:
                await node._ready.wait()
                if not node._stats.registered:
                    raise OSError("mDNS failed to start (see the worker's exception)")
                nursery.start_soon(node._publisher)
                nursery.start_soon(node._refresher)
                yield node
            finally:
                node._stop_loop()
                # The worker ends once the loop stops; cancel our own trio tasks only.
                nursery.cancel_scope.cancel()
