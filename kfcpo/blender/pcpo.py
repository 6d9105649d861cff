"""PCPO blender (Yang et al. 2020, eq. 5 and 6): a reward trust-region step, then a projection
onto the linearized cost half-space.

    x_half = sqrt(2 delta / q) x_r,                      q = g_r . x_r,  x_r = H^-1 g_r
    step   = x_half - max(0, (c + g_c . x_half) / (g_c . L^-1 g_c)) L^-1 g_c,   c = Jc - d

`projection: kl` takes L = H (the KL projection: L^-1 g_c = x_c from the preconditioner,
the paper's main variant); `projection: l2` takes L = I (L^-1 g_c = g_c). The reward step is
along F^-1 g (x_r), not F g: a known defect of one popular implementation (docs/algorithm.md 5).
The step lies on or inside {x : c + g_c . x <= 0}; unlike CPO it may leave the trust region
(the projection can lengthen it), which the line-search guard then checks by measured KL.

`rescale` (a kfcpo option, off in the paper): when the projected step's quadratic KL model
0.5 x^T F x exceeds delta, shrink it onto the trust-region boundary, keeping its direction.
With c = Jc - d in episode-cost units and per-step cost advantages, the projection's
length grows with c / s and is soon far outside the region: measured on a PointButton1
rollout, Jc = 26 against d = 25 already put it beyond the reach of a 15-step backtracking
search (0.8^14 ~ 0.044 of it still measured KL > 0.01), so the policy could not move
while infeasible. Shrinking first lets the search start from the region's boundary.
"""

from __future__ import annotations

import math

import torch

from kfcpo.blender.base import Blender, Directions
from kfcpo.preconditioner.base import Preconditioner

PROJECTIONS = ("kl", "l2")
# The quadratic KL model is KL ~= 0.5 x^T H x; the factor 2 inverts the 0.5.
KL_QUAD_FACTOR = 2.0
METRIC_KEYS = ("pcpo_projected_frac", "pcpo_shift", "pcpo_rescale")


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a.double().reshape(-1), b.double().reshape(-1)))


class PCPOBlender(Blender):
    """PCPO's reward step projected onto the linearized cost half-space (module docstring).

    Args:
        target_kl: delta of the reward step's trust region.
        projection: "kl" (F-metric projection, the paper's default) or "l2" (Euclidean).
        rescale: shrink a projected step whose 0.5 x^T F x (the preconditioner's `quad`)
            exceeds target_kl back onto that boundary (see the module docstring).

    Degenerate cases: q <= 0 (no reward gradient) gives no reward step (x_half = 0, then the
    projection alone); g_c . L^-1 g_c <= 0 (no cost gradient) gives no projection. Non-finite
    scalars give a NaN step, which the update loop counts and skips. `metrics()`
    (read-and-reset): the fraction of calls that projected, and the mean multiplier of the
    projection (`pcpo_shift`, 0 when none), the mean length factor of `rescale` (1 when none).
    """

    def __init__(self, target_kl: float = 0.01, projection: str = "kl", rescale: bool = False) -> None:
        if not (isinstance(target_kl, int | float) and math.isfinite(target_kl) and target_kl > 0):
            raise ValueError(f"target_kl must be a finite number > 0, got {target_kl!r}")
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}; got {projection!r}")
        if not isinstance(rescale, bool):
            raise ValueError(f"rescale must be true or false, got {rescale!r}")
        self.target_kl, self.projection, self.rescale = float(target_kl), projection, rescale
        self._sums = dict.fromkeys(METRIC_KEYS, 0.0)
        self._calls = 0

    def blend(self, d: Directions, precond: Preconditioner) -> torch.Tensor:
        if d.g_c is None or d.x_c is None:
            raise ValueError("PCPOBlender needs the cost gradient and direction (got None)")
        q = _dot(d.g_r, d.x_r)
        metric_dir = d.x_c if self.projection == "kl" else d.g_c  # L^-1 g_c
        norm = _dot(d.g_c, metric_dir)  # g_c . L^-1 g_c
        c = d.ep_cost - d.cost_limit
        if not all(math.isfinite(v) for v in (q, norm, c)):
            return torch.full_like(d.x_r, math.nan)
        scale = math.sqrt(KL_QUAD_FACTOR * self.target_kl / q) if q > 0.0 else 0.0
        half = scale * d.x_r
        violation = c + _dot(d.g_c, half)  # linearized constraint at x_half
        shift = violation / norm if violation > 0.0 and norm > 0.0 else 0.0
        step = half - shift * metric_dir if shift > 0.0 else half
        factor = self._shrink(step, precond) if self.rescale and shift > 0.0 else 1.0
        self._calls += 1
        self._sums["pcpo_projected_frac"] += float(shift > 0.0)
        self._sums["pcpo_shift"] += shift
        self._sums["pcpo_rescale"] += factor
        return factor * step if factor < 1.0 else step

    def _shrink(self, step: torch.Tensor, precond: Preconditioner) -> float:
        """min(1, sqrt(2 delta / step^T F step)); 1 when the quadratic form is unusable."""
        quad = float(precond.quad(step))
        if not (quad > 0.0 and math.isfinite(quad)):
            return 1.0
        return min(1.0, math.sqrt(KL_QUAD_FACTOR * self.target_kl / quad))

    def metrics(self) -> dict[str, float]:
        out = {k: v / self._calls for k, v in self._sums.items()} if self._calls else {}
        self._sums, self._calls = dict.fromkeys(METRIC_KEYS, 0.0), 0
        return out
