"""The preconditioner contract: curvature F of the policy, seen through flat vectors.

Every update rule asks a preconditioner three things about the same curvature:
`update(obs)` refreshes it from a batch of states, `solve(g)` returns F^-1 g and
`quad(v)` returns v^T F v. `apply_step(step)` moves the policy by `step` (an ascent
direction); first-order preconditioners route it through an optimizer instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from kfcpo.flat import get_flat, set_flat
from kfcpo.models.actor import GaussianActor


class Preconditioner(ABC):
    """The curvature F of a policy: `update` refreshes it, `solve` and `quad` use it,
    `apply_step` moves the policy (module docstring). Built on the actor it preconditions;
    `metrics()` follows the contract of kfcpo.algorithm."""

    #: True when the step is taken by an optimizer with state (rollback must restore it)
    has_optimizer_state: bool = False

    def __init__(self, actor: GaussianActor) -> None:
        self.actor = actor

    @abstractmethod
    def update(self, obs: torch.Tensor) -> None:
        """Refresh the curvature estimate from a batch of (normalized) states."""

    @abstractmethod
    def solve(self, g: torch.Tensor) -> torch.Tensor:
        """F^-1 g for a flat vector g; may be g itself (F = I), so neither is changed in
        place by anyone: gradients and directions are read-only."""

    @abstractmethod
    def quad(self, v: torch.Tensor) -> torch.Tensor:
        """v^T F v (a 0-dim tensor) under the same approximation as `solve`."""

    def set_progress(self, fraction: float) -> None:  # noqa: B027 - optional hook
        """Called before each epoch's update with the fraction of the step budget done
        (for schedules such as a decaying learning rate)."""

    def apply_step(self, step: torch.Tensor) -> None:
        """theta <- theta + step."""
        set_flat(self.actor, get_flat(self.actor) + step)

    def step_state(self) -> Any:
        """Optimizer state that a rollback must restore (None when there is none)."""
        return None

    def load_step_state(self, state: Any) -> None:  # noqa: B027 - optional hook
        """Restore what `step_state` returned."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (curvature statistics, counters)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what `state_dict` returned."""

    def metrics(self) -> dict[str, float]:
        """Diagnostics since the previous call, then reset (e.g. skipped updates); the
        contract is kfcpo.algorithm's."""
        return {}
