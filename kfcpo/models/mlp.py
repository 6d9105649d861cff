"""Plain MLP builder shared by the actor and the critics."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str) -> nn.Sequential:
    """Linear layers with `activation` between them and a linear output layer."""
    act = ACTIVATIONS[activation]
    layers: list[nn.Module] = []
    sizes = [in_dim, *hidden]
    for fan_in, fan_out in pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), act()]
    layers.append(nn.Linear(sizes[-1], out_dim))
    return nn.Sequential(*layers)
