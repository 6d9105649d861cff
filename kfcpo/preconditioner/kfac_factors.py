"""K-FAC's Kronecker factors and their estimation (docs/algorithm.md 2.1).

For every Linear layer l of `actor.mean_net`, with input a (a 1 appended for the bias)
and pre-activation output s, the Fisher block of the augmented weight [W | b] is
approximated as F_l ~= G_l (x) A_l with

    A_l = E[a a^T],   G_l = E[d d^T],   d = d log pi(a~|x) / d s,  a~ ~ pi(.|x).

Two estimators of G: "expected" takes the expectation over a~ in closed form, which for a
Gaussian gives G_l = E_x[J^T Sigma^-1 J] with J = d mu / d s (act_dim backward passes, no
noise); "sampled" draws `samples` actions per state (ACKTR's Monte Carlo estimate).

Owns one batch's factors (averaged over ranks, float64, None when non-finite), the
moving average they are folded into; the factor-sized work runs under
`kfcpo.threads.one_thread`. Inverting the factors is kfac_eigen's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kfcpo.dist import all_mean
from kfcpo.models.actor import GaussianActor
from kfcpo.preconditioner.kfac_layout import Layer
from kfcpo.threads import one_thread

ESTIMATORS = ("sampled", "expected")
# Factors are accumulated and inverted in float64: the eigenvalues of A span many decades
# (tanh features are strongly correlated) and float32 eigh loses the small ones.
FACTOR_DTYPE = torch.float64

Factors = list[tuple[torch.Tensor, torch.Tensor]]  # (A_l, G_l) per layer


def second_moment(aa: torch.Tensor, a_sum: torch.Tensor, n: int, append_one: bool) -> torch.Tensor:
    """E[a a^T] from a^T a, the column sums and the row count n, with a 1 appended to each
    row when `append_one`: assembled rather than by concatenating a ones column to the
    (N, in) inputs, which would copy them."""
    if not append_one:
        return aa / n
    s = a_sum[None, :]
    top = torch.cat([aa, s.T], dim=1)
    bottom = torch.cat([s, torch.full((1, 1), float(n), dtype=aa.dtype, device=aa.device)], dim=1)
    return torch.cat([top, bottom], dim=0) / n


def batch_factors(
    actor: GaussianActor, layers: list[Layer], obs: torch.Tensor, estimator: str, samples: int
) -> Factors | None:
    """This batch's (A_l, G_l), averaged over ranks; None when any is non-finite."""
    n = obs.shape[0]
    sums, count = batch_sums(actor, layers, obs, estimator, samples)
    with one_thread():  # from here on the work is factor-sized, independent of N
        stats = []
        for layer, (aa, a_sum, dd) in zip(layers, sums, strict=True):
            stats += [
                second_moment(aa, a_sum, n, layer.bias_at is not None),
                torch.stack(dd).sum(0) / count,
            ]
        packed = all_mean(torch.cat([s.to(FACTOR_DTYPE).reshape(-1) for s in stats]))
        if not bool(torch.isfinite(packed).all()):
            return None
        out, at = [], 0
        for s in stats:
            out.append(packed[at : at + s.numel()].view_as(s))
            at += s.numel()
    return list(zip(out[0::2], out[1::2], strict=True))


def batch_sums(
    actor: GaussianActor, layers: list[Layer], obs: torch.Tensor, estimator: str, samples: int
) -> tuple[list[tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]], int]:
    """The N-sized work, per layer: (a^T a, column sums of a, [d^T d per output vector]),
    and the number of (state, vector) pairs the d^T d sum over."""
    weight = layers[0].module.weight
    obs = obs.detach().to(weight.device, weight.dtype)
    with torch.enable_grad():
        mean, inputs, outputs = forward(actor, obs)
        grad_outs, count = output_grads(actor, mean, estimator, samples)
        dd: list[list[torch.Tensor]] = [[] for _ in outputs]
        for i, go in enumerate(grad_outs):
            # d (sum_n f_n) / d s gives each sample's own d_n: the sum, not the mean,
            # keeps per-sample output gradients unshrunk by N.
            ds = torch.autograd.grad(mean, outputs, go, retain_graph=i < len(grad_outs) - 1)
            for acc, d in zip(dd, ds, strict=True):
                acc.append(d.T @ d)
    return [(a.T @ a, a.sum(0), d) for a, d in zip(inputs, dd, strict=True)], count


def forward(
    actor: GaussianActor, obs: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """The mean network run layer by layer with detached weights: returns the mean, each
    Linear's input and its output (the tensors d/ds is taken with respect to). A manual
    pass instead of hooks, so nothing fires during rollouts."""
    x, inputs, outputs = obs, [], []
    for m in actor.mean_net:
        if isinstance(m, nn.Linear):
            inputs.append(x.detach())
            bias = None if m.bias is None else m.bias.detach()
            x = F.linear(x, m.weight.detach(), bias)
            if not x.requires_grad:  # first layer: make its output the graph's leaf
                x.requires_grad_(True)
            outputs.append(x)
        else:
            x = m(x)
    return x, inputs, outputs


def output_grads(
    actor: GaussianActor, mean: torch.Tensor, estimator: str, samples: int
) -> tuple[list[torch.Tensor], int]:
    """Vectors v with d = v^T d mu / d s, and how many (state, v) pairs G averages over.

    d log N(a~ | mu, sigma) / d mu = (a~ - mu) / sigma^2 = eps / sigma for a~ = mu + sigma
    eps. "expected": E_eps[(J^T eps/sigma)(.)^T] = sum_k J^T e_k e_k^T J / sigma_k^2, so
    the act_dim vectors e_k / sigma_k give the expectation exactly.
    """
    inv_std = torch.exp(-actor.log_std.detach()).to(mean.dtype)
    n, act_dim = mean.shape
    if estimator == "expected":
        eye = torch.eye(act_dim, dtype=mean.dtype, device=mean.device)
        return [(eye[k] * inv_std).expand(n, act_dim) for k in range(act_dim)], n
    eps = torch.randn(samples, n, act_dim, dtype=mean.dtype, device=mean.device)
    return list(eps * inv_std), n * samples


def fold(ema: Factors | None, batch: Factors, beta: float) -> Factors:
    """EMA of the raw sums m <- beta m + (1 - beta) x (bias correction at read time)."""
    if ema is None:
        return [((1 - beta) * a, (1 - beta) * g) for a, g in batch]
    return [
        (beta * ma + (1 - beta) * a, beta * mg + (1 - beta) * g)
        for (ma, mg), (a, g) in zip(ema, batch, strict=True)
    ]
