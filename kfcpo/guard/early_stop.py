"""Early stop (PPO family): every step is taken; the epoch's policy updates end after the
first pass that leaves the policy's KL from the rollout policy, measured on the whole
rollout, above the target (OmniSafe's kl_early_stop checks once per pass, on all data)."""

from __future__ import annotations

import torch

from kfcpo.data.batch import Batch
from kfcpo.guard.base import Guard, PolicyMover


class EarlyStop(Guard):
    """Commit every step; end the epoch after the pass whose policy has drifted more than
    `target_kl` (> 0) from the rollout policy. No metrics of its own."""

    check_every_step = False

    def __init__(self, target_kl: float = 0.02) -> None:
        if target_kl <= 0:
            raise ValueError(f"target_kl: got {target_kl}; expected > 0")
        self.target_kl = target_kl

    def commit(self, mover: PolicyMover, step: torch.Tensor, mb: Batch) -> bool:
        mover.apply(step)
        return True

    def stop(self, kl_from_rollout: float) -> bool:
        return kl_from_rollout > self.target_kl
