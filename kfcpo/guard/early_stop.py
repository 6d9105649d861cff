"""Early stop (PPO family): every step is taken; the epoch's policy updates end at the
first minibatch whose KL from the rollout policy exceeds the target."""

from __future__ import annotations

import torch

from kfcpo.data.batch import Batch
from kfcpo.guard.base import Guard, PolicyMover


class EarlyStop(Guard):
    def __init__(self, target_kl: float = 0.02) -> None:
        if target_kl <= 0:
            raise ValueError(f"target_kl: got {target_kl}; expected > 0")
        self.target_kl = target_kl

    def commit(self, mover: PolicyMover, step: torch.Tensor, mb: Batch) -> bool:
        mover.apply(step)
        return True

    def stop(self, kl_from_rollout: float) -> bool:
        return kl_from_rollout > self.target_kl
