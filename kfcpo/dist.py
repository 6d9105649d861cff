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


def assert_same_on_ranks(named: dict[str, torch.Tensor]) -> None:
    """Raise if any tensor differs between ranks (bitwise: max == min everywhere)."""
    if world_size() == 1:
        return
    for name, t in named.items():
        hi, lo = t.detach().clone(), t.detach().clone()
        torch_dist.all_reduce(hi, op=torch_dist.ReduceOp.MAX)
        torch_dist.all_reduce(lo, op=torch_dist.ReduceOp.MIN)
        if not torch.equal(hi, lo):
            gap = float((hi - lo).abs().max())
            raise RuntimeError(f"ranks diverged: '{name}' differs between ranks (max gap {gap:.3e})")


def all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `t`, in rank order (`[t]` on one process)."""
    if world_size() == 1:
        return [t]
    out = [torch.empty_like(t) for _ in range(world_size())]
    torch_dist.all_gather(out, t.detach().contiguous())
    return out


def all_sum(t: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return t
    out = t.detach().clone()
    torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
    return out
