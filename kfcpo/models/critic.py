"""State-value network V(s) for reward or cost."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kfcpo.models.mlp import mlp


class Critic(nn.Module):
    def __init__(self, obs_dim: int, hidden: Sequence[int] = (64, 64), activation: str = "tanh"):
        super().__init__()
        self.net = mlp(obs_dim, hidden, 1, activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)
