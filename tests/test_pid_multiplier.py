"""The PID Lagrange multiplier (kfcpo.blender.pid_multiplier) against hand-computed
sequences, its exact resume, its validation, and the `lagrangian` blender with
`multiplier: pid`; the Adam multiplier and its checkpoint stay as they were."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from helpers import GOAL
from torch import nn

from kfcpo.blender.lagrangian import LagrangianBlender
from kfcpo.blender.pid_multiplier import PIDMultiplier
from kfcpo.cli import EXIT_CONFIG, main
from kfcpo.data.batch import Batch

GOAL_LIMIT = 10.0
JC = [14.0, 18.0, 8.0, 4.0, 20.0, 2.0, 0.0, 12.0]
GAINS = {"pid_kp": 0.5, "pid_ki": 0.1, "pid_kd": 1.0, "pid_d_delay": 2}
# By hand, Delta = Jc - 10, I <- max(0, I + Delta), D = max(0, Jc - Jc two epochs ago)
# (0 while there is none), lambda = max(0, 0.5 Delta + 0.1 I + 1.0 D):
#   Jc  Delta   I   D   lambda
#   14    4     4   0   2 + 0.4           = 2.4
#   18    8    12   0   4 + 1.2           = 5.2   (one epoch of history: no D yet)
#    8   -2    10   0  -1 + 1.0           = 0.0   (8 < 14: a fall, no D)
#    4   -6     4   0  -3 + 0.4 -> max 0  = 0.0
#   20   10    14  12   5 + 1.4 + 12      = 18.4  (20 - 8)
#    2   -8     6   0  -4 + 0.6 -> max 0  = 0.0
#    0  -10     0   0  (I clamped: -4 -> 0) = 0.0
#   12    2     2  10   1 + 0.2 + 10      = 11.2  (12 - 2; an unclamped I of -2 gives 10.8)
INTEGRALS = [4.0, 12.0, 10.0, 4.0, 14.0, 6.0, 0.0, 2.0]
LAMBDAS = [2.4, 5.2, 0.0, 0.0, 18.4, 0.0, 0.0, 11.2]
TERMS_5 = {"pid_p": 5.0, "pid_i": 1.4, "pid_d": 12.0}  # the fifth epoch's terms
CAP = 8.0


def run(controller: PIDMultiplier | LagrangianBlender, costs: list[float]) -> list[float]:
    out = []
    for jc in costs:
        if isinstance(controller, LagrangianBlender):
            controller.observe_cost(jc, GOAL_LIMIT)
            out.append(controller.lam)
        else:
            out.append(controller.update(jc, GOAL_LIMIT))
    return out


def test_lambda_sequence_by_hand() -> None:
    pid = PIDMultiplier(**GAINS)
    lams, integrals = [], []
    for k, jc in enumerate(JC):
        lams.append(pid.update(jc, GOAL_LIMIT))
        integrals.append(pid.integral)
        if k == 4:
            assert pid.terms == pytest.approx(TERMS_5)
    assert lams == pytest.approx(LAMBDAS, abs=1e-12)
    assert integrals == pytest.approx(INTEGRALS, abs=1e-12)


def test_the_paper_delay_compares_with_the_previous_epoch() -> None:
    pid = PIDMultiplier(**{**GAINS, "pid_d_delay": 1})
    lams = run(pid, JC[:5])
    # D = max(0, Jc - previous Jc): 0, 4, 0, 0, 16.
    assert lams == pytest.approx([2.4, 5.2 + 4.0, 0.0, 0.0, 6.4 + 16.0], abs=1e-12)


def test_the_cap_bounds_lambda_but_not_the_integral() -> None:
    capped = PIDMultiplier(**GAINS, multiplier_max=CAP)
    assert run(capped, JC) == pytest.approx([min(lam, CAP) for lam in LAMBDAS], abs=1e-12)
    assert capped.integral == INTEGRALS[-1]


def test_ema_smoothing_by_hand() -> None:
    # alpha 0.5, averages from 0, d = 0: Delta_p = 2, 5; Jc_d = 2, 5; D = 0, 5 - 2.
    pid = PIDMultiplier(pid_kp=1.0, pid_ki=0.0, pid_kd=1.0, pid_d_delay=1,
                        pid_p_ema_alpha=0.5, pid_d_ema_alpha=0.5)
    assert [pid.update(4.0, 0.0), pid.update(8.0, 0.0)] == pytest.approx([2.0, 8.0])


def pid_blender(**kw: Any) -> LagrangianBlender:
    return LagrangianBlender(multiplier="pid", **{**GAINS, **kw})


def through_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """`state` saved and read back as a checkpoint is (torch.load with weights_only)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def steps(blender: LagrangianBlender, costs: list[float]) -> list[dict[str, Any]]:
    """lambda, the terms and the whole state after each update."""
    out = []
    for jc in costs:
        blender.observe_cost(jc, GOAL_LIMIT)
        out.append({**blender.metrics(), **blender.state_dict()["pid"]})
    return out


def test_state_round_trip_mid_sequence_continues_exactly() -> None:
    # Smoothing on, so every part of the state (integral, both averages, history) matters.
    kw = {"pid_p_ema_alpha": 0.5, "pid_d_ema_alpha": 0.25}
    expected = steps(pid_blender(**kw), JC)
    first = pid_blender(**kw)
    steps(first, JC[:4])  # the history, the integral and lambda are all non-trivial here
    state = through_checkpoint(first.state_dict())
    resumed = pid_blender(**kw)
    resumed.load_state_dict(state)
    assert resumed.lam == first.lam
    assert steps(resumed, JC[4:]) == expected[4:]
    # Without the state the continuation differs (the check can fail).
    assert steps(pid_blender(**kw), JC[4:]) != expected[4:]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"multiplier": "sgd"}, "multiplier: got 'sgd'; valid: adam, pid"),
        ({"pid_kp": -0.1}, "pid_kp: got -0.1; expected a finite number >= 0"),
        ({"pid_ki": float("nan")}, "pid_ki: got nan; expected a finite number >= 0"),
        ({"pid_kd": float("inf")}, "pid_kd: got inf; expected a finite number >= 0"),
        ({"pid_kp": 0.0, "pid_ki": 0.0, "pid_kd": 0.0},
         "pid_kp, pid_ki, pid_kd: all 0; expected at least one gain > 0"),
        ({"pid_d_delay": 0}, "pid_d_delay: got 0; expected an integer >= 1 (epochs)"),
        ({"pid_d_delay": 1.5}, "pid_d_delay: got 1.5; expected an integer >= 1 (epochs)"),
        ({"pid_p_ema_alpha": 1.0},
         "pid_p_ema_alpha: got 1.0; expected a number in [0, 1) (0 = no smoothing)"),
        ({"pid_d_ema_alpha": -0.1},
         "pid_d_ema_alpha: got -0.1; expected a number in [0, 1) (0 = no smoothing)"),
        ({"multiplier_max": 0.0}, "multiplier_max: got 0.0; expected a finite number > 0 or null (no cap)"),
        ({"multiplier_max": 0.5, "multiplier_init": 1.0},
         "multiplier_max: got 0.5; expected >= multiplier_init (1.0)"),
    ],
)
def test_bad_values_are_refused_in_one_line(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        LagrangianBlender(**{"multiplier": "pid", **kwargs})
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["blender.pid_d_delay=0"], "blender 'lagrangian': pid_d_delay: got 0; expected an integer >= 1"),
        (["blender.pid_kq=1"], "blender.pid_kq: unknown parameter of blender 'lagrangian'; valid: name, "),
        (["blender.multiplier=pi"], "blender 'lagrangian': multiplier: got 'pi'; valid: adam, pid"),
    ],
)
def test_the_config_refuses_bad_pid_settings(overrides: list[str], expected: str, cli_error) -> None:
    assert main(["fit", "--config", GOAL, "algorithm=cppo_pid", *overrides, "--print-config"]) == EXIT_CONFIG
    assert expected in cli_error()


# ------------------------------------------------ the blender's advantage weighting
ADV_R, ADV_C, RHO = [1.0, -2.0, 0.5], [3.0, 1.0, -1.0], [1.0, 1.25, 0.5]


class FreeLogProb(nn.Module):
    """log pi(a|s) of sample i is the parameter z_i (0 here, so rho = exp(-logp_old))."""

    def __init__(self) -> None:
        super().__init__()
        self.z = nn.Parameter(torch.zeros(len(RHO), dtype=torch.float64))

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.z


def batch() -> Batch:
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    zeros = torch.zeros(len(RHO), dtype=torch.float64)
    return Batch(zeros[:, None], zeros[:, None], -torch.log(t(RHO)), t(ADV_R), t(ADV_C), zeros, zeros)


def test_pid_blender_weights_the_advantages_by_its_lambda() -> None:
    blender, actor = pid_blender(clip=0.0), FreeLogProb()
    blender.observe_cost(14.0, GOAL_LIMIT)  # lambda = 2.4 (the first row above)
    assert blender.lam == pytest.approx(2.4)
    assert blender.metrics() == pytest.approx({"lagrange": 2.4, "pid_p": 2.0, "pid_i": 0.4, "pid_d": 0.0})
    objective, cost = blender.surrogates(actor, batch())  # type: ignore[arg-type]
    assert cost is None
    # (A_r - 2.4 A_c) / 3.4 = [-6.2, -4.4, 2.9] / 3.4; the mean of rho times it, and
    # d/dz_i = rho_i (A_r - 2.4 A_c)_i / (3.4 * 3).
    weighted = [(r - 2.4 * c) / 3.4 for r, c in zip(ADV_R, ADV_C, strict=True)]
    per_sample = [p * w / 3 for p, w in zip(RHO, weighted, strict=True)]
    assert float(objective.detach()) == pytest.approx(sum(per_sample))
    objective.backward()
    assert actor.z.grad.tolist() == pytest.approx(per_sample)


# --------------------------------------------------------- the Adam multiplier kept
def test_adam_lambda_moves_by_the_rate_whatever_the_violation() -> None:
    """Why the PID multiplier exists: Adam's first step is lr for a violation of 1 or 100;
    the PID's P term answers in proportion."""
    for violation in (1.0, 100.0):
        adam = LagrangianBlender(multiplier_init=0.0, multiplier_lr=0.35)
        adam.observe_cost(GOAL_LIMIT + violation, GOAL_LIMIT)
        assert adam.lam == pytest.approx(0.35, rel=1e-6)
        assert "pid_p" not in adam.metrics()
    pid = pid_blender(pid_ki=0.0, pid_kd=0.0)
    assert run(pid, [GOAL_LIMIT + 1.0, GOAL_LIMIT + 100.0]) == pytest.approx([0.5, 50.0])


def test_an_adam_checkpoint_of_the_old_layout_loads_and_continues() -> None:
    """The state an Adam blender wrote before the PID option (the multiplier and Adam's
    state): loaded, the run continues as the reference implementation of that rule."""
    ref = nn.Parameter(torch.tensor(0.001))
    opt = torch.optim.Adam([ref], lr=0.35)

    def ref_step(jc: float) -> float:
        opt.zero_grad()
        (-ref * (jc - GOAL_LIMIT)).backward()
        opt.step()
        with torch.no_grad():
            ref.clamp_(min=0.0)
        return float(ref.detach())

    for jc in JC[:4]:
        ref_step(jc)
    old_state = through_checkpoint({"multiplier": ref.detach().clone(), "optimizer": opt.state_dict()})
    blender = LagrangianBlender(multiplier_lr=0.35)
    blender.load_state_dict(old_state)
    assert run(blender, JC[4:]) == [ref_step(jc) for jc in JC[4:]]
    assert set(blender.state_dict()) == {"multiplier", "optimizer"}


def test_multiplier_max_caps_adam_too() -> None:
    adam = LagrangianBlender(multiplier_init=0.0, multiplier_lr=0.35, multiplier_max=0.5)
    assert run(adam, [20.0] * 3) == pytest.approx([0.35, 0.5, 0.5], rel=1e-5)


@pytest.mark.parametrize(("saved", "loading"), [("pid", "adam"), ("adam", "pid")])
def test_a_state_of_the_other_multiplier_is_refused(saved: str, loading: str) -> None:
    state = LagrangianBlender(multiplier=saved).state_dict()
    with pytest.raises(ValueError) as err:
        LagrangianBlender(multiplier=loading).load_state_dict(state)
    assert str(err.value) == (f"lagrangian blender: the checkpoint holds a {saved} multiplier, this blender "
                              f"has multiplier={loading}; resume with blender.multiplier={saved}")
