"""`hyperfs migrate`: bring a database made by an earlier hyperfs up to date, now.

Opening a database migrates it anyway (see :mod:`hyperfs.store.migrate`: block data
moved out of LevelDB into data files, resumable if interrupted); this command does it on
its own, with a progress bar on a terminal, for whoever wants it done before a mount.
"""

from __future__ import annotations

import argparse

from hyperfs.store.migrate import open_store


async def migrate(args: argparse.Namespace) -> int:
    store, moved = open_store(args.db)
    path = store.path
    store.close()
    if moved:
        print(f"{path}: moved {moved} blocks into data files; up to date")
    else:
        print(f"{path}: up to date, nothing to move")
    return 0
