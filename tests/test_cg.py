"""Conjugate gradient against the dense Fisher oracle (tests/oracles.py), in float64."""

from __future__ import annotations

import oracles
import pytest
import torch

from kfcpo.flat import params_of
from kfcpo.preconditioner.cg import ConjugateGradient, conjugate_gradient

DAMPING = 0.1


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with oracles.single_thread():
        yield


@pytest.fixture
def setup():
    actor = oracles.make_actor(obs_dim=5, act_dim=2, hidden=(8, 7), seed=0, log_std=[-0.5, 0.3])
    obs = torch.randn(64, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    n = sum(p.numel() for p in params_of(actor))
    g = torch.randn(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return actor, obs, g


def test_fisher_vector_products_match_dense_fisher(setup) -> None:
    actor, obs, g = setup
    pre = ConjugateGradient(actor)
    pre.update(obs)
    fisher = oracles.kl_hessian_fisher(actor, obs)
    assert oracles.rel_err(pre.fvp(g), fisher @ g) < 1e-12
    assert abs(float(pre.quad(g)) - float(g @ fisher @ g)) < 1e-10 * float(g @ fisher @ g)


def test_solve_converges_to_the_dense_damped_solve(setup) -> None:
    actor, obs, g = setup
    exact = oracles.damped_solve(oracles.dense_fisher(actor, obs), g, DAMPING)
    few = ConjugateGradient(actor, damping=DAMPING, iters=3, tol=0.0)
    many = ConjugateGradient(actor, damping=DAMPING, iters=200)
    for pre in (few, many):
        pre.update(obs)
    assert oracles.rel_err(many.solve(g), exact) < 1e-4
    # ...and it is the iterations that get it there: three steps are far from it.
    assert oracles.rel_err(few.solve(g), exact) > 1e-2


def test_early_exit_on_tolerance(setup) -> None:
    actor, obs, g = setup
    capped = ConjugateGradient(actor, damping=DAMPING, iters=200, tol=0.0)
    early = ConjugateGradient(actor, damping=DAMPING, iters=200, tol=1e-10)
    for pre in (capped, early):
        pre.update(obs)
        pre.solve(g)
    assert capped.last_iters == 200
    assert 0 < early.last_iters < 200
    assert early.metrics()["cg_iters"] == early.last_iters
    residual = g - (oracles.dense_fisher(actor, obs) + DAMPING * torch.eye(g.numel())) @ early.solve(g)
    assert float(residual @ residual) <= 1e-10


def test_products_follow_the_parameters(setup) -> None:
    # After a step the stored graph is stale; the products must be those of the new policy.
    actor, obs, g = setup
    pre = ConjugateGradient(actor)
    pre.update(obs)
    pre.fvp(g)
    pre.apply_step(0.05 * g)
    assert oracles.rel_err(pre.fvp(g), oracles.dense_fisher(actor, obs) @ g) < 1e-12


def test_solve_before_update_is_an_error(setup) -> None:
    actor, _, g = setup
    with pytest.raises(RuntimeError, match="update"):
        ConjugateGradient(actor).solve(g)


def test_conjugate_gradient_is_exact_in_n_steps() -> None:
    gen = torch.Generator().manual_seed(3)
    m = torch.randn(6, 6, generator=gen, dtype=torch.float64)
    spd = m @ m.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    x, used, rr = conjugate_gradient(lambda v: spd @ v, b, iters=6, tol=0.0)
    assert used == 6 and rr < 1e-20
    assert oracles.rel_err(x, torch.linalg.solve(spd, b)) < 1e-10


def test_nonfinite_states_give_a_finite_zero_direction(setup) -> None:
    actor, obs, g = setup
    poisoned = obs.clone()
    poisoned[0, 0] = float("nan")
    pre = ConjugateGradient(actor)
    pre.update(poisoned)
    x = pre.solve(g)
    assert torch.isfinite(x).all() and not x.any()
