"""Plain MLP builder shared by the actor and the critics."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
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


def plain_forward(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """`module`'s forward as a plain function: the same tensor operations, without
    nn.Module's call machinery (hooks, attribute lookups), which on a rollout step's few
    rows costs more than the arithmetic. A Linear is bound to its weight and bias
    tensors as they are now, so take it again once they may have been replaced."""
    if isinstance(module, nn.Linear):
        # nn.Linear.forward is exactly this call.
        return functools.partial(F.linear, weight=module.weight, bias=module.bias)
    return module.forward
