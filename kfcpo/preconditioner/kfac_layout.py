"""Where K-FAC's per-layer blocks sit in the flat parameter vector (docs/algorithm.md 2.1).

Owns the mapping between a `GaussianActor`'s flat vector (kfcpo.flat order) and the
augmented weights [W | b] that K-FAC's Kronecker factors describe: which parameters are
factorable (the Linear layers directly inside `mean_net`, plus the log-std), their
offsets, and cutting a layer's (out, in [+1]) block out of a flat vector or writing one
back. No curvature here: kfac_factors estimates it, kfac_eigen inverts it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kfcpo.flat import params_of
from kfcpo.models.actor import GaussianActor


@dataclass
class Layer:
    """Where one Linear layer's parameters sit in the flat vector."""

    module: nn.Linear
    weight_at: int
    bias_at: int | None

    @property
    def shape(self) -> tuple[int, int]:
        """(out, in + 1 if bias): the augmented weight the factors describe."""
        out_f, in_f = self.module.weight.shape
        return out_f, in_f + (self.bias_at is not None)


def offsets(actor: nn.Module) -> dict[int, int]:
    """id(parameter) -> its offset in the flat vector (kfcpo.flat order)."""
    out, at = {}, 0
    for p in params_of(actor):
        out[id(p)] = at
        at += p.numel()
    return out


def layout(actor: GaussianActor) -> tuple[list[Layer], int | None]:
    """Flat offsets of each Linear and of log_std; ValueError for any other parameter."""
    at = offsets(actor)
    layers, covered = [], set()
    for m in actor.mean_net:
        if isinstance(m, nn.Linear):
            if id(m.weight) not in at or (m.bias is not None and id(m.bias) not in at):
                raise ValueError("KFAC needs trainable weights and biases in every Linear layer")
            bias_at = None if m.bias is None else at[id(m.bias)]
            layers.append(Layer(m, at[id(m.weight)], bias_at))
            covered |= {id(m.weight)} | ({id(m.bias)} if m.bias is not None else set())
    log_std_at = at.get(id(actor.log_std))
    if log_std_at is not None:
        covered.add(id(actor.log_std))
    if not layers or covered != set(at):
        raise ValueError(
            "KFAC supports actors whose trainable parameters are the Linear layers directly "
            "inside mean_net plus log_std"
        )
    return layers, log_std_at


def block(flat: torch.Tensor, layer: Layer) -> torch.Tensor:
    """The augmented (out, in [+1]) matrix [W | b] of `layer` inside `flat`."""
    out_f, in_f = layer.module.weight.shape
    w = flat[layer.weight_at : layer.weight_at + out_f * in_f].view(out_f, in_f)
    if layer.bias_at is None:
        return w
    return torch.cat([w, flat[layer.bias_at : layer.bias_at + out_f].view(out_f, 1)], dim=1)


def put(flat: torch.Tensor, layer: Layer, blk: torch.Tensor) -> None:
    """Write the augmented matrix `blk` of `layer` into `flat` (inverse of `block`)."""
    out_f, in_f = layer.module.weight.shape
    flat[layer.weight_at : layer.weight_at + out_f * in_f] = blk[:, :in_f].reshape(-1)
    if layer.bias_at is not None:
        flat[layer.bias_at : layer.bias_at + out_f] = blk[:, in_f]
