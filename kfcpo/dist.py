"""Cross-rank reductions. Every decision an update makes must be identical on all ranks,
so every statistic it is made from goes through one of these (identity on one process)."""

from __future__ import annotations

import torch
import torch.distributed as torch_dist


def world_size() -> int:
    return torch_dist.get_world_size() if torch_dist.is_available() and torch_dist.is_initialized() else 1


def all_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of `t` over ranks (a new tensor; `t` untouched). Identity on one process."""
    n = world_size()
    if n == 1:
        return t
    out = t.detach().clone()
    torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
    return out / n


def all_sum(t: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return t
    out = t.detach().clone()
    torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
    return out
