"""Helpers for testing hyperfs for real, shared by tests/ and scripts/ (like trio.testing).

procs watches subprocesses (hyperfs commands, JS peers) and ends them by PID; jsref drives
the JavaScript reference hypercore 1.8.0 in tests/js; network has in-process nodes, raw
protocol peers, a claim-everything seeder loop and feeds to serve; rawwire builds wire
bytes by hand, independently of hyperfs.wire; mounts starts and always unmounts real FUSE
mounts; discovery has private DHTs and network namespaces; zeroconf moves mDNS off port
5353; stress is the stress suite (``scripts/stress.py``). Nothing in the package proper
imports this one.
"""
