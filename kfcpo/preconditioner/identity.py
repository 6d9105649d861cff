"""F = I: the first-order family (PPO-Lag, P3O). Steps go through Adam, whose own
diagonal scaling is the only curvature these methods use."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from kfcpo.adam import adam
from kfcpo.clip import clip_is_identity
from kfcpo.models.actor import GaussianActor
from kfcpo.preconditioner.base import Preconditioner

LR_DECAYS = ("none", "linear")


class Identity(Preconditioner):
    """No curvature (F = I): the first-order methods' preconditioner (module docstring).

    Args:
        lr: Adam's learning rate at the start.
        max_grad_norm: the step (as Adam's gradient) is clipped to this norm.
        lr_decay: "linear" lowers the learning rate linearly to 0 over the step budget
            (set each epoch by `set_progress`), "none" keeps it.

    The step goes through Adam (its state is what a rollback restores). `metrics()`:
    `lr`, the learning rate now (a gauge under kfcpo.algorithm's contract).
    """

    has_optimizer_state = True

    def __init__(
        self, actor: GaussianActor, lr: float = 3e-4, max_grad_norm: float = 40.0, lr_decay: str = "none"
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr: got {lr}; expected > 0")
        if max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm: got {max_grad_norm}; expected > 0")
        if lr_decay not in LR_DECAYS:
            raise ValueError(f"lr_decay: got {lr_decay!r}; valid: {', '.join(LR_DECAYS)}")
        super().__init__(actor)
        self.max_grad_norm, self.lr, self.lr_decay = max_grad_norm, lr, lr_decay
        self.params = [p for p in actor.parameters() if p.requires_grad]
        # Each parameter's length in the flat vector (kfcpo.flat's order): where a step is cut.
        self._sizes = [p.numel() for p in self.params]
        self.optimizer = adam(self.params, lr=lr)

    def set_progress(self, fraction: float) -> None:
        if self.lr_decay == "linear":
            for group in self.optimizer.param_groups:
                group["lr"] = self.lr * max(0.0, 1.0 - fraction)

    def update(self, obs: torch.Tensor) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {"lr": float(self.optimizer.param_groups[0]["lr"])}

    def solve(self, g: torch.Tensor) -> torch.Tensor:
        # F = I: g itself, not a copy (directions are read-only, base.Preconditioner.solve).
        return g

    def quad(self, v: torch.Tensor) -> torch.Tensor:
        return v @ v

    def apply_step(self, step: torch.Tensor) -> None:
        # Adam minimizes: its gradients are the negated ascent direction, each parameter's a
        # view of one negated copy of the step (one operation, not a slice, negation and
        # copy per parameter; the same numbers).
        negated = step.neg().split(self._sizes)
        for p, g in zip(self.params, negated, strict=True):
            p.grad = g.view_as(p)
        self._clip(step)
        self.optimizer.step()
        # optimizer.zero_grad(set_to_none=True) without its profiler scope: no view of this
        # step outlives it.
        for p in self.params:
            p.grad = None

    def _clip(self, step: torch.Tensor) -> None:
        """torch's clip_grad_norm_ of the gradients (the negated `step`) to max_grad_norm.

        Usually nothing is clipped (the default norm is 40; on a fresh PointCircle1 rollout
        PPO-Lag's steps have norms 0.3-1.2, P3O's 1.1-3.3): when the norm is below
        max_grad_norm by far more than rounding, torch's coefficient is exactly 1 and its
        clip the identity, found by one norm of the flat step instead of torch's norm per
        gradient, coefficient and scaling of every gradient by 1. Anything else, NaN
        included, takes torch's own rule."""
        norm = float(torch.linalg.vector_norm(step))
        if clip_is_identity(norm, self.max_grad_norm):
            return
        nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)

    def step_state(self) -> Any:
        return copy.deepcopy(self.optimizer.state_dict())

    def load_step_state(self, state: Any) -> None:
        self.optimizer.load_state_dict(copy.deepcopy(state))

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
