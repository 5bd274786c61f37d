"""Feeds and the core that holds them: append/finalize, get (waiting), proofs, put,
the core's registry of open feeds, its events and names, and read/write streams."""
