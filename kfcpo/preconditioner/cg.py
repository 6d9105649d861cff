"""Conjugate-gradient preconditioner (TRPO/CPO): F^-1 g by CG on Fisher-vector products.

F is the Hessian of the mean KL(pi_theta0(.|x) || pi_theta(.|x)) at theta = theta0, so
F v = grad((grad KL) . v) by double backprop. `update(obs)` builds grad KL once with its
graph; each product reuses it (retain_graph), costing one backward pass over the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.distributions import Normal, kl_divergence

from kfcpo.dist import all_mean
from kfcpo.flat import flat_grad, params_of
from kfcpo.models.actor import GaussianActor
from kfcpo.preconditioner.base import Preconditioner


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, tol: float
) -> tuple[torch.Tensor, int, float]:
    """Solve M x = b for symmetric positive definite M given as `matvec`, from x = 0.

    Stops after `iters` products or once the squared residual r.r <= tol (absolute, as in
    the TRPO/OmniSafe references, where tol = 1e-10). Returns (x, products used, |r|^2).
    """
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = float(r @ r)
    used = 0
    while used < iters and rr > tol:
        mp = matvec(p)
        used += 1
        pmp = float(p @ mp)
        if not pmp > 0.0:  # M not positive definite along p (or NaN): stop, keep x
            break
        alpha = rr / pmp
        x.add_(p, alpha=alpha)
        r.sub_(mp, alpha=alpha)
        rr_new = float(r @ r)
        p.mul_(rr_new / rr).add_(r)
        rr = rr_new
    return x, used, rr


class ConjugateGradient(Preconditioner):
    """F^-1 g by `iters` CG steps on (F + damping I) x = g.

    Args:
        damping: lambda of (F + lambda I); 0.1 as in the TRPO/CPO references.
        iters: maximum number of Fisher-vector products per solve.
        tol: early exit once the squared residual |g - (F + lambda I) x|^2 <= tol.

    The Fisher is taken at the parameters of the last `update`; if the parameters have
    changed since (a step was applied or rolled back), the next product rebuilds the KL
    graph at the current parameters from the stored states, since the old graph's saved
    tensors were modified in place.

    `metrics()` (read-and-reset): `cg_iters` (mean products per solve), `cg_residual`
    (mean final |r|), `cg_solves`.
    """

    def __init__(
        self, actor: GaussianActor, damping: float = 0.1, iters: int = 15, tol: float = 1e-10
    ) -> None:
        super().__init__(actor)
        if not damping >= 0.0:
            raise ValueError(f"damping must be >= 0, got {damping!r}")
        if iters < 1 or not tol >= 0.0:
            raise ValueError(f"iters must be >= 1 and tol >= 0, got {iters!r}, {tol!r}")
        self.damping, self.iters, self.tol = float(damping), int(iters), float(tol)
        self._obs: torch.Tensor | None = None
        self._grad_kl: torch.Tensor | None = None
        self._versions: list[int] = []
        self._reset_metrics()
        self.last_iters = 0  # products used by the most recent solve

    # -- the contract ------------------------------------------------------------------
    def update(self, obs: torch.Tensor) -> None:
        self._obs = obs.detach()
        self._build()

    def solve(self, g: torch.Tensor) -> torch.Tensor:
        """(F + damping I)^-1 g, approximately (`iters` CG steps)."""
        x, used, rr = conjugate_gradient(
            lambda v: self.fvp(v) + self.damping * v, g.detach(), self.iters, self.tol
        )
        self.last_iters = used
        self._sums["cg_iters"] += used
        self._sums["cg_residual"] += rr**0.5
        self._sums["cg_solves"] += 1
        return x

    def quad(self, v: torch.Tensor) -> torch.Tensor:
        """v^T F v, undamped (the KL model 0.5 v^T F v does not include the damping)."""
        return v.detach() @ self.fvp(v)

    def fvp(self, v: torch.Tensor) -> torch.Tensor:
        """F v averaged over ranks (each rank's F is the mean over its own states)."""
        if self._grad_kl is None:
            raise RuntimeError("ConjugateGradient.update(obs) must be called before solve/quad")
        if self._stale():
            self._build()
        assert self._grad_kl is not None
        with torch.enable_grad():
            fv = flat_grad(self._grad_kl @ v.detach(), params_of(self.actor), retain_graph=True)
        return all_mean(fv)

    def metrics(self) -> dict[str, float]:
        n = self._sums["cg_solves"]
        out = (
            {}
            if n == 0
            else {
                "cg_iters": self._sums["cg_iters"] / n,
                "cg_residual": self._sums["cg_residual"] / n,
                "cg_solves": n,
            }
        )
        self._reset_metrics()
        return out

    # -- internals ---------------------------------------------------------------------
    def _build(self) -> None:
        """grad of the mean KL(pi_fixed || pi_theta) with its graph, at the current theta."""
        assert self._obs is not None
        params = params_of(self.actor)
        obs = self._obs.to(params[0].device, params[0].dtype)
        with torch.enable_grad():
            dist = self.actor.distribution(obs)
            # No validation: non-finite states must give non-finite products (CG then stops
            # with x = 0), not an exception on one rank while the others wait.
            fixed = Normal(dist.mean.detach(), dist.stddev.detach(), validate_args=False)
            kl = kl_divergence(fixed, dist).sum(-1).mean()
            # retain_graph too: products backprop through this graph's saved forward tensors.
            self._grad_kl = flat_grad(kl, params, retain_graph=True, create_graph=True)
        self._versions = [p._version for p in params]

    def _stale(self) -> bool:
        # In-place writes (set_flat, optimizer steps) bump a tensor's version counter.
        return [p._version for p in params_of(self.actor)] != self._versions

    def _reset_metrics(self) -> None:
        self._sums = {"cg_iters": 0.0, "cg_residual": 0.0, "cg_solves": 0.0}

    def state_dict(self) -> dict[str, Any]:
        # Nothing persistent: the curvature is rebuilt from the next update's states.
        return {}
