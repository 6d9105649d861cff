"""Jc, the episode-cost estimate that decides every constrained update.

The mean cost of the last `size` finished episodes, over all ranks. One epoch's episodes
alone (PointCircle1: ~40 per 20,000 steps; PointGoal1: ~20) make Jc swing by tens of
percent from epoch to epoch, and with it CPO's case, the margin weight and the Lagrange
multiplier (docs/algorithm.md, "Jc over a window").
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any


class EpisodeCostWindow:
    """A FIFO of the last `size` episode costs; `mean()` is NaN until one has finished."""

    def __init__(self, size: int) -> None:
        if not (isinstance(size, int) and size >= 1):
            raise ValueError(f"cost_window must be an integer >= 1, got {size!r}")
        self.costs: deque[float] = deque(maxlen=size)

    def extend(self, costs: Iterable[float]) -> None:
        """Append finished episodes' costs, dropping the oldest beyond `size`."""
        self.costs.extend(float(c) for c in costs)

    def mean(self) -> float:
        """Jc: the mean cost of the episodes in the window (NaN when empty)."""
        return sum(self.costs) / len(self.costs) if self.costs else math.nan

    def __len__(self) -> int:
        return len(self.costs)

    def state_dict(self) -> dict[str, Any]:
        """The window's costs, oldest first."""
        return {"costs": list(self.costs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (up to this window's size)."""
        self.costs.clear()
        self.extend(state["costs"])
