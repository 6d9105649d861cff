"""K-FAC against dense, sample-by-sample oracles (tests/oracles.py), in float64."""

from __future__ import annotations

import copy

import oracles
import pytest
import torch

from kfcpo.fisher import exact_quad
from kfcpo.flat import flat_grad, params_of
from kfcpo.preconditioner.kfac import KFAC

# Per-dimension log-stds that differ, so Sigma is not a multiple of the identity.
LOG_STD = [-0.5, 0.2, -1.0]
EXACT_RTOL = 1e-6  # the single-layer case is exact up to float64 round-off
FACTOR_RTOL = 1e-10


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with oracles.single_thread():
        yield


def single_layer(seed: int = 0):
    return oracles.make_actor(obs_dim=4, act_dim=3, hidden=(), seed=seed, log_std=LOG_STD)


def deep(seed: int = 0):
    # Distinct widths so a transposed factor cannot pass by accident.
    return oracles.make_actor(obs_dim=5, act_dim=2, hidden=(8, 7), seed=seed)


def states(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def policy_gradient(actor, obs: torch.Tensor, seed: int) -> torch.Tensor:
    """E[ratio * A] gradient at ratio = 1 with random advantages: a realistic g (it lies in
    the span of the per-state scores, unlike a random vector)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        dist = actor.distribution(obs)
        act = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=gen, dtype=obs.dtype)
    adv = torch.randn(obs.shape[0], generator=gen, dtype=obs.dtype)
    logp = actor.log_prob(obs, act)
    return flat_grad((torch.exp(logp - logp.detach()) * adv).mean(), params_of(actor))


def numel(actor) -> int:
    return sum(p.numel() for p in params_of(actor))


@pytest.mark.parametrize("damping", [1e-3, 0.5])
def test_single_layer_expected_is_exact(damping: float) -> None:
    # One Linear layer: J = I (x) a^T does not depend on the weights, so F_W = Sigma^-1 (x)
    # E[a a^T] = G (x) A exactly, and eigenbasis damping equals dense damping.
    actor = single_layer()
    obs = states(40, 4, seed=1)
    pre = KFAC(actor, damping=damping, estimator="expected")
    pre.update(obs)
    fisher = oracles.dense_fisher(actor, obs)
    g = torch.randn(numel(actor), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert oracles.rel_err(pre.solve(g), oracles.damped_solve(fisher, g, damping)) < EXACT_RTOL
    assert abs(float(pre.quad(g)) - float(g @ fisher @ g)) < EXACT_RTOL * float(g @ fisher @ g)


def test_sampled_error_shrinks_with_samples() -> None:
    actor = single_layer()
    obs = states(16, 4, seed=3)
    fisher = oracles.dense_fisher(actor, obs)
    g = torch.randn(numel(actor), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = oracles.damped_solve(fisher, g, 1e-3)
    mean_err = {}
    for samples in (1, 16, 256):
        errs = []
        for seed in range(5):
            torch.manual_seed(seed)
            pre = KFAC(actor, estimator="sampled", samples=samples)
            pre.update(obs)
            errs.append(oracles.rel_err(pre.solve(g), exact))
        mean_err[samples] = sum(errs) / len(errs)
    # Monte Carlo error ~ 1/sqrt(samples): 16x more samples should cut it by ~4.
    assert mean_err[16] < mean_err[1] / 2
    assert mean_err[256] < mean_err[16] / 2


def test_factors_match_per_sample_definitions() -> None:
    actor = deep()
    obs = states(24, 5, seed=5)
    pre = KFAC(actor)
    pre.update(obs)
    ours, ref = pre.factors(), oracles.layer_factors(actor, obs)
    assert len(ours) == len(ref) == 3
    for (a, g), (a_ref, g_ref) in zip(ours, ref, strict=True):
        assert a.shape == a_ref.shape and g.shape == g_ref.shape
        assert oracles.rel_err(a, a_ref) < FACTOR_RTOL
        assert oracles.rel_err(g, g_ref) < FACTOR_RTOL


def test_moving_average_is_bias_corrected() -> None:
    actor, beta = deep(), 0.9
    obs1, obs2 = states(20, 5, seed=6), states(30, 5, seed=7)
    pre = KFAC(actor, decay=beta)
    pre.update(obs1)
    pre.update(obs2)
    for (a, g), (a1, g1), (a2, g2) in zip(
        pre.factors(), oracles.layer_factors(actor, obs1), oracles.layer_factors(actor, obs2), strict=True
    ):
        norm = 1 - beta**2
        assert oracles.rel_err(a, (beta * (1 - beta) * a1 + (1 - beta) * a2) / norm) < FACTOR_RTOL
        assert oracles.rel_err(g, (beta * (1 - beta) * g1 + (1 - beta) * g2) / norm) < FACTOR_RTOL


def test_fisher_oracles_agree() -> None:
    # The mean/log-std cross terms that dense_fisher leaves out are zero in the KL Hessian.
    actor = deep()
    obs = states(16, 5, seed=8)
    assert oracles.rel_err(oracles.dense_fisher(actor, obs), oracles.kl_hessian_fisher(actor, obs)) < 1e-10


@pytest.mark.parametrize("damping", [1e-8, 1e-2])
def test_quad_and_solve_are_one_curvature(damping: float) -> None:
    # x = (K + lambda I)^-1 g  =>  g^T x = x^T K x + lambda |x|^2, with quad(x) = x^T K x.
    actor = deep()
    obs = states(64, 5, seed=9)
    pre = KFAC(actor, damping=damping)
    pre.update(obs)
    g = policy_gradient(actor, obs, seed=10)
    x = pre.solve(g)
    lhs, rhs = float(g @ x), float(pre.quad(x) + damping * x @ x)
    assert abs(lhs - rhs) < 1e-9 * abs(lhs)
    assert float(pre.quad(x)) > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_direction_is_closer_to_natural_gradient_than_gradient(seed: int) -> None:
    damping = 1e-3
    actor = deep(seed)
    obs = states(256, 5, seed=seed)
    pre = KFAC(actor, damping=damping)
    pre.update(obs)
    g = policy_gradient(actor, obs, seed=seed)
    natural = oracles.damped_solve(oracles.dense_fisher(actor, obs), g, damping)
    cos_kfac, cos_grad = oracles.cosine(pre.solve(g), natural), oracles.cosine(g, natural)
    assert cos_kfac > 0.3
    assert cos_kfac > cos_grad + 0.2


def _snapshot(pre: KFAC) -> list[torch.Tensor]:
    return [t.clone() for pair in pre.factors() for t in pair]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("invert_every", [1, 2])  # 2: the bad call refreshes without eigh
def test_nonfinite_states_skip_the_update(bad: float, invert_every: int) -> None:
    actor = deep()
    obs = states(32, 5, seed=11)
    pre = KFAC(actor, invert_every=invert_every)
    pre.update(obs)
    pre.metrics()  # reset the per-epoch counters
    g = policy_gradient(actor, obs, seed=12)
    before, x_before = _snapshot(pre), pre.solve(g)
    poisoned = obs.clone()
    poisoned[3, 1] = bad
    pre.update(poisoned)
    assert pre.metrics()["kfac_skipped"] == 1
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(pre), strict=True))
    x = pre.solve(g)
    assert torch.isfinite(x).all() and torch.equal(x, x_before)


def test_failed_eigendecomposition_skips_and_keeps_factors(monkeypatch: pytest.MonkeyPatch) -> None:
    actor = deep()
    pre = KFAC(actor)
    pre.update(states(32, 5, seed=13))
    before = _snapshot(pre)

    def broken(*args, **kwargs):
        raise torch.linalg.LinAlgError("injected failure")

    monkeypatch.setattr(torch.linalg, "eigh", broken)
    pre.update(states(32, 5, seed=14))
    assert pre.metrics()["kfac_skipped"] == 1
    # The moving average did not advance either: the skipped batch left no trace.
    assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(pre), strict=True))


def test_all_updates_skipped_falls_back_to_identity() -> None:
    actor = deep()
    pre = KFAC(actor)
    with pytest.raises(RuntimeError):
        pre.solve(torch.ones(numel(actor), dtype=torch.float64))
    pre.update(torch.full((4, 5), float("nan"), dtype=torch.float64))
    g = torch.ones(numel(actor), dtype=torch.float64)
    x = pre.solve(g)
    # Mean blocks: identity factors, (1 + damping)^-1 g; the log-std block keeps its exact
    # Fisher 2 I (whatever the std), so (2 + damping)^-1 g.
    is_log_std = torch.cat([torch.full((q.numel(),), q is actor.log_std) for q in params_of(actor)])
    expected = torch.full_like(x, 1 / (1 + pre.damping))
    expected[is_log_std] = 1 / (2 + pre.damping)
    assert is_log_std.any() and not is_log_std.all()
    torch.testing.assert_close(x, expected, rtol=1e-12, atol=0.0)


def test_state_dict_round_trip_resumes_exactly() -> None:
    actor = deep()
    obs = [states(32, 5, seed=s) for s in range(15, 20)]
    pre = KFAC(actor, decay=0.8, update_every=2, invert_every=3)
    for o in obs[:3]:
        pre.update(o)
    clone_actor = copy.deepcopy(actor)
    resumed = KFAC(clone_actor, decay=0.8, update_every=2, invert_every=3)
    resumed.load_state_dict(copy.deepcopy(pre.state_dict()))
    g = policy_gradient(actor, obs[0], seed=21)
    assert torch.equal(pre.solve(g), resumed.solve(g))
    assert torch.equal(pre.quad(g), resumed.quad(g))
    for o in obs[3:]:  # the T_s / T_f clock and the EMA counter resume too
        pre.update(o)
        resumed.update(o)
    assert torch.equal(pre.solve(g), resumed.solve(g))
    assert all(torch.equal(a, b) for a, b in zip(_snapshot(pre), _snapshot(resumed), strict=True))


def test_update_every_and_invert_every() -> None:
    actor = deep()
    g = policy_gradient(actor, states(32, 5, seed=22), seed=23)
    pre = KFAC(actor, update_every=2, invert_every=3)
    pre.update(states(32, 5, seed=24))  # call 0: refresh + invert
    factors0, x0 = _snapshot(pre), pre.solve(g)
    pre.update(states(32, 5, seed=25))  # call 1: nothing
    assert all(torch.equal(a, b) for a, b in zip(factors0, _snapshot(pre), strict=True))
    pre.update(states(32, 5, seed=26))  # call 2: refresh, no inversion: solve unchanged
    assert not torch.equal(factors0[0], _snapshot(pre)[0])
    assert torch.equal(x0, pre.solve(g))
    pre.update(states(32, 5, seed=27))  # call 3: inversion of the refreshed factors
    assert not torch.equal(x0, pre.solve(g))
    assert pre.metrics() == {"kfac_skipped": 0.0, "kfac_refreshes": 2.0, "kfac_inversions": 2.0}


def test_float32_actor_gets_float32_directions() -> None:
    actor = deep().float()
    obs = states(32, 5, seed=28).float()
    pre = KFAC(actor)
    pre.update(obs)
    g = torch.randn(numel(actor))
    assert pre.solve(g).dtype == torch.float32 and pre.quad(g).dtype == torch.float32


def test_rejects_parameters_it_cannot_factor() -> None:
    actor = deep()
    actor.extra = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="Linear"):
        KFAC(actor)


def test_exact_quad_mode_is_the_dense_fisher_form() -> None:
    actor = deep()
    obs = states(48, 5, seed=29)
    pre = KFAC(actor, quad_mode="exact")
    pre.update(obs)
    v = policy_gradient(actor, obs, seed=30)
    dense = float(v @ oracles.dense_fisher(actor, obs) @ v)
    assert abs(float(pre.quad(v)) - dense) < 1e-10 * dense
    # Unlike the Kronecker form it follows the parameters, like a KL measured after a step.
    pre.apply_step(0.1 * v)
    moved = float(v @ oracles.dense_fisher(actor, obs) @ v)
    assert abs(moved - dense) > 1e-3 * dense
    assert abs(float(pre.quad(v)) - moved) < 1e-10 * moved


def test_exact_quad_with_a_frozen_log_std_is_the_mean_fisher_form() -> None:
    actor = deep()
    actor.log_std.requires_grad_(False)
    obs = states(40, 5, seed=31)
    v = torch.randn(numel(actor), dtype=torch.float64, generator=torch.Generator().manual_seed(32))
    hessian = oracles.kl_hessian_fisher(actor, obs)  # over the trainable parameters only
    assert abs(float(exact_quad(actor, obs, v)) - float(v @ hessian @ v)) < 1e-10 * float(v @ hessian @ v)
    with pytest.raises(ValueError, match="trainable parameters"):
        exact_quad(actor, obs, torch.cat([v, v[:1]]))
