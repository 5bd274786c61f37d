"""Helpers for testing hyperfs for real, shared by tests/ and scripts/ (like trio.testing).

procs watches subprocesses (hyperfs commands, JS peers) and ends them by PID; jsref drives
the JavaScript reference hypercore 1.8.0 in tests/js; network has in-process nodes, raw
protocol peers and feeds to serve; mounts starts and always unmounts real FUSE mounts.
Nothing in the package proper imports this one.
"""
