"""How a long-running hyperfs process (`hyperfs serve`, a mount) is asked to stop."""

from __future__ import annotations

import signal

import trio

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, kill and the terminal going away: each means "stop cleanly"."""


async def wait_for_stop_signal() -> signal.Signals:
    """Wait for one of :data:`STOP_SIGNALS` and return it.

    Receiving SIGINT as a signal, rather than as KeyboardInterrupt, also works in a process
    started in the background, where the shell makes SIGINT ignored, and lets the caller
    stop in its own way (close the node, unmount).
    """
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        return signal.Signals(await anext(signals))
