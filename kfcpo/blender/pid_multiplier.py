"""The PID Lagrange multiplier (Stooke, Achiam, Abbeel 2020, "Responsive Safety in
Reinforcement Learning by PID Lagrangian Methods", ICML; their Algorithm 2).

Once per epoch, with the cost estimate Jc and the limit d, Delta = Jc - d:

    I      <- max(0, I + Delta)                       integral, clamped at 0
    D       = max(0, Jc - Jc of `pid_d_delay` epochs ago)   only a rise of the cost
    lambda  = min(max(0, Kp Delta + Ki I + Kd D), multiplier_max)

Unlike gradient ascent with Adam (whose step is ~lr per epoch whatever the violation), lambda
answers the size of the violation at once (P), keeps a memory of it (I) and anticipates a
rising cost (D).

Choices beyond the paper (docs/algorithm.md 5):

* D is 0 until a cost `pid_d_delay` epochs old exists. The paper's pseudocode and OmniSafe
  compare with 0 before that, which adds Kd Jc, a term in the cost itself rather than its
  rise, for the first `pid_d_delay` epochs.
* I starts at 0 (the paper); OmniSafe starts its Ki-scaled integral at the initial
  multiplier (0.001), a difference of 0.001 in lambda until the integral is first clamped.
* The EMA smoothing of OmniSafe's implementation (the P term's Delta and the D term's Jc,
  both with alpha 0.95 in its CPPOPID) is an option, off by default: Jc here is already the
  mean of a window of episodes (`cost_window`, 100: it lags 2.5-5 epochs), and alpha 0.95
  adds a time constant of ~20 epochs on top, exactly the lag the controller is meant to
  remove. With alpha > 0 the averages start at 0, as OmniSafe's.
* The cap (`multiplier_max`) does not stop the integral (no anti-windup), as in both.
"""

from __future__ import annotations

import math
from typing import Any

METRIC_KEYS = ("pid_p", "pid_i", "pid_d")
STATE_KEYS = ("integral", "delta_p", "cost_d", "history", "lam")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class PIDMultiplier:
    """lambda by the PID rule of the module docstring; the parameter names are those of
    the `lagrangian` blender.

    Args:
        pid_kp, pid_ki, pid_kd: the gains Kp, Ki, Kd (finite, >= 0; not all 0).
        pid_d_delay: epochs between the costs the D term compares (an integer >= 1; the
            paper's 1 is the previous epoch).
        pid_p_ema_alpha, pid_d_ema_alpha: EMA factors of Delta (P term) and of Jc (D term),
            in [0, 1); 0 uses them as they are (the paper).
        multiplier_init: lambda before the first update (>= 0).
        multiplier_max: the cap on lambda (> 0, >= multiplier_init), None for none.
    """

    def __init__(
        self,
        pid_kp: float,
        pid_ki: float,
        pid_kd: float,
        pid_d_delay: int = 1,
        pid_p_ema_alpha: float = 0.0,
        pid_d_ema_alpha: float = 0.0,
        multiplier_init: float = 0.0,
        multiplier_max: float | None = None,
    ) -> None:
        gains = {"pid_kp": pid_kp, "pid_ki": pid_ki, "pid_kd": pid_kd}
        for name, gain in gains.items():
            if not (_number(gain) and gain >= 0):
                raise ValueError(f"{name}: got {gain!r}; expected a finite number >= 0")
        if not any(gains.values()):
            raise ValueError("pid_kp, pid_ki, pid_kd: all 0; expected at least one gain > 0")
        if not (isinstance(pid_d_delay, int) and not isinstance(pid_d_delay, bool) and pid_d_delay >= 1):
            raise ValueError(f"pid_d_delay: got {pid_d_delay!r}; expected an integer >= 1 (epochs)")
        for name, alpha in (("pid_p_ema_alpha", pid_p_ema_alpha), ("pid_d_ema_alpha", pid_d_ema_alpha)):
            if not (_number(alpha) and 0 <= alpha < 1):
                raise ValueError(f"{name}: got {alpha!r}; expected a number in [0, 1) (0 = no smoothing)")
        if not (_number(multiplier_init) and multiplier_init >= 0):
            raise ValueError(f"multiplier_init: got {multiplier_init!r}; expected a finite number >= 0")
        if multiplier_max is not None and not (_number(multiplier_max) and multiplier_max > 0):
            raise ValueError(
                f"multiplier_max: got {multiplier_max!r}; expected a finite number > 0 or null (no cap)"
            )
        if multiplier_max is not None and multiplier_max < multiplier_init:
            raise ValueError(
                f"multiplier_max: got {multiplier_max!r}; expected >= multiplier_init ({multiplier_init})"
            )
        self.kp, self.ki, self.kd = float(pid_kp), float(pid_ki), float(pid_kd)
        self.d_delay = pid_d_delay
        self.p_alpha, self.d_alpha = float(pid_p_ema_alpha), float(pid_d_ema_alpha)
        self.max = None if multiplier_max is None else float(multiplier_max)
        self.integral = 0.0  # I, in cost units
        self.delta_p = 0.0  # Delta as the P term sees it (its EMA when p_alpha > 0)
        self.cost_d = 0.0  # Jc as the D term sees it (its EMA when d_alpha > 0)
        self.history: list[float] = []  # the last d_delay values of cost_d, oldest first
        self.lam = float(multiplier_init)
        self.terms: dict[str, float] = {}  # the last update's P, I, D terms (METRIC_KEYS)

    def update(self, ep_cost: float, cost_limit: float) -> float:
        """One epoch's update from Jc = `ep_cost` and d = `cost_limit`; the new lambda."""
        jc = float(ep_cost)
        delta = jc - float(cost_limit)
        self.integral = max(0.0, self.integral + delta)
        self.delta_p = self.p_alpha * self.delta_p + (1.0 - self.p_alpha) * delta
        self.cost_d = self.d_alpha * self.cost_d + (1.0 - self.d_alpha) * jc
        rise = max(0.0, self.cost_d - self.history[0]) if len(self.history) == self.d_delay else 0.0
        self.history = [*self.history, self.cost_d][-self.d_delay :]
        p, i, d = self.kp * self.delta_p, self.ki * self.integral, self.kd * rise
        self.terms = dict(zip(METRIC_KEYS, (p, i, d), strict=True))
        lam = max(0.0, p + i + d)
        self.lam = lam if self.max is None else min(lam, self.max)
        return self.lam

    def state_dict(self) -> dict[str, Any]:
        """The controller's memory (plain floats): enough to continue exactly."""
        return {"integral": self.integral, "delta_p": self.delta_p, "cost_d": self.cost_d,
                "history": list(self.history), "lam": self.lam}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (the history cut to this `pid_d_delay`)."""
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise ValueError(
                f"PID multiplier state: missing {', '.join(missing)}; expected {', '.join(STATE_KEYS)}"
            )
        self.integral, self.delta_p, self.cost_d = (float(state[k]) for k in STATE_KEYS[:3])
        self.history = [float(c) for c in state["history"]][-self.d_delay :]
        self.lam = float(state["lam"])
