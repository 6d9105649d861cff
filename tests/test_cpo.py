"""CPO blender against an independent generic solver (scipy SLSQP on the primal QP).

Random small problems with an explicit positive definite F, in every case of the QP:
the step must equal the solver's optimum to 1e-5, satisfy the linearized constraint and
the quadratic trust region, and the infeasible case must give the recovery step (the
largest decrease of the linearized cost inside the trust region).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from oracles import MatrixPrecond
from scipy.optimize import minimize

from kfcpo.blend.base import Directions
from kfcpo.blend.cpo import CPOBlender, solve_cpo_qp

DIM = 5
DELTA = 0.01
TOL = 1e-5  # the bar for the step
SEEDS = range(6)



def random_problem(seed: int) -> tuple[MatrixPrecond, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(DIM, DIM, dtype=torch.float64, generator=gen)
    f = a @ a.T + 0.3 * torch.eye(DIM, dtype=torch.float64)
    g_r = torch.randn(DIM, dtype=torch.float64, generator=gen)
    g_c = torch.randn(DIM, dtype=torch.float64, generator=gen)
    return MatrixPrecond(f), g_r, g_c


def cpo_step(p: MatrixPrecond, g_r: torch.Tensor, g_c: torch.Tensor, c: float) -> tuple[np.ndarray, int]:
    blender = CPOBlender(target_kl=DELTA)
    d = Directions(g_r, p.solve(g_r), g_c, p.solve(g_c), ep_cost=25.0 + c, cost_limit=25.0)
    sol = blender.solve(d)
    assert sol is not None
    return blender.blend(d, p).numpy(), sol.case


def solver_step(f: np.ndarray, g_r: np.ndarray, g_c: np.ndarray, c: float) -> np.ndarray:
    """max g_r.x s.t. c + g_c.x <= 0, 0.5 x^T F x <= delta by SLSQP; when no x satisfies
    both, min g_c.x s.t. 0.5 x^T F x <= delta (the recovery problem)."""
    region = {"type": "ineq", "fun": lambda x: DELTA - 0.5 * x @ f @ x, "jac": lambda x: -(f @ x)}
    half_space = {"type": "ineq", "fun": lambda x: -(c + g_c @ x), "jac": lambda x: -g_c}
    opts = {"ftol": 1e-15, "maxiter": 2000}
    # Whether the two sets meet: the least linearized cost in the region is <= 0.
    recovery = minimize(lambda x: g_c @ x, np.zeros(DIM), jac=lambda x: g_c, constraints=[region],
                        method="SLSQP", options=opts)
    if c + recovery.fun > 0:
        return recovery.x
    # Scale the objective to O(1) so SLSQP's stopping rule is about the step, not its units.
    scale = 1.0 / np.linalg.norm(g_r)
    best = minimize(lambda x: -scale * g_r @ x, np.zeros(DIM), jac=lambda x: -scale * g_r,
                    constraints=[region, half_space], method="SLSQP", options=opts)
    assert best.success, best.message
    return best.x


def check(p: MatrixPrecond, g_r: torch.Tensor, g_c: torch.Tensor, c: float, case: int) -> None:
    step, got_case = cpo_step(p, g_r, g_c, c)
    assert got_case == case
    f = p.m.numpy()
    expected = solver_step(f, g_r.numpy(), g_c.numpy(), c)
    assert np.abs(step - expected).max() <= TOL, (step, expected)
    # The step satisfies the quadratic KL bound and, when feasible, the linearized constraint.
    assert 0.5 * step @ f @ step <= DELTA * (1 + 1e-9)
    if case != 0:
        assert c + g_c.numpy() @ step <= 1e-9


def c_for(p: MatrixPrecond, g_c: torch.Tensor, factor: float) -> float:
    """c as a multiple of sqrt(2 delta s): |factor| < 1 puts the boundary inside the region."""
    s = float(g_c @ p.solve(g_c))
    return factor * math.sqrt(2 * DELTA * s)


@pytest.mark.parametrize("seed", SEEDS)
def test_case0_infeasible_gives_the_recovery_step(seed: int) -> None:
    p, g_r, g_c = random_problem(seed)
    c = c_for(p, g_c, 1.5)
    check(p, g_r, g_c, c, case=0)
    step, _ = cpo_step(p, g_r, g_c, c)
    x_c = p.solve(g_c).numpy()
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
    check(p, g_r, g_c, c_for(p, g_c, -1.5), case=3)


def test_case4_cost_gradient_zero_gives_the_reward_step() -> None:
    p, g_r, _ = random_problem(0)
    check(p, g_r, torch.zeros(DIM, dtype=torch.float64), -1.0, case=4)


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
    k > 0 every point of the constraint's hyperplane inside the region is optimal (the
    solver's point is one of many), so optimality is checked by value and feasibility; with
    k < 0 the optimum is unique and the points are compared."""
    p, _, g_c = random_problem(seed)
    g_r, c, f = k * g_c, c_for(p, g_c, factor), p.m.numpy()
    step, got_case = cpo_step(p, g_r, g_c, c)
    assert got_case == case
    assert 0.5 * step @ f @ step <= DELTA * (1 + 1e-9) and c + g_c.numpy() @ step <= 1e-9
    region = {"type": "ineq", "fun": lambda x: DELTA - 0.5 * x @ f @ x}
    half_space = {"type": "ineq", "fun": lambda x: -(c + g_c.numpy() @ x)}
    best = minimize(lambda x: -g_r.numpy() @ x, np.zeros(DIM), constraints=[region, half_space],
                    method="SLSQP", options={"ftol": 1e-15, "maxiter": 2000})
    assert g_r.numpy() @ step >= -best.fun - 1e-7
    if k < 0:
        assert np.abs(step - best.x).max() <= TOL


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
