"""Dense, sample-by-sample oracles for the curvature of a small GaussianActor (float64).

They are deliberately the slow, obvious computations: per-sample autograd Jacobians, a
KL Hessian by torch.func, Python loops over states, so that the fast preconditioners are
checked against definitions rather than against a second copy of the same trick.

Below them, optimality oracles for the blenders' small convex programs (CPO's QP, PCPO's
projection): a KKT checker and closed forms by geometry in whitened coordinates, none of
which depends on a generic solver converging.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn
from torch.distributions import Normal, kl_divergence
from torch.func import functional_call, hessian, jacrev, vmap

from kfcpo.flat import get_flat, params_of
from kfcpo.models.actor import GaussianActor
from kfcpo.preconditioner.base import Preconditioner
from kfcpo.preconditioner.kfac import one_thread

# Fisher information of log sigma for a univariate Gaussian.
LOG_STD_FISHER = 2.0


# Tiny float64 problems run faster on one thread; the same helper K-FAC uses.
single_thread = one_thread


def make_actor(
    obs_dim: int, act_dim: int, hidden: tuple[int, ...], seed: int, log_std: list[float] | None = None
) -> GaussianActor:
    """A float64 actor with non-trivial weights (the default 0.01 output gain would make
    the hidden-layer curvature vanish) and, optionally, distinct per-dimension log-stds."""
    torch.manual_seed(seed)
    actor = GaussianActor(obs_dim, act_dim, hidden).double()
    with torch.no_grad():
        for m in actor.mean_net:
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, m.in_features**-0.5)
                m.bias.normal_(0.0, 0.3)
        if log_std is not None:
            actor.log_std.copy_(torch.tensor(log_std, dtype=torch.float64))
    return actor


def _unflattener(actor: GaussianActor) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """flat vector (kfcpo.flat order) -> {parameter name: view}, for functional_call."""
    names = [n for n, p in actor.named_parameters() if p.requires_grad]
    shapes = [p.shape for p in params_of(actor)]

    def unflatten(v: torch.Tensor) -> dict[str, torch.Tensor]:
        out, at = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            k = shape.numel()
            out[name] = v[at : at + k].view(shape)
            at += k
        return out

    return unflatten


def dense_fisher(actor: GaussianActor, obs: torch.Tensor) -> torch.Tensor:
    """E_x[J_theta^T Sigma^-1 J_theta] for the mean parameters plus the exact log-std block
    2 I (the mean/log-std cross terms vanish in expectation: E[eps (eps^2 - 1)] = 0; the
    KL-Hessian oracle below computes them and the tests compare the two)."""
    theta = get_flat(actor)
    unflatten = _unflattener(actor)
    inv_var = torch.exp(-2.0 * actor.log_std.detach())

    def mean_of(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(actor, unflatten(v), (x[None],)).mean[0]

    # One Jacobian per state (vmap batches the per-state jacrev): (N, act_dim, P), zero
    # columns for log_std.
    jac = vmap(jacrev(mean_of), in_dims=(None, 0))(theta, obs)
    fisher = torch.einsum("nkp,k,nkq->pq", jac, inv_var, jac)
    fisher /= obs.shape[0]
    at = log_std_offset(actor)
    k = actor.log_std.numel()
    fisher[at : at + k, at : at + k] += LOG_STD_FISHER * torch.eye(k, dtype=torch.float64)
    return fisher


def kl_hessian_fisher(actor: GaussianActor, obs: torch.Tensor) -> torch.Tensor:
    """Hessian of mean_x KL(pi_theta0(.|x) || pi_theta(.|x)) at theta = theta0: the full
    Fisher, cross terms included, by a route independent of `dense_fisher`."""
    theta0 = get_flat(actor)
    unflatten = _unflattener(actor)
    with torch.no_grad():
        fixed = actor.distribution(obs)
        fixed = Normal(fixed.mean.clone(), fixed.stddev.clone())

    def kl(v: torch.Tensor) -> torch.Tensor:
        dist = functional_call(actor, unflatten(v), (obs,))
        return kl_divergence(fixed, dist).sum(-1).mean()

    return hessian(kl)(theta0)


def log_std_offset(actor: GaussianActor) -> int:
    at = 0
    for p in params_of(actor):
        if p is actor.log_std:
            return at
        at += p.numel()
    raise ValueError("log_std is not trainable")


def layer_factors(actor: GaussianActor, obs: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(A_l, G_l) by their definitions, one state at a time: a = the layer's input with a 1
    appended, G = mean_x J^T Sigma^-1 J with J = d mu / d s (s the layer's output)."""
    modules = list(actor.mean_net)
    linear_at = [i for i, m in enumerate(modules) if isinstance(m, nn.Linear)]
    inv_var = torch.exp(-2.0 * actor.log_std.detach())
    out = []
    for i in linear_at:
        layer = modules[i]
        head, tail = nn.Sequential(*modules[:i]), nn.Sequential(*modules[i + 1 :])
        a_sum = torch.zeros(layer.in_features + 1, layer.in_features + 1, dtype=torch.float64)
        g_sum = torch.zeros(layer.out_features, layer.out_features, dtype=torch.float64)
        for x in obs:
            with torch.no_grad():
                a = torch.cat([head(x[None])[0], torch.ones(1, dtype=torch.float64)])
                s = layer(a[None, :-1])[0]
            jac = torch.autograd.functional.jacobian(lambda s, tail=tail: tail(s[None])[0], s)
            a_sum += torch.outer(a, a)
            g_sum += jac.T @ (inv_var[:, None] * jac)
        out.append((a_sum / obs.shape[0], g_sum / obs.shape[0]))
    return out


def damped_solve(fisher: torch.Tensor, g: torch.Tensor, damping: float) -> torch.Tensor:
    eye = torch.eye(fisher.shape[0], dtype=fisher.dtype)
    return torch.linalg.solve(fisher + damping * eye, g)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).norm() / ref.norm())


def cosine(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(x @ y / (x.norm() * y.norm()))


class MatrixPrecond(Preconditioner):
    """F = M exactly: solve(g) = M^-1 g, quad(v) = v^T M v. No policy is touched."""

    def __init__(self, m: torch.Tensor) -> None:
        super().__init__(actor=None)  # type: ignore[arg-type]
        self.m = m

    def update(self, obs: torch.Tensor) -> None:
        pass

    def solve(self, g: torch.Tensor) -> torch.Tensor:
        return torch.linalg.solve(self.m, g)

    def quad(self, v: torch.Tensor) -> torch.Tensor:
        return v @ self.m @ v


class PlainPrecond(Preconditioner):
    """F = I with the default apply_step (theta += step), for guard tests."""

    def update(self, obs: torch.Tensor) -> None:
        pass

    def solve(self, g: torch.Tensor) -> torch.Tensor:
        return g

    def quad(self, v: torch.Tensor) -> torch.Tensor:
        return v @ v


# --- Optimality oracles for the blenders' small convex programs (float64) -----------------
# The CPO step solves   max g.x  s.t.  c + b.x <= 0,  0.5 x^T F x <= delta   and the PCPO step
# is the projection   min (x - p)^T M (x - p)  s.t.  c + b.x <= 0.  Both are convex (a linear
# or concave quadratic objective over an ellipsoid and/or a half-space), so the KKT conditions
# are sufficient: a point that satisfies them IS the optimum; with a strictly feasible point
# (Slater) they are also necessary, so the true optimum always passes. Checking them needs no
# solver, hence no solver that must converge: these oracles cannot fail on their own.

KKT_TOL = 1e-8


def spd_problem(seed: int, dim: int) -> tuple[MatrixPrecond, torch.Tensor, torch.Tensor]:
    """A random positive definite F = A A^T + 0.3 I (float64) and two random gradients."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, dtype=torch.float64, generator=gen)
    f = a @ a.T + 0.3 * torch.eye(dim, dtype=torch.float64)
    g_r = torch.randn(dim, dtype=torch.float64, generator=gen)
    g_c = torch.randn(dim, dtype=torch.float64, generator=gen)
    return MatrixPrecond(f), g_r, g_c


def whiten(metric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M^1/2, M^-1/2) by eigh: in y = M^1/2 x the metric M is Euclidean and a.x = (M^-1/2 a).y."""
    e, q = torch.linalg.eigh(metric)
    return q @ torch.diag(e.sqrt()) @ q.T, q @ torch.diag(e.rsqrt()) @ q.T


@dataclass(frozen=True)
class Constraint:
    """h(x) <= 0 at the point checked: its value, its gradient, and the scale of h (the
    value's natural unit) that the tolerances are relative to."""

    name: str
    value: float
    grad: np.ndarray
    scale: float = 1.0


@dataclass(frozen=True)
class KKTReport:
    """KKT conditions of  max f(x) s.t. h_i(x) <= 0  at a point, each as a relative number:
    violation = max_i h_i / scale_i (primal feasibility: <= 0), min_multiplier = min_i mu_i
    relative to |grad f| (dual feasibility: >= 0), stationarity = |grad f - sum_i mu_i grad h_i|
    relative to |grad f|, complementarity = max |h_i| / scale_i over the constraints that carry
    a multiplier (mu_i > 0 needs h_i = 0); multipliers = mu_i in the constraints' own units."""

    multipliers: dict[str, float]
    violation: float
    min_multiplier: float
    stationarity: float
    complementarity: float
    tried: str  # every active set tried: its multipliers and residual (for failure messages)

    def failures(self, tol: float = KKT_TOL) -> list[str]:
        out = []
        if self.violation > tol:
            out.append(f"primal infeasible: max h/scale = {self.violation:.3e}")
        if self.min_multiplier < -tol:
            out.append(f"dual infeasible: a multiplier is {self.min_multiplier:.3e} < 0")
        if self.stationarity > tol:
            out.append(f"not stationary: relative residual {self.stationarity:.3e}")
        if self.complementarity > tol:
            out.append(f"complementary slackness: a constraint with mu > 0 has |h|/scale = "
                       f"{self.complementarity:.3e}")
        return out


def kkt_report(grad: ArrayLike, constraints: list[Constraint], *, scale: float | None = None,
               active_tol: float = KKT_TOL) -> KKTReport:
    """The KKT conditions of  max f(x) s.t. h_i(x) <= 0  at a point (grad = grad f there).

    The multipliers are recovered by least squares from stationarity, grad f = sum_i mu_i
    grad h_i, over the active constraints (|h_i| <= active_tol scale_i; an inactive one has
    mu_i = 0 by complementary slackness). A barely active constraint may or may not carry a
    multiplier, so every subset of the active ones is solved and, among those with mu >= 0,
    the least residual is kept (with two constraints: exact nonnegative least squares). When
    none of them is stationary, the unrestricted least squares over all active constraints is
    reported instead, negative multiplier included (it shows whether mu < 0 is what fails).
    `scale` is what the residual and multipliers are relative to (default |grad f|).
    """
    g = np.asarray(grad, dtype=np.float64)
    norm = float(np.linalg.norm(g)) if scale is None else float(scale)
    norm = norm if norm > 0.0 else 1.0
    values = np.array([cn.value / cn.scale for cn in constraints], dtype=np.float64)
    grads = [np.asarray(cn.grad, dtype=np.float64) / cn.scale for cn in constraints]
    active = [i for i, v in enumerate(values) if abs(v) <= active_tol]
    fits, lines = [], []  # (residual, multipliers relative to norm, all >= 0)
    for k in range(len(active) + 1):
        for subset in itertools.combinations(active, k):
            mu = np.zeros(len(constraints))
            if subset:
                a = np.stack([grads[i] for i in subset], axis=1)
                mu[list(subset)] = np.linalg.lstsq(a, g, rcond=None)[0] / norm
            resid = float(np.linalg.norm(g / norm - sum(m * gr for m, gr in zip(mu, grads, strict=True))))
            fits.append((resid, mu, bool((mu >= -active_tol).all())))
            names = ", ".join(f"{constraints[i].name}={mu[i] * norm / constraints[i].scale:.6g}"
                              for i in subset)
            lines.append(f"[{names or 'none active'}] residual {resid:.3e}")
    resid, mu, _ = min((fit for fit in fits if fit[2]), key=lambda fit: fit[0])
    if resid > active_tol:
        resid, mu, _ = fits[-1]
    carrying = values[mu > 0.0]
    return KKTReport(
        multipliers={cn.name: float(m * norm / cn.scale) for cn, m in zip(constraints, mu, strict=True)},
        violation=float(values.max(initial=-np.inf)),
        min_multiplier=float(mu.min(initial=0.0)),
        stationarity=resid,
        complementarity=float(np.abs(carrying).max(initial=0.0)),
        tried="; ".join(lines),
    )


def assert_kkt(report: KKTReport, tol: float = KKT_TOL) -> None:
    failures = report.failures(tol)
    assert not failures, f"KKT conditions fail: {'; '.join(failures)} (active sets tried: {report.tried})"


def trust_region_kkt(x: ArrayLike, g: ArrayLike, f: ArrayLike, delta: float,
                     half_space: tuple[ArrayLike, float] | None = None) -> KKTReport:
    """KKT of  max g.x  s.t.  0.5 x^T F x <= delta  [and c + b.x <= 0, half_space = (b, c)]
    at x: stationarity g = lam F x + nu b. The half-space's scale is sqrt(2 delta b^T F^-1 b),
    the range of b.x over the region."""
    x, g, f = (np.asarray(v, dtype=np.float64) for v in (x, g, f))
    cons = [Constraint("lam", 0.5 * x @ f @ x - delta, f @ x, scale=delta)]
    if half_space is not None:
        b, c = np.asarray(half_space[0], dtype=np.float64), float(half_space[1])
        reach = math.sqrt(2 * delta * float(b @ np.linalg.solve(f, b)))
        cons.append(Constraint("nu", c + b @ x, b, scale=reach if reach > 0.0 else 1.0))
    return kkt_report(g, cons)


def projection_kkt(x: ArrayLike, point: ArrayLike, metric: ArrayLike, b: ArrayLike, c: float) -> KKTReport:
    """KKT of  min 0.5 (x - p)^T M (x - p)  s.t.  c + b.x <= 0  at x: M (p - x) = nu b. The
    residual is relative to |M p|, the half-space's scale is |b|_M^-1 |p|_M (the range of
    b.x over a ball of radius |p| around the origin)."""
    x, p, m, b = (np.asarray(v, dtype=np.float64) for v in (x, point, metric, b))
    reach = math.sqrt(float(b @ np.linalg.solve(m, b)) * float(p @ m @ p))
    cons = [Constraint("nu", float(c) + b @ x, b, scale=reach if reach > 0.0 else 1.0)]
    return kkt_report(m @ (p - x), cons, scale=float(np.linalg.norm(m @ p)))


@dataclass(frozen=True)
class TrustRegionOptimum:
    """The optimum of the CPO QP; kind: "optimum" (unique), "face" (g parallel to b and
    toward the boundary: every point of the disc c + b.x = 0 in the region is optimal, x
    is its centre), "recovery" (no feasible point: x minimizes b.x in the region), "none"
    (no feasible point and b = 0: nothing lowers b.x)."""

    x: torch.Tensor
    kind: str


def trust_region_optimum(f: torch.Tensor, g: torch.Tensor, b: torch.Tensor, c: float,
                         delta: float) -> TrustRegionOptimum:
    """max g.x  s.t.  c + b.x <= 0,  0.5 x^T F x <= delta  by geometry, not by the dual: in
    y = F^1/2 x the region is the ball |y| <= R = sqrt(2 delta) and the constraint the
    half-space c + b_y.y <= 0 (b_y = F^-1/2 b), whose plane lies at signed distance
    c / |b_y| from the centre. The optimum is the ball's top point R g_y / |g_y| when that is
    feasible; else the top of the disc the plane cuts from the ball."""
    _, inv_root = whiten(f)
    g_y, b_y, radius = inv_root @ g, inv_root @ b, math.sqrt(2 * delta)
    zero = torch.zeros_like(g)
    if float(b_y.norm()) == 0.0:  # the constraint does not depend on x
        if c > 0.0:
            return TrustRegionOptimum(zero, "none")
        return TrustRegionOptimum(inv_root @ (radius * g_y / g_y.norm()), "optimum")
    b_hat, dist = b_y / b_y.norm(), c / float(b_y.norm())
    if dist >= radius and c > 0.0:  # the plane misses the ball (or touches it): recovery
        return TrustRegionOptimum(inv_root @ (-radius * b_hat), "recovery")
    top = radius * g_y / g_y.norm()
    if c + float(b_y @ top) <= 0.0:
        return TrustRegionOptimum(inv_root @ top, "optimum")
    centre, rho = -dist * b_hat, math.sqrt(radius**2 - dist**2)
    along = g_y - float(g_y @ b_hat) * b_hat  # g_y within the plane
    if float(along.norm()) <= 1e-12 * float(g_y.norm()):
        return TrustRegionOptimum(inv_root @ centre, "face")
    return TrustRegionOptimum(inv_root @ (centre + rho * along / along.norm()), "optimum")
