"""F = I: the first-order family (PPO-Lag, P3O). Steps go through Adam, whose own
diagonal scaling is the only curvature these methods use."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from kfcpo.adam import adam
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
        return g.clone()

    def quad(self, v: torch.Tensor) -> torch.Tensor:
        return v @ v

    def apply_step(self, step: torch.Tensor) -> None:
        # Adam minimizes: hand it the negated ascent direction as the gradient.
        offset = 0
        for p in self.params:
            n = p.numel()
            p.grad = -step[offset : offset + n].view_as(p).clone()
            offset += n
        nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def step_state(self) -> Any:
        return copy.deepcopy(self.optimizer.state_dict())

    def load_step_state(self, state: Any) -> None:
        self.optimizer.load_state_dict(copy.deepcopy(state))

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
