#!/usr/bin/env python3
"""Reliability and security of hyperfs under load, faults and hostile peers, in figures.

    .venv/bin/python scripts/stress.py            # full run (about 9 minutes)
    .venv/bin/python scripts/stress.py --quick    # CI size (tests/test_stress.py)
    .venv/bin/python scripts/stress.py --json     # the same table as JSON
    .venv/bin/python scripts/stress.py --only hostile,vanish

The cases live in :mod:`hyperfs.testing.stress` (what "held" means is in its docstring).
"""

import sys

from hyperfs.testing.stress.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
