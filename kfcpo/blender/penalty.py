"""Exact-penalty blender for P3O (Zhang et al. 2022, eq. 9-11): one objective to ascend,

    L = E[min(rho A_r, clip(rho) A_r)] - kappa * ReLU(E[max(rho A_c, clip(rho) A_c)] + c)

with rho = pi_theta / pi_old, clip(rho) = clamp(rho, 1 - eps, 1 + eps) and c = Jc - d. Both
surrogates are the pessimistic PPO clip: the reward one the smaller value, the cost one the
larger (the cost ratio is clipped too, as in the paper). The paper writes the minimization
form L_R + kappa max(0, L_C) with L_C = E[...] + (1 - gamma)(Jc - d); the (1 - gamma)
scale is not used here, the constraint term is c = Jc - d as in the common public
reference implementation (docs/algorithm.md 5).

The cost is folded into the objective (`needs_cost_direction = False`), so any
preconditioner gives the step: with `identity` it goes through Adam, as in the paper;
with a natural-gradient preconditioner set `scale: trust_region`.
"""

from __future__ import annotations

import math

import torch

from kfcpo.blender.base import Blender, Directions, ratio
from kfcpo.data.batch import Batch
from kfcpo.dist import all_mean
from kfcpo.models.actor import GaussianActor
from kfcpo.preconditioner.base import Preconditioner

SCALES = ("none", "trust_region")
# The quadratic KL model is KL ~= 0.5 x^T F x; the factor 2 inverts the 0.5.
KL_QUAD_FACTOR = 2.0
METRIC_KEYS = ("penalty_active_frac", "cost_surrogate")


class PenaltyBlender(Blender):
    """P3O's exact-penalty objective (module docstring).

    Args:
        kappa: penalty weight (> 0); the paper shows kappa above a finite threshold makes the
            penalty exact; 20 by default (the common reference setup).
        clip: PPO clip ratio eps (> 0).
        scale: "none" (the step is x_r as is: Adam's gradient with `identity`) or
            "trust_region" (x_r scaled to 0.5 x^T F x = target_kl, for natural gradients).
        target_kl: delta for scale=trust_region.

    Across ranks the ReLU is decided on the rank-averaged cost surrogate (its value is
    reduced, its gradient stays local and is averaged by the update loop), so the penalty is
    active on all ranks or on none, exactly as on one process with the whole batch.
    """

    needs_cost_direction = False

    def __init__(
        self, kappa: float = 20.0, clip: float = 0.2, scale: str = "none", target_kl: float = 0.01
    ) -> None:
        if not (isinstance(kappa, int | float) and math.isfinite(kappa) and kappa > 0):
            raise ValueError(f"kappa must be a finite number > 0, got {kappa!r}")
        if not (isinstance(clip, int | float) and 0 < clip < 1):
            raise ValueError(f"clip must be in (0, 1), got {clip!r}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
        if not (isinstance(target_kl, int | float) and math.isfinite(target_kl) and target_kl > 0):
            raise ValueError(f"target_kl must be a finite number > 0, got {target_kl!r}")
        self.kappa, self.clip, self.scale, self.target_kl = float(kappa), float(clip), scale, float(target_kl)
        self.violation = 0.0  # c = Jc - d, set once per epoch by observe_cost
        self._sums = dict.fromkeys(METRIC_KEYS, 0.0)
        self._calls = 0

    def observe_cost(self, ep_cost: float, cost_limit: float) -> None:
        self.violation = float(ep_cost - cost_limit)

    def surrogates(self, actor: GaussianActor, mb: Batch) -> tuple[torch.Tensor, None]:
        rho = ratio(actor, mb)
        clipped = torch.clamp(rho, 1.0 - self.clip, 1.0 + self.clip)
        reward = torch.min(rho * mb.adv_r, clipped * mb.adv_r).mean()
        cost = torch.max(rho * mb.adv_c, clipped * mb.adv_c).mean()
        # Value of the rank mean, gradient of this rank's share (averaged by the caller).
        cost = cost + (all_mean(cost.detach()) - cost.detach())
        excess = cost + self.violation
        if torch.is_grad_enabled():  # count the update's evaluations, not a guard's probes
            self._calls += 1
            self._sums["penalty_active_frac"] += float(excess.detach() > 0)
            self._sums["cost_surrogate"] += float(cost.detach())
        return reward - self.kappa * torch.relu(excess), None

    def blend(self, d: Directions, precond: Preconditioner) -> torch.Tensor:
        if self.scale == "none":
            return d.x_r
        quad = float(precond.quad(d.x_r))
        if not (quad > 0.0 and math.isfinite(quad)):
            return torch.zeros_like(d.x_r)
        return math.sqrt(KL_QUAD_FACTOR * self.target_kl / quad) * d.x_r

    def metrics(self) -> dict[str, float]:
        out = {k: v / self._calls for k, v in self._sums.items()} if self._calls else {}
        self._sums, self._calls = dict.fromkeys(METRIC_KEYS, 0.0), 0
        return out
