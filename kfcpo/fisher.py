"""The exact Fisher quadratic form of a Gaussian policy, by one forward-mode pass.

For pi(a|s) = N(mu_theta(s), diag(sigma)^2) with a state-independent log-std,
v^T F v = E_s[(J_mu v)^T Sigma^-1 (J_mu v)] + 2 ||v_logstd||^2, where J_mu v is a
Jacobian-vector product of the mean network: no Fisher matrix, no double backprop.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, jvp

from kfcpo.dist import all_mean
from kfcpo.models.actor import GaussianActor

LOG_STD_FISHER = 2.0  # Fisher of a Gaussian's log-std, per dimension


def exact_quad(actor: GaussianActor, obs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """v^T F v over the states `obs` (averaged over ranks), v a flat vector in
    `actor.parameters()` order."""
    names = [n for n, p in actor.named_parameters() if p.requires_grad]
    params = {n: p.detach() for n, p in actor.named_parameters() if p.requires_grad}
    tangents, offset = {}, 0
    for n in names:
        p = params[n]
        tangents[n] = v[offset : offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
    if offset != v.numel():
        raise ValueError(f"exact_quad: v has {v.numel()} entries, the actor's trainable parameters {offset}")
    mean_names = [n for n in names if n.startswith("mean_net.")]

    def mean_fn(*mean_params: torch.Tensor) -> torch.Tensor:
        state = {n.removeprefix("mean_net."): t for n, t in zip(mean_names, mean_params, strict=True)}
        return functional_call(actor.mean_net, state, (obs,))

    _, jv = jvp(mean_fn, tuple(params[n] for n in mean_names), tuple(tangents[n] for n in mean_names))
    inv_var = torch.exp(-2.0 * actor.log_std.detach())
    mean_part = all_mean((jv.square() * inv_var).sum(-1).mean())
    if "log_std" not in tangents:  # a frozen log-std contributes no direction
        return mean_part
    return mean_part + LOG_STD_FISHER * tangents["log_std"].square().sum()
