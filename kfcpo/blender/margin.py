"""Margin-aware blender (docs/algorithm.md 2.2, 3.4): sigmoid-weighted blend, projection on conflict.

u_r = x_r (reward ascent), u_c = -x_c (cost descent). When they conflict (<u_r, u_c> < 0)
one is projected orthogonal to the other (`project`), then u = (1 - w_c) u_r + w_c u_c with
w_c = sigmoid(k (Jc - lambda d) / d), and the step nu u is scaled into the quadratic trust
region 0.5 u^T F u <= delta of the *blended* direction.

Inner products (`inner`): "euclidean", as the paper writes them, or "fisher",
<a, b>_F = a^T F b, the metric the natural directions live in. It needs no extra curvature
product: F u_r = g_r and F u_c = -g_c (the preconditioner's own F). Only in the Fisher metric
is the projected cost step guaranteed to be reward-neutral (g_r . u_c' = 0) and not to
raise the cost (g_c . u_c' = -||u_c'||_F^2 <= 0) to first order; the Euclidean projection of
natural directions can raise it.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from kfcpo.blender.base import Blender, Directions
from kfcpo.preconditioner.base import Preconditioner

PROJECT_MODES = ("cost", "reward", "both", "none", "adaptive")
INNER_PRODUCTS = ("euclidean", "fisher")
# The quadratic KL model is KL ~= 0.5 * u^T F u; the factor 2 inverts the 0.5.
KL_QUAD_FACTOR = 2.0
# nu never enlarges a step: a direction already inside the trust region is taken as is.
MAX_NU = 1.0
# Metric names, accumulated per call and averaged in `metrics()`.
METRIC_KEYS = ("w_c", "nu", "projected_frac", "cos_rc")
# w_c == 1 spends the whole step on the cost; the default cap keeps the paper's blend.
NO_CAP = 1.0


def _sigmoid(z: float) -> float:
    # tanh form: no overflow for large |z| (math.exp(-z) overflows past z ~ -709).
    return 0.5 * (1.0 + math.tanh(0.5 * z))


def _require_number(ep_cost: float) -> None:
    if math.isnan(ep_cost):
        raise ValueError("ep_cost is NaN: the episode-cost estimate must be a number")


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    # float64 so the projection coefficient is accurate for float32 directions.
    return float(torch.dot(a.double().reshape(-1), b.double().reshape(-1)))


def _reject(v: torch.Tensor, onto: torch.Tensor, metric_onto: torch.Tensor) -> torch.Tensor:
    """v minus its component along `onto` in the metric M, given M onto (v unchanged when
    `onto` has no usable norm)."""
    nn = _dot(onto, metric_onto)
    if not (nn > 0.0 and math.isfinite(nn)):
        return v
    return v - (_dot(v, metric_onto) / nn) * onto


def _unit(v: torch.Tensor, metric_v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(v, M v) scaled so that v^T M v = 1 (unchanged when v has no usable norm)."""
    norm2 = _dot(v, metric_v)
    if not (norm2 > 0.0 and math.isfinite(norm2)):
        return v, metric_v
    scale = 1.0 / math.sqrt(norm2)
    return v * scale, metric_v * scale


class MarginBlender(Blender):
    """KFCPO's blender.

    Args:
        k: sigmoid steepness (> 0). With `normalize` it acts on the margin in units of d.
        margin: lambda (>= 0); the weight is 0.5 at Jc = lambda * d.
        normalize: True: w_c = sigmoid(k (Jc - lambda d) / d) (docs/algorithm.md 2.2: k means
            the same at any cost limit); False: the paper's sigmoid(k (Jc - lambda d)).
        project: on conflict, "cost" projects u_c orthogonal to u_r (paper), "reward" u_r
            orthogonal to u_c, "both" each against the original other, "none" neither;
            "adaptive": "cost" while w_c < 0.5 (below the margin centre, reward leads) and
            "reward" from w_c >= 0.5 on (cost leads: the reward part must not undo it).
        target_kl: delta of the quadratic trust region 0.5 step^T F step <= delta.
        to_boundary: False: nu = min(1, sqrt(2 delta / quad(u))) (the paper: a step is never
            enlarged); True: nu = sqrt(2 delta / quad(u)), every step reaches the region's
            boundary as in TRPO and CPO.
        unit_directions: scale u_r and u_c to unit norm in the `inner` metric before the
            blend, so w_c is the cost direction's share of the step whatever the two
            gradients' magnitudes (False: the paper's blend of the raw directions).
        inner: "euclidean" (paper) or "fisher" inner product for the conflict test, the
            projection and cos_rc (module docstring).
        max_cost_weight: cap on w_c in (0, 1] (docs/algorithm.md 3.5). Below 1 the step keeps
            a reward share while the cost leads; with `project` "adaptive" and the Fisher
            metric that share is orthogonal to the cost direction, so it costs the cost
            descent little (1 - w / sqrt(w^2 + (1 - w)^2) of its rate at most).
        trend: lead of the cost estimate (>= 0; docs/algorithm.md 3.5): w_c is computed at
            Jc + trend (Jc - Jc_prev), Jc_prev the estimate of the previous epoch
            (`observe_cost`), so the blend anticipates a cost that is rising or falling
            instead of reacting one window later. 0: the paper's w_c of Jc alone.

    Degenerate cases (a NaN step only for a non-finite u):
        * d == 0 with `normalize`: the limit d -> 0+ of the normalized weight, i.e. w_c = 1
          when Jc > 0 (any cost violates a zero limit) and sigmoid(-k lambda) when Jc == 0.
        * u non-finite (a NaN or inf gradient or direction): a NaN step, which the update
          loop counts and skips (`nonfinite_steps`), as for the CPO and PCPO blenders; the
          metrics record nu = 0 and stay finite.
        * quad(u) <= 0 or non-finite while u is finite and != 0: the trust region cannot be
          measured, so no step is taken (nu = 0, zero step) rather than an unbounded one.
        * u == 0: zero step, nu = 1 (nothing to scale).
        * cos_rc (in the `inner` metric) is 0 when either direction is zero (no angle; counts as no conflict).
        * Jc NaN or d < 0 / non-finite: ValueError — upstream bug, not a state to blend from.

    `metrics()` returns the per-call means since the previous `metrics()` call and resets
    them (one read per epoch gives per-epoch values); {} if `blend` was not called.
    """

    def __init__(
        self,
        k: float = 10.0,
        margin: float = 0.7,
        normalize: bool = True,
        project: str = "cost",
        target_kl: float = 0.01,
        inner: str = "euclidean",
        to_boundary: bool = False,
        unit_directions: bool = False,
        max_cost_weight: float = NO_CAP,
        trend: float = 0.0,
    ) -> None:
        if not (isinstance(k, int | float) and math.isfinite(k) and k > 0):
            raise ValueError(f"k must be a finite number > 0, got {k!r}")
        if not (isinstance(margin, int | float) and math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be true or false, got {normalize!r}")
        if project not in PROJECT_MODES:
            raise ValueError(f"project must be one of {', '.join(PROJECT_MODES)}; got {project!r}")
        if not (isinstance(target_kl, int | float) and math.isfinite(target_kl) and target_kl > 0):
            raise ValueError(f"target_kl must be a finite number > 0, got {target_kl!r}")
        if inner not in INNER_PRODUCTS:
            raise ValueError(f"inner must be one of {', '.join(INNER_PRODUCTS)}; got {inner!r}")
        if not (isinstance(max_cost_weight, int | float) and 0 < max_cost_weight <= 1):
            raise ValueError(f"max_cost_weight must be a number in (0, 1], got {max_cost_weight!r}")
        if not (isinstance(trend, int | float) and math.isfinite(trend) and trend >= 0):
            raise ValueError(f"trend must be a finite number >= 0, got {trend!r}")
        self.max_cost_weight, self.trend = float(max_cost_weight), float(trend)
        # Jc of the last two epochs (None until observed): the trend's difference.
        self._jc_last: float | None = None
        self._jc_prev: float | None = None
        for key, flag in (("to_boundary", to_boundary), ("unit_directions", unit_directions)):
            if not isinstance(flag, bool):
                raise ValueError(f"{key} must be true or false, got {flag!r}")
        self.to_boundary, self.unit_directions = to_boundary, unit_directions
        self.k, self.margin, self.normalize = float(k), float(margin), normalize
        self.inner = inner
        self.project, self.target_kl = project, float(target_kl)
        self._reset()

    # -- pieces, public so tests and diagnostics can check them one by one --------------
    def cost_weight(self, ep_cost: float, cost_limit: float) -> float:
        """w_c for episode cost Jc = ep_cost and limit d = cost_limit."""
        _require_number(ep_cost)
        if not (math.isfinite(cost_limit) and cost_limit >= 0):
            raise ValueError(f"cost_limit must be a finite number >= 0, got {cost_limit!r}")
        excess = ep_cost - self.margin * cost_limit
        if not self.normalize:
            return _sigmoid(self.k * excess)
        if cost_limit == 0.0:  # limit d -> 0+ (see class docstring)
            return 1.0 if ep_cost > 0 else _sigmoid(-self.k * self.margin)
        return _sigmoid(self.k * excess / cost_limit)

    def lead_cost(self, ep_cost: float) -> float:
        """The estimate w_c is computed at: Jc + trend (Jc - Jc_prev) once two epochs have
        been observed, Jc otherwise."""
        if self.trend == 0.0 or self._jc_prev is None:
            return ep_cost
        return ep_cost + self.trend * (ep_cost - self._jc_prev)

    def observe_cost(self, ep_cost: float, cost_limit: float) -> None:
        _require_number(ep_cost)
        self._jc_prev, self._jc_last = self._jc_last, float(ep_cost)

    def state_dict(self) -> dict[str, Any]:
        return {"jc_last": self._jc_last, "jc_prev": self._jc_prev}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Checkpoints from before the trend term hold {}: the trend restarts from Jc alone.
        self._jc_last, self._jc_prev = state.get("jc_last"), state.get("jc_prev")

    def project_directions(
        self, u_r: torch.Tensor, u_c: torch.Tensor, f_r: torch.Tensor, f_c: torch.Tensor, w_c: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(u_r', u_c', projected): the conflict rule of `project`, against the originals.
        f_r, f_c are the metric applied to u_r, u_c (themselves when Euclidean); w_c picks
        the rule of the "adaptive" mode."""
        mode = self.project
        if mode == "adaptive":
            mode = "reward" if w_c >= 0.5 else "cost"
        if mode == "none" or not _dot(u_r, f_c) < 0.0:
            return u_r, u_c, False
        new_r = _reject(u_r, u_c, f_c) if mode in ("reward", "both") else u_r
        new_c = _reject(u_c, u_r, f_r) if mode in ("cost", "both") else u_c
        return new_r, new_c, True

    def metric_images(self, d: Directions) -> tuple[torch.Tensor, torch.Tensor]:
        """(M u_r, M u_c) for u_r = x_r, u_c = -x_c: M = I, or M = F where F x = g."""
        if self.inner == "fisher":
            return d.g_r, -d.g_c
        return d.x_r, -d.x_c

    def step_size(self, u: torch.Tensor, precond: Preconditioner) -> float:
        """nu = min(1, sqrt(2 delta / quad(u))), 0 when the region cannot be measured."""
        if not bool(torch.isfinite(u).all()):
            return 0.0
        if not bool(u.any()):
            return MAX_NU
        q = float(precond.quad(u))
        if not (q > 0.0 and math.isfinite(q)):
            return 0.0
        nu = math.sqrt(KL_QUAD_FACTOR * self.target_kl / q)
        return nu if self.to_boundary else min(MAX_NU, nu)

    # -- the contract ------------------------------------------------------------------
    def blend(self, d: Directions, precond: Preconditioner) -> torch.Tensor:
        if d.x_c is None or d.g_c is None:
            raise ValueError("MarginBlender needs the cost gradient g_c and direction x_c (got None)")
        u_r, u_c = d.x_r, -d.x_c
        f_r, f_c = self.metric_images(d)
        # The adaptive rule follows the margin's own weight; the cap only shapes the blend.
        w_margin = self.cost_weight(self.lead_cost(d.ep_cost), d.cost_limit)
        w_c = min(self.max_cost_weight, w_margin)
        cos_rc = self._cos(u_r, u_c, f_r, f_c)
        if self.unit_directions:
            (u_r, f_r), (u_c, f_c) = _unit(u_r, f_r), _unit(u_c, f_c)
        u_r, u_c, projected = self.project_directions(u_r, u_c, f_r, f_c, w_margin)
        u = (1.0 - w_c) * u_r + w_c * u_c
        nu = self.step_size(u, precond)
        self._record(w_c=w_c, nu=nu, projected_frac=float(projected), cos_rc=cos_rc)
        if not bool(torch.isfinite(u).all()):
            return torch.full_like(u, math.nan)
        return nu * u if nu > 0.0 else torch.zeros_like(u)

    def metrics(self) -> dict[str, float]:
        out = {} if self._calls == 0 else {k: v / self._calls for k, v in self._sums.items()}
        self._reset()
        return out

    # -- internals ---------------------------------------------------------------------
    @staticmethod
    def _cos(a: torch.Tensor, b: torch.Tensor, f_a: torch.Tensor, f_b: torch.Tensor) -> float:
        norms = _dot(a, f_a) * _dot(b, f_b)
        if not (norms > 0.0 and math.isfinite(norms)):
            return 0.0
        return _dot(a, f_b) / math.sqrt(norms)

    def _record(self, **values: float) -> None:
        self._calls += 1
        for key, v in values.items():
            self._sums[key] += v

    def _reset(self) -> None:
        self._calls = 0
        self._sums = dict.fromkeys(METRIC_KEYS, 0.0)
