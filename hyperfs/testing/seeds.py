"""Random test inputs that can be replayed: every seed is printed, and can be set.

A test that draws its data from :func:`seeded_random` prints the seed it used, so pytest
shows it with a failure; ``HYPERFS_TEST_SEED=<seed>`` replays that run's inputs exactly.
"""

from __future__ import annotations

import os
import random

__all__ = ["SEED_ENV", "fresh_seed", "seeded_random"]

SEED_ENV = "HYPERFS_TEST_SEED"


def fresh_seed() -> int:
    """``$HYPERFS_TEST_SEED`` if set, else a new random seed; printed either way."""
    value = os.environ.get(SEED_ENV)
    seed = int(value) if value else random.SystemRandom().randrange(1 << 32)
    print(f"random seed {seed} (replay with {SEED_ENV}={seed})")
    return seed


def seeded_random(seed: int | None = None) -> random.Random:
    """A ``random.Random`` from ``seed``, or from :func:`fresh_seed` when None."""
    return random.Random(fresh_seed() if seed is None else seed)
