"""Cross-rank reductions. Every decision an update makes must be identical on all ranks,
so every statistic it is made from goes through one of these (identity on one process).

NCCL reduces only CUDA tensors while rollout statistics live on the CPU, so each call
moves its tensor to the backend's device and back."""

from __future__ import annotations

import torch
import torch.distributed as torch_dist


def world_size() -> int:
    """The number of ranks (1 without an initialized process group)."""
    return torch_dist.get_world_size() if torch_dist.is_available() and torch_dist.is_initialized() else 1


def _comm_device() -> torch.device:
    if torch_dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _reduce(t: torch.Tensor, op: torch_dist.ReduceOp) -> torch.Tensor:
    out = t.detach().to(_comm_device(), copy=True)
    torch_dist.all_reduce(out, op=op)
    return out.to(t.device)


def all_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of `t` over ranks (a new tensor; `t` untouched). Identity on one process."""
    n = world_size()
    return t if n == 1 else _reduce(t, torch_dist.ReduceOp.SUM) / n


def all_mean_each(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor's mean over ranks, in one all-reduce of their concatenation (one per
    tensor costs a round trip each). The list itself on one process."""
    if world_size() == 1:
        return ts
    flat = all_mean(torch.cat([t.reshape(-1) for t in ts]))
    return [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in ts]), ts, strict=True)]


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over ranks (a new tensor; `t` untouched). Identity on one process."""
    return t if world_size() == 1 else _reduce(t, torch_dist.ReduceOp.SUM)


def all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `t`, in rank order (`[t]` on one process)."""
    if world_size() == 1:
        return [t]
    mine = t.detach().to(_comm_device()).contiguous()
    out = [torch.empty_like(mine) for _ in range(world_size())]
    torch_dist.all_gather(out, mine)
    return [o.to(t.device) for o in out]


def assert_same_on_ranks(named: dict[str, torch.Tensor]) -> None:
    """Raise if any tensor differs between ranks (bitwise: max == min everywhere)."""
    if world_size() == 1:
        return
    for name, t in named.items():
        hi, lo = _reduce(t, torch_dist.ReduceOp.MAX), _reduce(t, torch_dist.ReduceOp.MIN)
        if not torch.equal(hi, lo):
            gap = float((hi - lo).abs().max())
            raise RuntimeError(f"ranks diverged: '{name}' differs between ranks (max gap {gap:.3e})")
