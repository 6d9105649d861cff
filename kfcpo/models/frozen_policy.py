"""The actor as plain arrays, so another process can run it: pi's mean network layer by
layer (each Linear's weight and bias, each activation by name) and its std.

Why not pickle the module: torch registers its own reductions for tensors sent through
multiprocessing pipes (they move to shared memory, with a file descriptor each), while
numpy arrays pickle as bytes. The worker engine (``kfcpo.envs.policy_worker``) gets one
of these per epoch and rebuilds the forward with the same tensor operations as
``RolloutNets`` (``plain_forward``), on the same float32 values.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kfcpo.models.actor import GaussianActor
from kfcpo.models.mlp import ACTIVATIONS, plain_forward

LINEAR, ACTIVATION = "linear", "activation"
_ACTIVATION_NAMES = {cls: name for name, cls in ACTIVATIONS.items()}


@dataclass
class FrozenPolicy:
    """pi's mean network as ``(LINEAR, (weight, bias))`` and ``(ACTIVATION, name)``
    entries in the order of ``actor.mean_net``, and pi's std: float32 copies, taken when
    built (the actor changes after each update)."""

    layers: list[tuple[str, Any]]
    std: np.ndarray

    @classmethod
    def of(cls, actor: GaussianActor) -> FrozenPolicy:
        """The actor's current mean network and std (from any device)."""
        layers: list[tuple[str, Any]] = []
        for module in actor.mean_net:
            if isinstance(module, nn.Linear):
                layers.append((LINEAR, (_array(module.weight), _array(module.bias))))
            elif type(module) in _ACTIVATION_NAMES:
                layers.append((ACTIVATION, _ACTIVATION_NAMES[type(module)]))
            else:
                raise TypeError(f"cannot freeze a mean network holding {type(module).__name__}")
        # The scale RolloutNets draws with: exp of the log-std, in float32 torch.
        return cls(layers, _array(actor.log_std.exp()))

    def mean_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The mean network's forward on CPU float32 rows, as ``RolloutNets.act`` runs it."""
        steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
        for kind, value in self.layers:
            if kind == LINEAR:
                weight, bias = (torch.from_numpy(x) for x in value)
                steps.append(functools.partial(F.linear, weight=weight, bias=bias))
            else:
                steps.append(plain_forward(ACTIVATIONS[value]()))

        def forward(x: torch.Tensor) -> torch.Tensor:
            for step in steps:
                x = step(x)
            return x

        return forward


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy().copy()
