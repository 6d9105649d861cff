"""How a vector env's sub-envs map onto worker processes.

Env ``i`` always has seed ``seed + i`` and position ``i`` in every batch, whatever the
layout; the layout only decides which process steps it. Workers get contiguous blocks
of envs, sizes differing by at most one (the first blocks take the remainder).
"""

from __future__ import annotations

import os

AUTO_WORKERS = 0  # env.workers: 0 picks one worker per usable core


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_workers(num_envs: int, workers: int = AUTO_WORKERS) -> int:
    """The number of worker processes to start: ``workers``, or one per usable core for
    0, never more than ``num_envs`` (a worker without envs would only add a round trip)."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = one per core), got {workers}")
    wanted = usable_cores() if workers == AUTO_WORKERS else workers
    return max(1, min(wanted, num_envs))


def blocks(num_envs: int, workers: int) -> list[range]:
    """The envs of each worker: ``workers`` contiguous ranges covering ``range(num_envs)``."""
    if not 1 <= workers <= num_envs:
        raise ValueError(f"workers must be in [1, num_envs={num_envs}], got {workers}")
    size, extra = divmod(num_envs, workers)
    out, start = [], 0
    for w in range(workers):
        stop = start + size + (w < extra)
        out.append(range(start, stop))
        start = stop
    return out
