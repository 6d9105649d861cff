"""The per-step bookkeeping of a rollout epoch (reward, cost and episode-end grids, the
running episode sums, finished episodes), done one step late.

The collector records step ``t`` only after it has sent the actions of step ``t + 1``,
so this work runs while the envs step instead of delaying the next action. Nothing here
feeds an action, and the steps are still recorded in order, so the results are those of
recording each step at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch


class _Step(NamedTuple):
    t: int
    reward: np.ndarray
    cost: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray


class StepRecorder:
    """Fills ``(T, N)`` grids and the epoch's episode statistics.

    ``ep_ret``, ``ep_cost`` and ``ep_len`` are the collector's running sums of the
    unfinished episodes, updated in place (they carry over to the next epoch).
    """

    GRIDS = ("r", "c", "term", "end")

    def __init__(
        self,
        steps: int,
        num_envs: int,
        ep_ret: np.ndarray,
        ep_cost: np.ndarray,
        ep_len: np.ndarray,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        # float32 numpy rows: a row write costs far less than a torch index-assignment,
        # and the float64 -> float32 rounding is the same IEEE cast torch would do.
        self.grids = {k: np.zeros((steps, num_envs), dtype=np.float32) for k in self.GRIDS}
        self.ep_ret, self.ep_cost, self.ep_len = ep_ret, ep_cost, ep_len
        self.on_progress = on_progress
        self.sums = np.zeros(3)  # return, cost, length over finished episodes
        self.ep_costs: list[float] = []  # each finished episode's cost, for the Jc window
        self._pending: _Step | None = None

    def defer(self, t: int, reward: np.ndarray, cost: np.ndarray, terminated: np.ndarray,
              truncated: np.ndarray) -> None:
        """Keep step ``t`` to record later (the arrays must not change meanwhile)."""
        self.flush()
        self._pending = _Step(t, reward, cost, terminated, truncated)

    def flush(self) -> None:
        """Record the step kept by ``defer``, if any."""
        step, self._pending = self._pending, None
        if step is None:
            return
        t, reward, cost, terminated = step.t, step.reward, step.cost, step.terminated
        done = np.logical_or(terminated, step.truncated)
        g = self.grids
        g["r"][t], g["c"][t], g["term"][t], g["end"][t] = reward, cost, terminated, done
        self.ep_ret += reward
        self.ep_cost += cost
        self.ep_len += 1
        for i in np.flatnonzero(done):
            self.sums += (self.ep_ret[i], self.ep_cost[i], self.ep_len[i])
            self.ep_costs.append(float(self.ep_cost[i]))
            self.ep_ret[i] = self.ep_cost[i] = self.ep_len[i] = 0
        if self.on_progress is not None:
            self.on_progress(len(reward))

    @property
    def episodes(self) -> int:
        """How many episodes finished in this epoch."""
        return len(self.ep_costs)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The grids as float32 tensors (everything recorded: call after ``flush``)."""
        if self._pending is not None:
            raise RuntimeError("a step is still pending: call flush() first")
        return {k: torch.from_numpy(v) for k, v in self.grids.items()}
