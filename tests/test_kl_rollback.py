"""KLRollback (docs/algorithm.md 2.3) with a real GaussianActor and random states."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from oracles import PlainPrecond
from torch.distributions import kl_divergence

from kfcpo.data.batch import Batch
from kfcpo.flat import get_flat, params_of
from kfcpo.guard.base import PolicyMover
from kfcpo.guard.kl_rollback import KLRollback
from kfcpo.models.actor import GaussianActor

OBS, ACT, N = 5, 2, 64
EPS = 0.01
STEPS = 120  # random steps in the invariant test
VALIDATE = torch.distributions.Distribution._validate_args



class AdamPrecond(PlainPrecond):
    """Steps through torch.optim.Adam, so a rollback must also restore Adam's state."""

    has_optimizer_state = True

    def __init__(self, actor: GaussianActor, lr: float) -> None:
        super().__init__(actor)
        self.opt = torch.optim.Adam(params_of(actor), lr=lr)

    def apply_step(self, step: torch.Tensor) -> None:
        offset = 0
        for p in params_of(self.actor):
            # Adam descends, the step ascends: feed it as the negative gradient.
            p.grad = -step[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        self.opt.step()

    def step_state(self) -> Any:
        return copy.deepcopy(self.opt.state_dict())

    def load_step_state(self, state: Any) -> None:
        self.opt.load_state_dict(copy.deepcopy(state))


def make_actor(seed: int = 0) -> GaussianActor:
    torch.manual_seed(seed)
    return GaussianActor(OBS, ACT, hidden=(16, 16))


def make_batch(seed: int = 0, n: int = N) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, OBS, generator=gen)
    z = torch.zeros(n)
    return Batch(obs, torch.randn(n, ACT, generator=gen), z, z, z, z, z)


def measured_kl(actor: GaussianActor, obs: torch.Tensor, old) -> float:
    """Independent of the guard: KL(pi_new || pi_old) summed over actions, mean over states."""
    with torch.no_grad():
        return float(kl_divergence(actor.distribution(obs), old).sum(-1).mean())


def snapshot_dist(actor: GaussianActor, obs: torch.Tensor):
    with torch.no_grad():
        d = actor.distribution(obs)
    return torch.distributions.Normal(d.loc.clone(), d.scale.clone())


def params_copy(actor: GaussianActor) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params_of(actor)]


def assert_params_equal(actor: GaussianActor, before: list[torch.Tensor]) -> None:
    for p, q in zip(params_of(actor), before, strict=True):
        assert torch.equal(p.detach(), q)


def assert_adam_state_equal(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        for key in a["state"][i]:
            assert torch.equal(a["state"][i][key], b["state"][i][key]), (i, key)


def flat_slice(actor: GaussianActor, param: torch.nn.Parameter) -> slice:
    """Where `param` sits in the flat parameter vector."""
    offset = 0
    for p in params_of(actor):
        if p is param:
            return slice(offset, offset + p.numel())
        offset += p.numel()
    raise KeyError("not a parameter of actor")


def direction(actor: GaussianActor, size: float, seed: int) -> torch.Tensor:
    v = torch.randn(get_flat(actor).numel(), generator=torch.Generator().manual_seed(seed))
    return size * v / v.norm()


def test_large_step_rolled_back_bit_for_bit_with_adam_state() -> None:
    actor, mb = make_actor(), make_batch()
    precond = AdamPrecond(actor, lr=0.5)  # lr 0.5 per coordinate: far outside eps
    mover = PolicyMover(actor, precond)
    # Warm Adam up so it has non-trivial moments and a step count to restore.
    for i in range(3):
        precond.opt.zero_grad()
        (-actor.log_prob(mb.obs, mb.act).mean() * (i + 1)).backward()
        precond.opt.step()
    before, adam_before = params_copy(actor), copy.deepcopy(precond.opt.state_dict())
    # Sanity: this step does change Adam's state, so the comparison below can fail.
    probe = copy.deepcopy(precond)
    probe.apply_step(direction(actor, 1.0, seed=1))
    assert not torch.equal(probe.opt.state_dict()["state"][0]["step"], adam_before["state"][0]["step"])

    guard = KLRollback(target_kl=EPS)
    assert guard.commit(mover, direction(actor, 1.0, seed=1), mb) is False
    assert_params_equal(actor, before)
    assert_adam_state_equal(precond.opt.state_dict(), adam_before)
    assert guard.metrics()["rollback_frac"] == 1.0


def test_small_step_committed_with_kl_below_eps() -> None:
    actor, mb = make_actor(), make_batch()
    mover = PolicyMover(actor, PlainPrecond(actor))
    old, before = snapshot_dist(actor, mb.obs), get_flat(actor)
    step = direction(actor, 1e-3, seed=2)
    guard = KLRollback(target_kl=EPS)
    assert guard.commit(mover, step, mb) is True
    torch.testing.assert_close(get_flat(actor), before + step)
    kl = measured_kl(actor, mb.obs, old)
    assert 0 < kl <= EPS
    m = guard.metrics()
    assert m["rollback_frac"] == 0.0 and m["kl_step"] == pytest.approx(kl, rel=1e-6)


@pytest.mark.parametrize("eps", [0.01, 0.005])
def test_no_committed_step_exceeds_eps(eps: float) -> None:
    """Invariant: over random steps of sizes 1e-4 .. 10, no commit has measured KL > eps."""
    actor = make_actor(seed=3)
    mover, guard = PolicyMover(actor, PlainPrecond(actor)), KLRollback(target_kl=eps)
    gen = torch.Generator().manual_seed(4)
    commits = rollbacks = 0
    max_kl = 0.0
    for i in range(STEPS):
        mb = make_batch(seed=100 + i, n=32)
        size = 10 ** float(torch.empty(1).uniform_(-4, 1, generator=gen))
        old, before = snapshot_dist(actor, mb.obs), params_copy(actor)
        if guard.commit(mover, direction(actor, size, seed=1000 + i), mb):
            commits += 1
            kl = measured_kl(actor, mb.obs, old)
            assert kl <= eps
            max_kl = max(max_kl, kl)
        else:
            rollbacks += 1
            assert_params_equal(actor, before)
    assert commits > 20 and rollbacks > 20  # both branches really exercised
    assert max_kl > 0.5 * eps  # and commits close to the threshold, not only tiny ones
    m = guard.metrics()
    assert m["rollback_frac"] == pytest.approx(rollbacks / STEPS)
    assert 0 < m["kl_step"] <= eps and m["nonfinite_skips"] == 0


def test_nan_step_refused_and_parameters_untouched() -> None:
    actor, mb = make_actor(), make_batch()
    precond = AdamPrecond(actor, lr=1e-3)
    mover, guard = PolicyMover(actor, precond), KLRollback()
    before = params_copy(actor)
    step = direction(actor, 1e-3, seed=5)
    step[3] = float("nan")
    assert guard.commit(mover, step, mb) is False
    assert_params_equal(actor, before)
    assert precond.opt.state_dict()["state"] == {}  # Adam never stepped
    m = guard.metrics()
    assert m["nonfinite_skips"] == 1 and m["rollback_frac"] == 1.0


def test_step_making_policy_nonfinite_is_rolled_back() -> None:
    actor, mb = make_actor(), make_batch()
    mover, guard = PolicyMover(actor, PlainPrecond(actor)), KLRollback()
    before = params_copy(actor)
    step = torch.zeros(get_flat(actor).numel())
    step[flat_slice(actor, actor.log_std)] = 1e30  # log_std -> 1e30: std = inf, KL not finite
    assert guard.commit(mover, step, mb) is False
    assert_params_equal(actor, before)
    assert guard.metrics()["nonfinite_skips"] == 1


class InfPrecond(PlainPrecond):
    """A broken optimizer that writes inf into the first layer's weights."""

    def __init__(self, actor: GaussianActor, whole_layer: bool) -> None:
        super().__init__(actor)
        self.whole_layer = whole_layer

    def apply_step(self, step: torch.Tensor) -> None:
        with torch.no_grad():
            w = self.actor.mean_net[0].weight
            # One entry: tanh saturates, the policy output (and KL) stay finite, so only the
            # parameter check can catch it. The whole layer: inf - inf, the KL is NaN.
            (w.fill_ if self.whole_layer else w[0, 0].fill_)(math.inf)


@pytest.mark.parametrize("whole_layer", [False, True], ids=["finite_kl", "nan_kl"])
def test_nonfinite_parameters_are_rolled_back(whole_layer: bool) -> None:
    actor, mb = make_actor(), make_batch()
    mover, guard = PolicyMover(actor, InfPrecond(actor, whole_layer)), KLRollback()
    before = params_copy(actor)
    probe = copy.deepcopy(actor)
    InfPrecond(probe, whole_layer).apply_step(torch.zeros(0))
    with torch.no_grad():  # the case it claims: policy output finite, or NaN
        assert bool(torch.isfinite(probe.mean_net(mb.obs)).all()) != whole_layer
    assert guard.commit(mover, direction(actor, 1e-6, seed=6), mb) is False
    assert_params_equal(actor, before)
    assert guard.metrics()["nonfinite_skips"] == 1
    assert torch.distributions.Distribution._validate_args == VALIDATE  # toggle restored


def test_rollback_frac_and_kl_step_values_and_reset() -> None:
    actor = make_actor()
    mover, guard = PolicyMover(actor, PlainPrecond(actor)), KLRollback(target_kl=EPS)
    kls = []
    for i, size in enumerate([1e-3, 5.0, 2e-3, 5.0]):
        mb = make_batch(seed=i)
        old = snapshot_dist(actor, mb.obs)
        if guard.commit(mover, direction(actor, size, seed=i), mb):
            kls.append(measured_kl(actor, mb.obs, old))
    assert len(kls) == 2
    m = guard.metrics()
    assert m["rollback_frac"] == 0.5
    assert m["kl_step"] == pytest.approx(sum(kls) / 2, rel=1e-6)
    assert guard.metrics() == {}  # read resets
    guard.commit(mover, direction(actor, 5.0, seed=9), make_batch())
    guard.begin_epoch()  # so does a new epoch
    assert guard.metrics() == {}


@pytest.mark.parametrize("bad", [0.0, -0.01, float("inf"), float("nan")])
def test_invalid_target_kl_raises(bad: float) -> None:
    with pytest.raises(ValueError, match="target_kl"):
        KLRollback(target_kl=bad)
