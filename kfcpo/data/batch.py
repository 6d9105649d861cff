"""One epoch of on-policy data, ready for the update."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Batch:
    """Flat (N, ...) tensors over the transitions of a rollout (or a minibatch of it)."""

    obs: torch.Tensor
    act: torch.Tensor
    logp_old: torch.Tensor
    adv_r: torch.Tensor
    adv_c: torch.Tensor
    ret_r: torch.Tensor
    ret_c: torch.Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    def select(self, idx: torch.Tensor) -> Batch:
        """The rows `idx` (a 1-D tensor of row indices) of every field (a minibatch)."""
        # index_select, not t[idx]: the same rows without Python's indexing protocol, which
        # on a 64-row minibatch costs more than the copy (once per minibatch step). Unlike
        # t[idx] it wants the indices on the fields' device: moved once (a no-op on one device).
        idx = idx.to(self.obs.device)
        return Batch(**{name: getattr(self, name).index_select(0, idx) for name in _FIELDS})

    def to(self, device: torch.device | str) -> Batch:
        """Every field on `device`."""
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


# Batch's fields in declaration order, found once rather than on every `select`.
_FIELDS = tuple(f.name for f in fields(Batch))


@dataclass
class EpochStats:
    """What one rank's rollout saw: sums over the episodes that finished in it (sums, so
    ranks reduce them exactly), and counters."""

    ep_ret_sum: float
    ep_cost_sum: float
    ep_len_sum: float
    episodes: int
    ep_costs: list[float]  # each finished episode's cost, in the order they finished
    env_steps: int
    rollout_s: float
    policy_version: int  # the module's update count when the rollout was collected


@dataclass
class Rollout:
    """The single item the dataset yields per Lightning epoch."""

    batch: Batch
    stats: EpochStats
