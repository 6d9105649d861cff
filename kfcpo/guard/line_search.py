"""Backtracking line search (TRPO, Schulman et al. 2015; CPO, Achiam et al. 2017 section 6.3).

From the full step, try fractions 1, decay, decay^2, ... (`steps` of them) and commit the
first one that is admissible:

    * measured KL(pi_new || pi_old) on the minibatch's states <= target_kl (and finite);
    * for a blender that keeps the cost as a constraint (c = Jc - d is known), the cost
      surrogate rises by no more than the slack: L_c - L_c0 <= max(0, -c);
    * when the constraint is not violated (c <= 0, or there is no constraint), the reward
      surrogate (the blender's one objective) does not fall: L_r - L_r0 >= 0.

When no fraction is admissible the parameters are restored bit for bit (and any optimizer
state). Every quantity is averaged over ranks before it is compared, so all ranks accept
the same fraction.
"""

from __future__ import annotations

import math

import torch

from kfcpo.data.batch import Batch
from kfcpo.flat import params_of
from kfcpo.guard.base import (
    Guard,
    PolicyMover,
    Proposal,
    any_nonfinite,
    mean_kl,
    nan_tolerant_distributions,
)

METRIC_KEYS = ("ls_step_frac", "ls_backtracks", "kl_step", "ls_improve", "ls_expected_improve")


class LineSearch(Guard):
    """Backtracking line search on the measured KL and the surrogates (module docstring).

    Args:
        target_kl: delta, the largest measured KL a committed step may have.
        decay: factor between successive fractions, in (0, 1).
        steps: how many fractions to try (>= 1) before giving up.

    `commit(mover, step, mb)` searches on the KL alone (nothing else is known about the
    step); the update loop calls `propose`, which also checks the surrogates.

    Metrics (per epoch, read-and-reset): `rollback_frac` (proposals with no admissible
    fraction / proposals), and over the committed ones `ls_step_frac` (fraction taken),
    `ls_backtracks` (fractions rejected first), `kl_step` (measured KL), `ls_improve`
    (measured rise of L_r) and `ls_expected_improve` (its first-order prediction g_r . step
    at the fraction taken); {} when nothing was proposed.
    """

    def __init__(self, target_kl: float = 0.01, decay: float = 0.8, steps: int = 15) -> None:
        if not (isinstance(target_kl, int | float) and math.isfinite(target_kl) and target_kl > 0):
            raise ValueError(f"target_kl must be a finite number > 0, got {target_kl!r}")
        if not (isinstance(decay, int | float) and 0 < decay < 1):
            raise ValueError(f"decay must be in (0, 1), got {decay!r}")
        if not (isinstance(steps, int) and steps >= 1):
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        self.target_kl, self.decay, self.steps = float(target_kl), float(decay), steps
        self.begin_epoch()

    def fractions(self) -> list[float]:
        """The step fractions tried, in order: 1, decay, decay^2, ..."""
        return [self.decay**k for k in range(self.steps)]

    def begin_epoch(self) -> None:
        self._proposed = self._committed = 0
        self._sums = dict.fromkeys(METRIC_KEYS, 0.0)

    def commit(self, mover: PolicyMover, step: torch.Tensor, mb: Batch) -> bool:
        return self._search(mover, step, mb, None)

    def propose(self, mover: PolicyMover, proposal: Proposal, mb: Batch) -> bool:
        return self._search(mover, proposal.step, mb, proposal)

    def _search(self, mover: PolicyMover, step: torch.Tensor, mb: Batch, proposal: Proposal | None) -> bool:
        self._proposed += 1
        if any_nonfinite([step]):  # refused before anything moves: nothing to restore
            return False
        snap = mover.snapshot()
        old = mover.old_distribution(mb.obs)
        before = proposal.objectives_before() if proposal is not None else None
        for tried, frac in enumerate(self.fractions()):
            mover.apply(frac * step)
            with nan_tolerant_distributions():
                kl = mean_kl(mover.actor, mb.obs, old)
                verdict = self._admissible(mover, kl, proposal, before)
            if verdict is not None:
                self._record(frac, tried, kl, verdict, proposal)
                return True
            mover.restore(snap)
        return False

    def _admissible(
        self,
        mover: PolicyMover,
        kl: float,
        proposal: Proposal | None,
        before: tuple[float, float | None] | None,
    ) -> float | None:
        """The measured rise of L_r (0.0 without a proposal) if the current parameters are
        admissible, else None. The KL is checked first: the surrogates cost a forward pass."""
        if not (math.isfinite(kl) and kl <= self.target_kl) or any_nonfinite(params_of(mover.actor)):
            return None
        if proposal is None or before is None:
            return 0.0
        (l_r, l_c), (l_r0, l_c0) = proposal.objectives(), before
        if not all(math.isfinite(v) for v in (l_r, l_r0)):
            return None
        c = proposal.constraint
        tracks_cost = c is not None and l_c is not None and l_c0 is not None
        if tracks_cost and not (math.isfinite(l_c) and l_c - l_c0 <= max(0.0, -c)):
            return None
        violated = c is not None and c > 0.0
        if not violated and l_r - l_r0 < 0.0:
            return None
        return l_r - l_r0

    def _record(self, frac: float, tried: int, kl: float, improve: float, proposal: Proposal | None) -> None:
        self._committed += 1
        expected = proposal.expected_gain(frac) if proposal is not None else 0.0
        for key, value in zip(METRIC_KEYS, (frac, tried, kl, improve, expected), strict=True):
            self._sums[key] += value

    def metrics(self) -> dict[str, float]:
        if self._proposed == 0:
            out: dict[str, float] = {}
        else:
            n = max(self._committed, 1)
            out = {"rollback_frac": (self._proposed - self._committed) / self._proposed}
            out.update({k: v / n for k, v in self._sums.items()})
        self.begin_epoch()
        return out
