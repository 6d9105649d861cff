"""PCPO blender: the reward natural step, then the projection onto the linearized cost
half-space, against a dense computation in whitened coordinates (F^1/2 by eigh) and the KKT
conditions of the projection (tests/oracles.py: convex, so they certify the optimum)."""

from __future__ import annotations

import math

import pytest
import torch
from oracles import MatrixPrecond, assert_kkt, projection_kkt, spd_problem, whiten

from kfcpo.blender.base import Directions
from kfcpo.blender.pcpo import PCPOBlender

DIM = 6
DELTA = 0.01
LIMIT = 25.0
SEEDS = range(5)



def problem(seed: int) -> tuple[MatrixPrecond, torch.Tensor, torch.Tensor]:
    return spd_problem(seed, DIM)


def step_of(p: MatrixPrecond, g_r: torch.Tensor, g_c: torch.Tensor, c: float, projection: str = "kl"):
    d = Directions(g_r, p.solve(g_r), g_c, p.solve(g_c), ep_cost=LIMIT + c, cost_limit=LIMIT)
    return PCPOBlender(target_kl=DELTA, projection=projection).blend(d, p)


def dense_projection(metric: torch.Tensor, point: torch.Tensor, a: torch.Tensor, c: float) -> torch.Tensor:
    """argmin_x (x - point)^T M (x - point) s.t. c + a.x <= 0, computed in the coordinates
    y = M^1/2 x, where the metric is Euclidean and the projection onto a half-space is the
    textbook one."""
    root, inv_root = whiten(metric)
    y, a_y = root @ point, inv_root @ a  # a.x = a_y.y
    excess = c + a_y @ y
    if excess > 0:
        y = y - excess / (a_y @ a_y) * a_y
    return inv_root @ y


def reward_step(p: MatrixPrecond, g_r: torch.Tensor) -> torch.Tensor:
    f_inv_g = torch.linalg.inv(p.m) @ g_r  # F^-1 g (not F g), densely
    return math.sqrt(2 * DELTA / float(g_r @ f_inv_g)) * f_inv_g


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("c", [-0.5, -0.01, 0.0, 0.02, 0.3])
@pytest.mark.parametrize("projection", ["kl", "l2"])
def test_step_is_the_metric_projection_inside_the_half_space(seed: int, c: float, projection: str) -> None:
    p, g_r, g_c = problem(seed)
    step = step_of(p, g_r, g_c, c, projection)
    assert c + float(g_c @ step) <= 1e-12  # on or inside the linearized half-space
    metric = p.m if projection == "kl" else torch.eye(DIM, dtype=torch.float64)
    half = reward_step(p, g_r)
    torch.testing.assert_close(step, dense_projection(metric, half, g_c, c), rtol=1e-9, atol=1e-12)
    assert_kkt(projection_kkt(step, half, metric, g_c, c))  # M (half - x) = nu g_c, nu >= 0


@pytest.mark.parametrize("seed", SEEDS)
def test_projection_is_the_closest_admissible_point(seed: int) -> None:
    """No random point of the half-space is closer to the reward step in the F metric."""
    p, g_r, g_c = problem(seed)
    half = reward_step(p, g_r)
    c = abs(float(g_c @ half)) + 0.1  # the reward step itself violates: a real projection
    step = step_of(p, g_r, g_c, c)

    def dist(x: torch.Tensor) -> float:
        return float((x - half) @ p.m @ (x - half))

    gen = torch.Generator().manual_seed(100 + seed)
    for _ in range(500):
        x = step + 0.05 * torch.randn(DIM, dtype=torch.float64, generator=gen)
        if c + float(g_c @ x) <= 0:
            assert dist(x) >= dist(step) - 1e-12


def test_feasible_reward_step_is_kept_and_fills_the_trust_region() -> None:
    p, g_r, g_c = problem(0)
    c = -10.0  # far inside: no projection
    step = step_of(p, g_r, g_c, c)
    torch.testing.assert_close(step, reward_step(p, g_r))
    assert float(0.5 * p.quad(step)) == pytest.approx(DELTA, rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_rescale_shrinks_a_step_beyond_the_trust_region_onto_its_boundary(seed: int) -> None:
    p, g_r, g_c = problem(seed)
    c = abs(float(g_c @ reward_step(p, g_r))) + 5.0  # far infeasible: a long projection
    d = Directions(g_r, p.solve(g_r), g_c, p.solve(g_c), LIMIT + c, LIMIT)
    paper = PCPOBlender(target_kl=DELTA).blend(d, p)
    shrunk = PCPOBlender(target_kl=DELTA, rescale=True).blend(d, p)
    assert float(0.5 * p.quad(paper)) > DELTA
    assert float(0.5 * p.quad(shrunk)) == pytest.approx(DELTA, rel=1e-9)
    torch.testing.assert_close(shrunk / shrunk.norm(), paper / paper.norm())  # same direction
    # no projection: nothing changes (a short projection: the test below)
    near = Directions(g_r, p.solve(g_r), g_c, p.solve(g_c), LIMIT - 10.0, LIMIT)
    assert torch.equal(PCPOBlender(rescale=True).blend(near, p), PCPOBlender().blend(near, p))


@pytest.mark.parametrize("seed", range(4))
def test_rescale_leaves_a_short_projection_inside_the_region_as_it_is(seed: int) -> None:
    """Just past the linearized constraint the projection is short; when the reward step
    raises the cost, it moves the step towards the origin (in the F-norm), so it is inside
    the region and `rescale` must neither shrink nor enlarge it."""
    p, g_r, g_c = problem(seed)
    half = reward_step(p, g_r)
    if float(g_c @ half) < 0.0:  # make the reward step raise the cost: the conflict case
        g_c = -g_c
    raise_c = float(g_c @ half)
    d = Directions(g_r, p.solve(g_r), g_c, p.solve(g_c), LIMIT - raise_c + 1e-3 * raise_c, LIMIT)
    paper = PCPOBlender(target_kl=DELTA)
    step = paper.blend(d, p)
    assert paper.metrics()["pcpo_projected_frac"] == 1.0
    assert float(0.5 * p.quad(step)) < DELTA
    assert torch.equal(PCPOBlender(target_kl=DELTA, rescale=True).blend(d, p), step)


def test_metrics_count_projections_then_reset() -> None:
    p, g_r, g_c = problem(0)
    blender = PCPOBlender(target_kl=DELTA)
    for c in (-10.0, 10.0):
        blender.blend(Directions(g_r, p.solve(g_r), g_c, p.solve(g_c), LIMIT + c, LIMIT), p)
    m = blender.metrics()
    assert m["pcpo_projected_frac"] == 0.5 and m["pcpo_shift"] > 0
    assert blender.metrics() == {}


def test_bad_projection_name_is_refused() -> None:
    with pytest.raises(ValueError, match="projection must be one of kl, l2"):
        PCPOBlender(projection="kl2")
