"""How long a remote may keep us waiting, and the clocks that tell when it has.

A peer stamps each clock as the wait begins (and clears it as it ends); its watchdog asks
:meth:`Clocks.overdue` a few times per shortest timeout. peer.py's docstring lists every
cap and deadline a remote meets.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio


@dataclass(frozen=True)
class Timeouts:
    """The deadlines of every connection of a swarm, in seconds."""

    request: float = 10.0
    """For some answer to our requests in flight; also how long one may be passed over."""
    handshake: float = 10.0
    """For the remote's handshake, from connecting."""
    message: float = 60.0
    """For a message to arrive whole from its first byte, and for each send to the remote."""

    @property
    def period(self) -> float:
        """How often to look: a deadline is then noticed at most a quarter late."""
        return min(self.request, self.handshake, self.message) / 4


class Clocks:
    """When each wait on one remote began (None: not waiting)."""

    __slots__ = ("answered", "connected", "message", "sending", "timeouts")

    def __init__(self, timeouts: Timeouts) -> None:
        self.timeouts = timeouts
        self.connected = trio.current_time()
        self.answered = self.connected  # last answer to our requests (or the first request)
        self.message: float | None = None  # the message arriving began
        self.sending: float | None = None  # the send in progress began

    def overdue(self, now: float, handshaken: bool, inflight: int) -> str | None:
        """Why the remote must be dropped at ``now``, or None while it keeps its deadlines."""
        timeouts = self.timeouts
        if not handshaken and now - self.connected > timeouts.handshake:
            return f"no handshake within {timeouts.handshake:g} s"
        if self.message is not None and now - self.message > timeouts.message:
            return f"a message took longer than {timeouts.message:g} s to arrive"
        if self.sending is not None and now - self.sending > timeouts.message:
            return f"not reading: a send was blocked for {timeouts.message:g} s"
        if inflight and now - self.answered > timeouts.request:
            return f"no answer to {inflight} requests for {timeouts.request:g} s"
        return None
