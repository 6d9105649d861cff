"""The state-value networks V_r (reward) and V_c (cost), as one module of stacked weights.

Both are the same MLP shape, so each layer of the two is one batched matmul
(`torch.baddbmm` over a leading dimension of 2): the critics' regression, thousands of
minibatch steps per epoch, pays the per-operation overhead once instead of twice
(docs/algorithm.md 4.4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from kfcpo.models.mlp import ACTIVATIONS, mlp

REWARD, COST = 0, 1  # the index of each critic along the leading dimension
NUM_CRITICS = 2


class Critics(nn.Module):
    """forward(obs (N, obs_dim)) -> values (2, N): row REWARD is V_r, row COST is V_c.

    Each critic starts as its own independently initialized MLP (PyTorch's Linear init,
    drawn reward first), then the two are stacked layer by layer: weights (2, in, out),
    biases (2, 1, out)."""

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (64, 64), activation: str = "tanh") -> None:
        super().__init__()
        nets = [mlp(obs_dim, hidden, 1, activation) for _ in range(NUM_CRITICS)]
        layers = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        pairs = list(zip(*layers, strict=True))  # the same layer of each critic
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([lin.weight.detach().T for lin in pair])) for pair in pairs
        )
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([lin.bias.detach()[None] for lin in pair])) for pair in pairs
        )
        self.activation = ACTIVATIONS[activation]()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return stacked_forward(obs, self.layers(), self.activation)

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's stacked (weight, bias), in order. On a rollout step's few rows
        iterating the ParameterLists costs about a quarter of the forward, so a rollout
        takes these once and evaluates `stacked_forward` on them every step."""
        return list(zip(self.weights, self.biases, strict=True))


def stacked_forward(
    obs: torch.Tensor,
    layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
    activation: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """`Critics.forward` over explicit layers (`Critics.layers`): values (2, N)."""
    h = obs.expand(NUM_CRITICS, *obs.shape)
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        h = torch.baddbmm(b, h, w)
        if i < last:
            h = activation(h)
    return h.squeeze(-1)
