"""CPO blender against oracles that need no solver to converge (tests/oracles.py).

The QP  max g_r.x  s.t.  c + g_c.x <= 0,  0.5 x^T F x <= delta  maximizes a linear objective
over an ellipsoid cut by a half-space: it is convex, so the KKT conditions are sufficient (a
point that satisfies them IS the optimum) and, with a strictly feasible point, necessary (the
optimum always passes). On random small problems with an explicit positive definite F, in
every case of the QP, each step is checked
  1. by KKT: both constraints hold, the multipliers of g_r = lam F x + nu g_c recovered by
     least squares are >= 0, complementary slackness, a small stationarity residual; and the
     blender's own lam and nu (its metrics) are those multipliers;
  2. against the closed form by geometry in whitened coordinates (a ball cut by a plane),
     a derivation independent of the blender's dual;
  3. by a second opinion, SLSQP from several starts: no feasible point it reaches may beat the
     step. A solver that stops early only reaches a worse point, so this check cannot fail on
     its own; when the solver reports failure from every start, a warning records it.
When no point of the region satisfies the constraint, the step must be the recovery step: the
KKT point of  min g_c.x  in the region, where c + g_c.x > 0 then proves the infeasibility.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from oracles import MatrixPrecond, assert_kkt, spd_problem, trust_region_kkt, trust_region_optimum
from scipy.optimize import minimize

from kfcpo.blender.base import Directions
from kfcpo.blender.cpo import CPOBlender, CPOSolution, solve_cpo_qp

DIM = 5
DELTA = 0.01
TOL = 1e-9  # relative to the step's length, so it is as strict for short steps as for long ones
SEEDS = range(6)
STARTS = 4  # the second opinion's starting points: the origin and random interior points
# A solver point counts as feasible within this (relative) slack; it may then exceed the
# optimum by about the slack times a multiplier, hence the objective's allowance.
SOLVER_FEAS_TOL, SOLVER_OBJ_TOL = 1e-7, 1e-6


class SolverWarning(UserWarning):
    """The second-opinion solver reported failure from every start (the check still ran)."""


def random_problem(seed: int) -> tuple[MatrixPrecond, torch.Tensor, torch.Tensor]:
    return spd_problem(seed, DIM)


def cpo_step(
    p: MatrixPrecond, g_r: torch.Tensor, g_c: torch.Tensor, c: float
) -> tuple[np.ndarray, CPOSolution]:
    blender = CPOBlender(target_kl=DELTA)
    d = Directions(g_r, p.solve(g_r), g_c, p.solve(g_c), ep_cost=25.0 + c, cost_limit=25.0)
    sol = blender.solve(d)
    assert sol is not None
    return blender.blend(d, p).numpy(), sol


def second_opinion(
    f: np.ndarray, g: np.ndarray, half_space: tuple[np.ndarray, float] | None
) -> list[np.ndarray]:
    """Feasible points SLSQP reaches for  max g.x  in the region [and the half-space] from
    STARTS starts; a warning when it reports failure from all of them."""
    region = {"type": "ineq", "fun": lambda x: DELTA - 0.5 * x @ f @ x, "jac": lambda x: -(f @ x)}
    cons = [region]
    if half_space is not None:
        b, c = half_space
        cons.append({"type": "ineq", "fun": lambda x: -(c + b @ x), "jac": lambda x: -b})
    rng = np.random.default_rng(0)
    starts = [np.zeros(DIM)]
    for _ in range(STARTS - 1):  # uniform directions, halfway to the region's boundary
        z = rng.standard_normal(DIM)
        starts.append(0.5 * math.sqrt(2 * DELTA / (z @ f @ z)) * z)
    scale = 1.0 / np.linalg.norm(g)  # an O(1) objective, so the stopping rule is about the step
    points, messages = [], []
    for x0 in starts:
        res = minimize(lambda x: -scale * g @ x, x0, jac=lambda x: -scale * g, constraints=cons,
                       method="SLSQP", options={"ftol": 1e-15, "maxiter": 2000})
        if not res.success:
            messages.append(str(res.message))
        feasible = 0.5 * res.x @ f @ res.x <= DELTA * (1 + SOLVER_FEAS_TOL)
        if half_space is not None:
            reach = math.sqrt(2 * DELTA * float(half_space[0] @ np.linalg.solve(f, half_space[0])))
            feasible &= half_space[1] + half_space[0] @ res.x <= SOLVER_FEAS_TOL * reach
        if feasible:
            points.append(res.x)
    if len(messages) == STARTS:
        warnings.warn(f"SLSQP failed from all {STARTS} starts: {sorted(set(messages))}", SolverWarning,
                      stacklevel=2)
    return points


def assert_no_better_point(f: np.ndarray, g: np.ndarray, step: np.ndarray,
                           half_space: tuple[np.ndarray, float] | None) -> None:
    best = g @ step
    for x in second_opinion(f, g, half_space):
        assert g @ x <= best + SOLVER_OBJ_TOL * abs(best), ("a feasible point beats the step", x, step)


def check(p: MatrixPrecond, g_r: torch.Tensor, g_c: torch.Tensor, c: float, case: int) -> np.ndarray:
    step, sol = cpo_step(p, g_r, g_c, c)
    assert sol.case == case
    f, g, b = p.m.numpy(), g_r.numpy(), g_c.numpy()
    expected = trust_region_optimum(p.m, g_r, g_c, c, DELTA)
    if case == 0:
        # Recovery: the minimizer of b.x in the region, where the constraint still fails.
        assert expected.kind == "recovery"
        assert_kkt(trust_region_kkt(step, -b, f, DELTA))
        assert c + b @ step > 0.0
        assert_no_better_point(f, -b, step, None)
    else:
        assert expected.kind in ("optimum", "face")
        report = trust_region_kkt(step, g, f, DELTA, (b, c))
        assert_kkt(report)
        if sol.lam > 0.0:  # the dual's multipliers (reported in the metrics) are the KKT ones
            assert report.multipliers["lam"] == pytest.approx(sol.lam, rel=1e-7)
            assert report.multipliers["nu"] == pytest.approx(sol.nu, rel=1e-7, abs=1e-9 * sol.lam)
        assert_no_better_point(f, g, step, (b, c))
    scale = float(expected.x.norm())
    if expected.kind == "face":  # many optima: equal value, feasibility is in the KKT check
        assert g @ step == pytest.approx(g @ expected.x.numpy(), rel=TOL)
    else:
        assert np.abs(step - expected.x.numpy()).max() <= TOL * scale, (step, expected.x)
    return step


def c_for(p: MatrixPrecond, g_c: torch.Tensor, factor: float) -> float:
    """c as a multiple of sqrt(2 delta s): |factor| < 1 puts the boundary inside the region."""
    s = float(g_c @ p.solve(g_c))
    return factor * math.sqrt(2 * DELTA * s)


@pytest.mark.parametrize("seed", SEEDS)
def test_case0_infeasible_gives_the_recovery_step(seed: int) -> None:
    p, g_r, g_c = random_problem(seed)
    step = check(p, g_r, g_c, c_for(p, g_c, 1.5), case=0)
    x_c = p.solve(g_c).numpy()  # the closed form -sqrt(2 delta / s) x_c
    np.testing.assert_allclose(step, -math.sqrt(2 * DELTA / float(g_c @ p.solve(g_c))) * x_c, rtol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("factor", [0.2, 0.6, 0.95])
def test_case1_infeasible_now_recoverable(seed: int, factor: float) -> None:
    p, g_r, g_c = random_problem(seed)
    check(p, g_r, g_c, c_for(p, g_c, factor), case=1)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("factor", [-0.95, -0.5, -0.05, 0.0])
def test_case2_feasible_constraint_may_bind(seed: int, factor: float) -> None:
    p, g_r, g_c = random_problem(seed)
    check(p, g_r, g_c, c_for(p, g_c, factor), case=2)


@pytest.mark.parametrize("seed", SEEDS)
def test_case3_whole_region_feasible_gives_the_reward_step(seed: int) -> None:
    p, g_r, g_c = random_problem(seed)
    step = check(p, g_r, g_c, c_for(p, g_c, -1.5), case=3)
    x_r = p.solve(g_r).numpy()  # the closed form sqrt(2 delta / q) x_r
    np.testing.assert_allclose(step, math.sqrt(2 * DELTA / float(g_r @ p.solve(g_r))) * x_r, rtol=1e-12)


def test_case4_cost_gradient_zero_gives_the_reward_step() -> None:
    p, g_r, _ = random_problem(0)
    check(p, g_r, torch.zeros(DIM, dtype=torch.float64), -1.0, case=4)


def test_cost_gradient_zero_while_infeasible_gives_no_step() -> None:
    """Nothing lowers the linearized cost (g_c = 0, c > 0): no step, rather than a guess."""
    p, g_r, _ = random_problem(0)
    g_c = torch.zeros(DIM, dtype=torch.float64)
    assert trust_region_optimum(p.m, g_r, g_c, 1.0, DELTA).kind == "none"
    step, sol = cpo_step(p, g_r, g_c, 1.0)
    assert sol.case == 0 and not step.any()


def test_both_branches_of_the_dual_are_exercised() -> None:
    """Across the random problems, the constraint binds (nu > 0) in some and not in others
    (nu = 0: the reward step is already feasible) in both case 1 and case 2."""
    seen = set()
    for seed in range(40):
        p, g_r, g_c = random_problem(seed)
        for factor in (-0.5, 0.5):
            for sign in (1.0, -1.0):  # flip the reward gradient to flip r
                q, r = float(g_r @ p.solve(g_r)), sign * float(g_r @ p.solve(g_c))
                s = float(g_c @ p.solve(g_c))
                sol = solve_cpo_qp(q, r, s, c_for(p, g_c, factor), DELTA)
                seen.add((sol.case, sol.nu > 0))
    assert {(1, True), (1, False), (2, True), (2, False)} <= seen


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("case", "k", "factor"), [(1, 2.0, 0.5), (1, -2.0, 0.5), (2, 2.0, -0.3), (2, -2.0, -0.3)]
)
def test_parallel_gradients_are_optimal(seed: int, case: int, k: float, factor: float) -> None:
    """g_r = k g_c: the dual's 0 / 0 branch is replaced by the 1-D solution along x_c. With
    k > 0 every point of the constraint's plane inside the region is optimal (a face: the
    value is compared), with k < 0 the optimum is unique (the points are compared); the KKT
    conditions hold either way."""
    p, _, g_c = random_problem(seed)
    g_r, c = k * g_c, c_for(p, g_c, factor)
    assert trust_region_optimum(p.m, g_r, g_c, c, DELTA).kind == ("face" if k > 0 else "optimum")
    check(p, g_r, g_c, c, case=case)


def test_nonfinite_input_gives_a_nan_step() -> None:
    p, g_r, g_c = random_problem(0)
    d = Directions(g_r, p.solve(g_r), g_c, p.solve(g_c), ep_cost=math.nan, cost_limit=25.0)
    assert torch.isnan(CPOBlender().blend(d, p)).all()


def test_metrics_report_case_and_multipliers_then_reset() -> None:
    p, g_r, g_c = random_problem(0)
    blender = CPOBlender(target_kl=DELTA)
    c = c_for(p, g_c, 1.5)
    blender.blend(Directions(g_r, p.solve(g_r), g_c, p.solve(g_c), 25.0 + c, 25.0), p)
    assert blender.metrics() == {"cpo_case": 0.0, "cpo_lambda": 0.0, "cpo_nu": 0.0}
    assert blender.metrics() == {}


@pytest.mark.parametrize(("factor", "case"), [(0.6, 1), (-0.05, 2)])
def test_metrics_report_the_kkt_multipliers_of_the_step(factor: float, case: int) -> None:
    """Where both multipliers are positive, the metrics are the step's KKT multipliers
    (g_r = lam F x + nu g_c), found from the step alone by the oracle. The reward gradient
    is signed so that the reward step raises the cost: then the constraint binds."""
    p, g_r, g_c = random_problem(1)
    if float(g_r @ p.solve(g_c)) < 0.0:
        g_r = -g_r
    c = c_for(p, g_c, factor)
    blender = CPOBlender(target_kl=DELTA)
    step = blender.blend(Directions(g_r, p.solve(g_r), g_c, p.solve(g_c), 25.0 + c, 25.0), p)
    kkt = trust_region_kkt(step.numpy(), g_r.numpy(), p.m.numpy(), DELTA, (g_c.numpy(), c))
    m = blender.metrics()
    assert m["cpo_case"] == case and kkt.multipliers["lam"] > 0.0 and kkt.multipliers["nu"] > 0.0
    assert m["cpo_lambda"] == pytest.approx(kkt.multipliers["lam"], rel=1e-7)
    assert m["cpo_nu"] == pytest.approx(kkt.multipliers["nu"], rel=1e-7)
