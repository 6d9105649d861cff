"""Diagonal Gaussian policy with a state-independent learned log-std."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.distributions import Normal

from kfcpo.models.mlp import mlp

# Orthogonal init gains as in the PPO implementation-details literature: a small
# output gain keeps the initial policy close to its mean and the first KL small.
HIDDEN_GAIN = 2**0.5
MEAN_GAIN = 0.01


class GaussianActor(nn.Module):
    """pi(a|s) = N(mu(s), diag(exp(log_std))^2); `mean_net` holds every Linear layer."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        init_log_std: float = -0.5,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.mean_net = mlp(obs_dim, hidden, act_dim, activation)
        linears = [m for m in self.mean_net if isinstance(m, nn.Linear)]
        for layer in linears:
            gain = MEAN_GAIN if layer is linears[-1] else HIDDEN_GAIN
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def forward(self, obs: torch.Tensor) -> Normal:
        """The same as `distribution`."""
        return self.distribution(obs)

    def distribution(self, obs: torch.Tensor) -> Normal:
        """pi(.|obs): a Normal over each action dimension, batched over `obs`."""
        return self.distribution_at(self.mean_net(obs))

    def distribution_at(self, mean: torch.Tensor) -> Normal:
        """pi given the means `mean_net` gave (e.g. ones a rollout kept)."""
        # validate_args=False: the guard must see a NaN policy as a NaN KL, not an exception
        # (an exception on one rank would leave the others waiting); it is also faster.
        return Normal(mean, self.log_std.exp().expand_as(mean), validate_args=False)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Log-density of whole action vectors, shape (N,)."""
        return self.distribution(obs).log_prob(act).sum(-1)
