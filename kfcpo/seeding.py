"""Seeds: the range a run's seed must lie in, and how ranks and evaluation derive theirs
from it. Light (no torch, no envs): the command line checks seeds with it."""

from __future__ import annotations

from typing import Any

# Rank r of a run seeded s is seeded s + RANK_SEED_STRIDE * r, its env i s + stride r + i.
RANK_SEED_STRIDE = 1000
# `kfcpo eval`'s default seed is the run's plus this: past every rank's and env's seed, so
# evaluation episodes (goal and hazard layouts) are not the ones training started from.
EVAL_SEED_OFFSET = 100_000
# numpy and gymnasium take unsigned 32-bit seeds; the derived seeds above must fit too.
SEED_MAX = 2**31 - 1
SEED_VALID = f"an integer in [0, {SEED_MAX}]"


def is_seed(value: Any) -> bool:
    """Whether ``value`` is a valid run seed (``SEED_VALID``)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank`` of a run seeded ``seed``."""
    return seed + RANK_SEED_STRIDE * rank
