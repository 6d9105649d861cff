"""The blender contract: how reward and cost directions become one policy step.

A blender names the objectives whose gradients the update needs (`surrogates`) and
turns the gradients g and their preconditioned directions x = F^-1 g into one ascent
step (`blend`). Sign convention: g_r ascends reward, g_c ascends cost.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from kfcpo.data.batch import Batch
from kfcpo.models.actor import GaussianActor
from kfcpo.preconditioner.base import Preconditioner


@dataclass
class Directions:
    """What a blender combines: the gradients (rank-averaged) and their preconditioned
    directions x = F^-1 g for reward and cost (None when the blender needs no cost
    direction), with the cost estimate and limit they were computed for."""

    g_r: torch.Tensor
    x_r: torch.Tensor
    g_c: torch.Tensor | None
    x_c: torch.Tensor | None
    ep_cost: float  # Jc: the current episode-cost estimate
    cost_limit: float  # d


def ratio(actor: GaussianActor, mb: Batch) -> torch.Tensor:
    """The importance ratios pi_theta(a|s) / pi_old(a|s) of the minibatch, shape (N,)."""
    return torch.exp(actor.log_prob(mb.obs, mb.act) - mb.logp_old)


class Blender(ABC):
    """Turns reward and cost directions into one ascent step (module docstring): names
    the objectives (`surrogates`), learns from the epoch's cost estimate (`observe_cost`)
    and blends (`blend`). `state_dict` holds what it learns across epochs; `metrics()`
    follows the contract of kfcpo.algorithm."""

    #: False when `surrogates` folds the cost into the reward objective (no g_c needed)
    needs_cost_direction: bool = True

    def surrogates(self, actor: GaussianActor, mb: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Objectives to ascend: L_r = E[ratio A_r], L_c = E[ratio A_c]."""
        r = ratio(actor, mb)
        return (r * mb.adv_r).mean(), (r * mb.adv_c).mean()

    @abstractmethod
    def blend(self, d: Directions, precond: Preconditioner) -> torch.Tensor:
        """One flat ascent step for the policy parameters."""

    def observe_cost(self, ep_cost: float, cost_limit: float) -> None:  # noqa: B027 - optional hook
        """Called once per epoch before the policy update (e.g. multiplier learning)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (e.g. a multiplier and its optimizer)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what `state_dict` returned."""

    def metrics(self) -> dict[str, float]:
        """Diagnostics since the previous call, then reset; the contract is
        kfcpo.algorithm's."""
        return {}
