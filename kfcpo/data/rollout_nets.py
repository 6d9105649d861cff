"""The networks as a rollout step runs them: the actor's mean and a draw from pi, and
the critics' values, for one row per env.

At that size a step's cost is Python, not arithmetic: nn.Module's call machinery, the
critics' ParameterList indexing and a torch.distributions object per step cost more
than the matmuls. `RolloutNets` runs the same tensor operations on the same tensors
without them, so a rollout's actions, values and random draws are those of
`GaussianActor.distribution`, its `sample()` and `Critics.forward`, bit for bit
(measured in a rollout on 2 cores, PointCircle1 with 8 envs: the networks' CPU time per
step fell from about 200 to 90 us, log-densities included).

The log-densities of the actions are not computed per step: the rollout keeps the
means and computes them all once (`RolloutNets.log_prob`).
"""

from __future__ import annotations

import torch

from kfcpo.models import Critics, GaussianActor
from kfcpo.models.critic import stacked_forward
from kfcpo.models.mlp import plain_forward


class RolloutNets:
    """The actor and critics bound to their parameters as they are when this is built:
    build one per rollout (the networks change between rollouts, and Lightning may move
    them to another device after setup), never keep one across an update."""

    def __init__(self, actor: GaussianActor, critics: Critics) -> None:
        self.actor = actor
        self._mean_layers = [plain_forward(m) for m in actor.mean_net]
        self._std = actor.log_std.exp()  # the scale `distribution_at` gives every row
        self._critic_layers = critics.layers()
        self._activation = plain_forward(critics.activation)

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, action): pi(.|obs)'s means and one draw from it, the global generator
        advanced exactly as `actor.distribution(obs).sample()` advances it."""
        mean = obs
        for layer in self._mean_layers:
            mean = layer(mean)
        # Normal(mean, std).sample() is this call on the same tensors (no_grad included:
        # rollouts run under torch.no_grad).
        return mean, torch.normal(mean, self._std.expand_as(mean))

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        """V_r and V_c of each row: (2, N), as `Critics.forward`."""
        return stacked_forward(obs, self._critic_layers, self._activation)

    def log_prob(self, mean: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """The log-density of each whole action given its mean, for any leading shape
        (e.g. a rollout's (T, N) steps at once). Each value equals the one computed from
        that step's own (N, act_dim) rows: the terms are elementwise and the sum runs
        over one row's act_dim entries, whatever the number of rows."""
        return self.actor.distribution_at(mean).log_prob(act).sum(-1)
