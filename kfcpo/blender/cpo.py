"""CPO blender (Achiam et al. 2017, section 6.1 and appendix 10.2): the trust-region QP

    max_x  g_r . x   s.t.   c + g_c . x <= 0,   0.5 x^T H x <= delta

in closed form from q = g_r . x_r, r = g_r . x_c, s = g_c . x_c (x = H^-1 g from the
preconditioner, so H is whatever curvature it inverts, damping included) and c = Jc - d.

Dual (maximize over lambda > 0, nu >= 0):
    h(lambda, nu) = -(q - 2 r nu + s nu^2) / (2 lambda) + nu c - lambda delta,
    step = (x_r - nu x_c) / lambda,   nu*(lambda) = max(0, (lambda c + r) / s).
With the ascent convention for both gradients the multiplier is (lambda c + r) / s: the
paper prints (lambda c - r) / s, which is its minimization form (g the loss gradient); the
sign was checked against a generic solver (tests/test_cpo.py). Substituting nu*:
    nu* > 0:  h_a(lambda) = -(A / lambda + B lambda) / 2 + r c / s,  A = q - r^2/s, B = 2 delta - c^2/s
    nu* = 0:  h_b(lambda) = -(q / lambda + 2 delta lambda) / 2
each concave, so its maximum over its interval is its stationary point projected onto it.

Cases (numbered as in the common reference implementation):
    0  infeasible: c > 0 and B <= 0 (the trust region misses the half-space): recovery step
       -sqrt(2 delta / s) x_c, the largest decrease of the linearized cost in the region;
    1  c > 0, B > 0: infeasible now, feasible points in the region: dual solution;
    2  c <= 0, B > 0: feasible, the constraint may bind: dual solution;
    3  c <= 0, B <= 0: the whole region is feasible: the reward step sqrt(2 delta / q) x_r;
    4  s <= 0 and c <= 0: the cost does not move to first order: the reward step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kfcpo.blender.base import Blender, Directions
from kfcpo.preconditioner.base import Preconditioner

# The quadratic KL model is KL ~= 0.5 x^T H x; the factor 2 inverts the 0.5.
KL_QUAD_FACTOR = 2.0
# Below this A / q (1 - cos^2 of g_r and g_c in the H metric) the two directions are treated
# as parallel: h_a's stationary point sqrt(A / B) -> 0 and (x_r - nu x_c) / lambda is 0 / 0.
PARALLEL_TOL = 1e-10
METRIC_KEYS = ("cpo_case", "cpo_lambda", "cpo_nu")


@dataclass(frozen=True)
class CPOSolution:
    """step = coef_r * x_r + coef_c * x_c; lam, nu the dual variables (lam 0 when the
    solution is not the dual one: recovery, parallel and degenerate branches)."""

    case: int
    coef_r: float
    coef_c: float
    lam: float = 0.0
    nu: float = 0.0


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def _reward_step(q: float, delta: float, case: int) -> CPOSolution:
    """The trust-region step along x_r (TRPO's), or none when there is no reward gradient."""
    if q <= 0.0:
        return CPOSolution(case, 0.0, 0.0)
    lam = math.sqrt(q / (KL_QUAD_FACTOR * delta))
    return CPOSolution(case, 1.0 / lam, 0.0, lam=lam)


def _parallel(r: float, s: float, c: float, delta: float, case: int) -> CPOSolution:
    """x_r parallel to x_c (x_r = (r / s) x_c): a 1-D problem along u = x_c / sqrt(s) (unit
    in the H metric), x = tau u with |tau| <= sqrt(2 delta) and c + sqrt(s) tau <= 0."""
    radius, bound = math.sqrt(KL_QUAD_FACTOR * delta), -c / math.sqrt(s)
    if r > 0.0:
        tau = min(radius, bound)
    elif r < 0.0:
        tau = -radius
    else:  # no reward gradient: the least move that satisfies the constraint
        tau = min(0.0, bound)
    return CPOSolution(case, 0.0, tau / math.sqrt(s))


def _dual(q: float, r: float, s: float, c: float, delta: float, case: int) -> CPOSolution:
    """Cases 1 and 2: maximize the dual over the two lambda intervals (nu* > 0 / nu* = 0)."""
    a_coef, b_coef = max(q - r * r / s, 0.0), KL_QUAD_FACTOR * delta - c * c / s
    # nu*(lambda) > 0 iff lambda c + r > 0; split lambda > 0 at lambda = -r / c.
    if c > 0.0:
        edge = max(0.0, -r / c)
        interval_a, interval_b = (edge, math.inf), (0.0, edge)
    elif c < 0.0:
        edge = max(0.0, -r / c)
        interval_a, interval_b = (0.0, edge), (edge, math.inf)
    else:
        interval_a, interval_b = ((0.0, math.inf), (0.0, 0.0)) if r > 0.0 else ((0.0, 0.0), (0.0, math.inf))

    def h_a(lam: float) -> float:
        return -0.5 * (a_coef / lam + b_coef * lam) + r * c / s

    def h_b(lam: float) -> float:
        return -0.5 * (q / lam + KL_QUAD_FACTOR * delta * lam)

    candidates = []
    if interval_a[1] > 0.0:
        lam_a = _clip(math.sqrt(a_coef / b_coef), *interval_a)
        if lam_a > 0.0:
            candidates.append((h_a(lam_a), lam_a))
    if interval_b[1] > 0.0:
        lam_b = _clip(math.sqrt(q / (KL_QUAD_FACTOR * delta)), *interval_b)
        if lam_b > 0.0:
            candidates.append((h_b(lam_b), lam_b))
    _, lam = max(candidates)
    nu = max(0.0, (lam * c + r) / s)
    return CPOSolution(case, 1.0 / lam, -nu / lam, lam=lam, nu=nu)


def solve_cpo_qp(q: float, r: float, s: float, c: float, delta: float) -> CPOSolution:
    """The QP's solution as coefficients on (x_r, x_c); all inputs finite, delta > 0."""
    if not s > 0.0:
        # g_c carries no curvature: the constraint does not depend on the step to first
        # order. Feasible: the reward step; infeasible: nothing reduces the cost, no step.
        return _reward_step(q, delta, case=4) if c <= 0.0 else CPOSolution(0, 0.0, 0.0)
    b_coef = KL_QUAD_FACTOR * delta - c * c / s
    if c > 0.0 and b_coef <= 0.0:
        return CPOSolution(0, 0.0, -math.sqrt(KL_QUAD_FACTOR * delta / s))
    if c <= 0.0 and b_coef <= 0.0:
        return _reward_step(q, delta, case=3)
    case = 1 if c > 0.0 else 2
    if q - r * r / s <= PARALLEL_TOL * q or q <= 0.0:
        return _parallel(r, s, c, delta, case)
    return _dual(q, r, s, c, delta, case)


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.dot(a.double().reshape(-1), b.double().reshape(-1)))


class CPOBlender(Blender):
    """CPO's step (see the module docstring).

    Args:
        target_kl: delta of the trust region 0.5 x^T H x <= delta.

    A non-finite q, r, s or c gives a NaN step, which the update loop counts and skips
    (`nonfinite_steps`) rather than guessing a direction. `metrics()` (read-and-reset):
    mean case number, lambda and nu over the calls since the last read.
    """

    def __init__(self, target_kl: float = 0.01) -> None:
        if not (isinstance(target_kl, int | float) and math.isfinite(target_kl) and target_kl > 0):
            raise ValueError(f"target_kl must be a finite number > 0, got {target_kl!r}")
        self.target_kl = float(target_kl)
        self._sums = dict.fromkeys(METRIC_KEYS, 0.0)
        self._calls = 0

    def solve(self, d: Directions) -> CPOSolution | None:
        """The QP's solution for these directions; None when a scalar is not finite."""
        if d.g_c is None or d.x_c is None:
            raise ValueError("CPOBlender needs the cost direction x_c (got None)")
        q, r, s = _dot(d.g_r, d.x_r), _dot(d.g_r, d.x_c), _dot(d.g_c, d.x_c)
        c = d.ep_cost - d.cost_limit
        if not all(math.isfinite(v) for v in (q, r, s, c)):
            return None
        return solve_cpo_qp(q, r, s, c, self.target_kl)

    def blend(self, d: Directions, precond: Preconditioner) -> torch.Tensor:
        sol = self.solve(d)
        if sol is None:
            return torch.full_like(d.x_r, math.nan)
        assert d.x_c is not None  # checked in solve
        self._calls += 1
        for key, value in zip(METRIC_KEYS, (sol.case, sol.lam, sol.nu), strict=True):
            self._sums[key] += value
        return sol.coef_r * d.x_r + sol.coef_c * d.x_c

    def metrics(self) -> dict[str, float]:
        out = {k: v / self._calls for k, v in self._sums.items()} if self._calls else {}
        self._sums, self._calls = dict.fromkeys(METRIC_KEYS, 0.0), 0
        return out
