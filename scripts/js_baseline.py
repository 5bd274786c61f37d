#!/usr/bin/env python3
"""Reference numbers for hyperfs's benchmarks: hypercore 1.8.0 (JS) measured on this machine.

Speeds vary between machines, so hyperfs's benchmarks compare against these medians
taken here rather than against numbers written down elsewhere.

    .venv/bin/python scripts/js_baseline.py [--runs 3] [BLOCKSxSIZE ...]
    (default: 100000x1024 2000x65536); prints one JSON object per shape.
"""

from __future__ import annotations

import argparse
import json

from hyperfs.testing.jsref import js_baseline


def main() -> None:
    """Parse shapes like 100000x1024 and print each one's medians as a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", default=["100000x1024", "2000x65536"])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for shape in args.shapes:
        blocks, size = (int(x) for x in shape.lower().split("x"))
        print(json.dumps(js_baseline(blocks, size, runs=args.runs)), flush=True)


if __name__ == "__main__":
    main()
