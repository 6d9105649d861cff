"""Lagrangian blender (PPO-Lag, Ray et al. 2019; TRPO-Lag; CPPO-PID, Stooke et al. 2020):
one objective L = clip-surrogate of (A_r - lambda A_c) / (1 + lambda) (OmniSafe's
`sum_norm` form), with the multiplier lambda >= 0 set once per epoch from Jc - d, either by
gradient ascent on lambda (Jc - d) with Adam (`multiplier: adam`) or by the PID rule of
kfcpo.blender.pid_multiplier (`multiplier: pid`)."""

from __future__ import annotations

from typing import Any

import torch

from kfcpo.blender.base import Blender, Directions, ratio
from kfcpo.blender.pid_multiplier import PIDMultiplier
from kfcpo.data.batch import Batch
from kfcpo.models.actor import GaussianActor
from kfcpo.preconditioner.base import Preconditioner

SCALES = ("none", "trust_region")
MULTIPLIERS = ("adam", "pid")


class LagrangianBlender(Blender):
    """The Lagrangian blender (module docstring).

    Args:
        multiplier_init: lambda at the start (>= 0).
        multiplier_lr: Adam's learning rate for lambda (> 0; `multiplier: adam`).
        multiplier: "adam" (ascent on lambda (Jc - d)) or "pid" (the PID rule).
        pid_kp, pid_ki, pid_kd, pid_d_delay, pid_p_ema_alpha, pid_d_ema_alpha: the PID
            controller's gains, D delay (epochs) and EMA factors (`multiplier: pid`;
            kfcpo.blender.pid_multiplier).
        multiplier_max: a cap on lambda (None: none).
        clip: PPO clip ratio of the surrogate (0 turns clipping off).
        scale: "none" (the step is x_r as is) or "trust_region" (x_r scaled to
            0.5 x^T F x = target_kl, for natural gradients).
        target_kl: delta for scale=trust_region.

    `metrics()` (kfcpo.algorithm's contract): `lagrange`, the multiplier now (a gauge,
    nothing to reset), with `pid` the last update's P, I, D terms `pid_p`, `pid_i`,
    `pid_d` (gauges, in lambda's units), and with `trust_region` `nu`, the mean step scale
    since the last call (reset; left out when no step was scaled).
    """

    needs_cost_direction = False

    def __init__(
        self,
        multiplier_init: float = 0.001,
        multiplier_lr: float = 0.035,
        clip: float = 0.2,
        scale: str = "none",
        target_kl: float = 0.01,
        multiplier: str = "adam",
        pid_kp: float = 0.1,
        pid_ki: float = 0.01,
        pid_kd: float = 0.01,
        pid_d_delay: int = 10,
        pid_p_ema_alpha: float = 0.0,
        pid_d_ema_alpha: float = 0.0,
        multiplier_max: float | None = None,
    ) -> None:
        if multiplier_init < 0:
            raise ValueError(f"multiplier_init: got {multiplier_init}; expected >= 0")
        if multiplier_lr <= 0:
            raise ValueError(f"multiplier_lr: got {multiplier_lr}; expected > 0")
        if clip < 0:
            raise ValueError(f"clip: got {clip}; expected >= 0 (0 turns clipping off)")
        if scale not in SCALES:
            raise ValueError(f"scale: got {scale!r}; valid: {', '.join(SCALES)}")
        if multiplier not in MULTIPLIERS:
            raise ValueError(f"multiplier: got {multiplier!r}; valid: {', '.join(MULTIPLIERS)}")
        # The PID parameters are checked whatever the multiplier, so a bad value is refused
        # before it would matter; only `multiplier_max` acts on Adam's lambda too.
        pid = PIDMultiplier(pid_kp, pid_ki, pid_kd, pid_d_delay, pid_p_ema_alpha, pid_d_ema_alpha,
                            multiplier_init, multiplier_max)
        self.clip, self.scale, self.target_kl = clip, scale, target_kl
        self.multiplier_max = multiplier_max
        self.pid = pid if multiplier == "pid" else None
        if self.pid is None:
            self.multiplier = torch.nn.Parameter(torch.tensor(float(multiplier_init)))
            self.optimizer = torch.optim.Adam([self.multiplier], lr=multiplier_lr)
        self._nu: list[float] = []

    @property
    def lam(self) -> float:
        """The multiplier lambda as a float."""
        return self.pid.lam if self.pid is not None else float(self.multiplier.detach())

    def observe_cost(self, ep_cost: float, cost_limit: float) -> None:
        if self.pid is not None:
            self.pid.update(ep_cost, cost_limit)
            return
        # Ascent on lambda (Jc - d): minimize its negation, then project onto
        # 0 <= lambda (<= multiplier_max).
        self.optimizer.zero_grad()
        (-self.multiplier * (ep_cost - cost_limit)).backward()
        self.optimizer.step()
        with torch.no_grad():
            self.multiplier.clamp_(min=0.0, max=self.multiplier_max)

    def surrogates(self, actor: GaussianActor, mb: Batch) -> tuple[torch.Tensor, None]:
        lam = self.lam
        adv = (mb.adv_r - lam * mb.adv_c) / (1.0 + lam)
        r = ratio(actor, mb)
        if self.clip == 0:
            return (r * adv).mean(), None
        clipped = torch.clamp(r, 1.0 - self.clip, 1.0 + self.clip) * adv
        return torch.min(r * adv, clipped).mean(), None

    def blend(self, d: Directions, precond: Preconditioner) -> torch.Tensor:
        if self.scale == "none":
            return d.x_r
        quad = float(precond.quad(d.x_r))
        nu = (2.0 * self.target_kl / quad) ** 0.5 if quad > 0 else 0.0
        self._nu.append(nu)
        return nu * d.x_r

    def state_dict(self) -> dict[str, Any]:
        if self.pid is not None:
            return {"pid": self.pid.state_dict()}
        return {"multiplier": self.multiplier.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        held, mine = ("pid" if "pid" in state else "adam"), ("pid" if self.pid is not None else "adam")
        if held != mine:
            raise ValueError(f"lagrangian blender: the checkpoint holds a {held} multiplier, this blender "
                             f"has multiplier={mine}; resume with blender.multiplier={held}")
        if self.pid is not None:
            self.pid.load_state_dict(state["pid"])
            return
        with torch.no_grad():
            self.multiplier.copy_(state["multiplier"])
        self.optimizer.load_state_dict(state["optimizer"])

    def metrics(self) -> dict[str, float]:
        out = {"lagrange": self.lam}
        if self.pid is not None:
            out.update(self.pid.terms)
        if self._nu:
            out["nu"] = sum(self._nu) / len(self._nu)
            self._nu.clear()
        return out
