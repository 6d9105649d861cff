"""Dense, sample-by-sample oracles for the curvature of a small GaussianActor (float64).

They are deliberately the slow, obvious computations: per-sample autograd Jacobians, a
KL Hessian by torch.func, Python loops over states, so that the fast preconditioners are
checked against definitions rather than against a second copy of the same trick.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence
from torch.func import functional_call, hessian, jacrev, vmap

from kfcpo.flat import get_flat, params_of
from kfcpo.models.actor import GaussianActor
from kfcpo.precond.base import Preconditioner
from kfcpo.precond.kfac import one_thread

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
