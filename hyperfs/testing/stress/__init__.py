"""Reliability and security of hyperfs under load, faults and hostile peers, in figures.

    .venv/bin/python scripts/stress.py [--quick] [--json] [--only GROUP,...]
    python -m hyperfs.testing.stress ...          # the same

One module per group of cases: clients and attacks (hostile clients), seeders (hostile
seeders), fuzz, kills (SIGKILL rounds), vanish, disk (full disk, corruption), load,
security; common holds the row and the run's sizes, raw the TCP attack plumbing.

Prints one Markdown table, ``case | tried | held | figure``: what was tried, how many
times, how many times it held, and the figure that shows how well. Every case stands up
real things: ``hyperfs serve`` / ``mount`` / ``cat`` / ``fsck`` subprocesses, library
nodes in this process, raw sockets speaking the wire protocol through the sans-I/O
:class:`hyperfs.wire.connection.Connection` (and, for some, bytes built by hand with
:mod:`hyperfs.testing.rawwire`), on 127.0.0.1 only (``HYPERFS_LOCAL_ONLY=1``,
discovery off). Waits are bounded waits on conditions (a line, a closed stream, a stored
block); the only timed pauses are the attacks' own pacing (slowloris) and the random
moment of a SIGKILL.

What "held" means, per case group:

* hostile peers: the offender is dropped within a bounded time with the reason logged by
  the victim, honest downloads running meanwhile all finish with correct data, the
  victim's anonymous memory (RssAnon) stays within a bound, and ``hyperfs fsck`` of every
  database involved passes (nothing unverified stored);
* faults: after each SIGKILL the database opens, ``hyperfs fsck`` passes, no partial feed
  is visible, and the download resumes without fetching again what was stored; a peer
  that vanishes has its requests moved; a full disk fails ``cp`` with ENOSPC leaving
  nothing behind; corrupted blocks are never returned and are fetched again;
* load and security: data correct everywhere, figures reported.

Everything started is ended by PID, every mount (FUSE and tmpfs) is unmounted, even when
a case fails. Exit status 0 when every case held.
"""
