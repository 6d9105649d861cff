"""Flat-vector views of a module's parameters: the currency of every update rule."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def params_of(module: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters of `module`, in the order every flat vector uses."""
    return [p for p in module.parameters() if p.requires_grad]


def get_flat(module: nn.Module) -> torch.Tensor:
    """A detached copy of all trainable parameters as one vector."""
    return torch.cat([p.detach().reshape(-1) for p in params_of(module)]).clone()


def set_flat(module: nn.Module, flat: torch.Tensor) -> None:
    """Write `flat` into the module's parameters in place (bit-exact copy)."""
    offset = 0
    with torch.no_grad():
        for p in params_of(module):
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n
    if offset != flat.numel():
        raise ValueError(f"flat vector has {flat.numel()} entries, module has {offset}")


def flat_grad(
    output: torch.Tensor,
    params: Iterable[nn.Parameter],
    retain_graph: bool | None = None,
    create_graph: bool = False,
) -> torch.Tensor:
    """d output / d params as one vector (zeros for parameters output does not touch).

    `retain_graph=None` is torch's own default (= create_graph), which keeps the graph
    alive for double backprop."""
    params = list(params)
    grads = torch.autograd.grad(
        output, params, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True
    )
    return torch.cat(
        [(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads, strict=True)]
    )
