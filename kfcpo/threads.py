"""``one_thread``: torch on one intra-op thread inside a block.

Two users, two reasons. K-FAC's factor-sized work (EMA, eigh, solves on matrices of at
most ~260^2) gains nothing from a second thread, and when the cores are shared (other
processes, rollout workers) every parallel region waits for a descheduled thread:
measured on this project's 2-core machine under load, a 65x65 eigh took 26 ms instead of
0.8 ms and one elementwise op on a 257x257 factor 24 ms instead of 0.1 ms. The worker
engine's actor forward must round the same in every worker and in-process, and the
thread count can change a matmul's rounding (docs/algorithm.md 4.5.1).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)``, restoring the count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
