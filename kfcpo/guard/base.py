"""The guard contract: whether a proposed step is committed, and when to stop updating."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch.distributions import Normal, kl_divergence

from kfcpo.data.batch import Batch
from kfcpo.dist import all_mean
from kfcpo.flat import get_flat, set_flat
from kfcpo.models.actor import GaussianActor
from kfcpo.precond.base import Preconditioner


def mean_kl(actor: GaussianActor, obs: torch.Tensor, old: Normal) -> float:
    """E_s[KL(pi_theta(.|s) || old(.|s))], averaged over ranks so all ranks agree."""
    with torch.no_grad():
        kl = kl_divergence(actor.distribution(obs), old).sum(-1).mean()
    return float(all_mean(kl))


class PolicyMover:
    """Moves the policy and can put it back exactly (parameters and optimizer state)."""

    def __init__(self, actor: GaussianActor, precond: Preconditioner) -> None:
        self.actor, self.precond = actor, precond

    def snapshot(self) -> tuple[torch.Tensor, Any]:
        return get_flat(self.actor), self.precond.step_state()

    def restore(self, snap: tuple[torch.Tensor, Any]) -> None:
        flat, opt_state = snap
        set_flat(self.actor, flat)
        if opt_state is not None:
            self.precond.load_step_state(opt_state)

    def apply(self, step: torch.Tensor) -> None:
        self.precond.apply_step(step)

    def old_distribution(self, obs: torch.Tensor) -> Normal:
        with torch.no_grad():
            return self.actor.distribution(obs)


class Guard(ABC):
    def begin_epoch(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def commit(self, mover: PolicyMover, step: torch.Tensor, mb: Batch) -> bool:
        """Apply `step` (or a part of it); return whether the policy moved."""

    def stop(self, kl_from_rollout: float) -> bool:
        """After each minibatch, given the KL of the policy from the rollout policy on
        that minibatch (the same on all ranks): True ends the epoch's policy updates."""
        return False

    def metrics(self) -> dict[str, float]:
        return {}
