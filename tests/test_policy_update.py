"""The epoch's policy update loop (kfcpo.update.policy_update) on a synthetic rollout, a
unit that touches no env: when it ends, what it skips, what its flags say."""

from __future__ import annotations

import torch

from kfcpo.algorithm import Algorithm
from kfcpo.data.batch import Batch
from kfcpo.flat import get_flat
from kfcpo.metrics_schema import (
    GUARD_COMMITTED_FRAC,
    UPDATE_NONFINITE_STEPS,
    UPDATE_POLICY_STEPS,
    UPDATE_STOPPED_EARLY,
)
from kfcpo.models import GaussianActor
from kfcpo.update import UpdateConfig, policy_update

COST_LIMIT = 25.0
PRECOND = {"name": "kfac", "damping": 0.1, "decay": 0.0, "quad_mode": "exact"}  # the kfcpo preset's
BLENDER = {"name": "margin", "target_kl": 0.005, "inner": "fisher", "project": "adaptive",
           "unit_directions": True, "trend": 2.0}


def rollout(n: int, obs_dim: int, seed: int) -> tuple[GaussianActor, Batch]:
    """An actor and a rollout of it whose advantages depend on the actions (so steps matter)."""
    torch.manual_seed(seed)
    actor = GaussianActor(obs_dim, 2, (16, 16), "tanh", 0.0)
    obs = torch.randn(n, obs_dim)
    with torch.no_grad():
        dist = actor.distribution(obs)
        act = dist.sample()
        logp = dist.log_prob(act).sum(-1)
    adv_r = act[:, 0] * obs[:, 0]
    adv_c = act[:, 1] * obs[:, 1]
    batch = Batch(obs, act, logp, (adv_r - adv_r.mean()) / adv_r.std(), adv_c - adv_c.mean(),
                  torch.zeros(n), torch.zeros(n))
    return actor, batch


def update(actor: GaussianActor, batch: Batch, guard: dict, passes: int, minibatch: int,
           blender: dict = BLENDER, precond: dict = PRECOND) -> dict[str, float]:
    algorithm = Algorithm.from_sections(actor, precond, blender, guard)
    cfg = UpdateConfig(passes, minibatch, 1, 128, COST_LIMIT)
    return policy_update(actor, batch, algorithm, 10.0, cfg, torch.Generator().manual_seed(0))


def test_a_refused_whole_rollout_step_ends_the_update() -> None:
    """The first step (KL 0.005) passes a rollback bound just above it; the second would
    exceed it. Refused, it leaves everything as it was, so the update ends there instead of
    proposing the same step in each of the 8 passes left."""
    actor, batch = rollout(2000, 8, seed=0)
    m = update(actor, batch, {"name": "kl_rollback", "target_kl": 0.0052, "epoch_kl": 1.0}, passes=10,
               minibatch=0)
    assert m[UPDATE_POLICY_STEPS] == 2.0 and m[GUARD_COMMITTED_FRAC] == 0.5
    assert m[UPDATE_STOPPED_EARLY] == 1.0


def test_a_nonfinite_gradient_is_counted_and_skipped() -> None:
    actor, batch = rollout(500, 8, seed=1)
    batch.adv_c[5] = float("nan")
    before = get_flat(actor)
    m = update(actor, batch, {"name": "kl_rollback", "target_kl": 0.01, "epoch_kl": 0.02}, passes=3,
               minibatch=0)
    assert m[UPDATE_NONFINITE_STEPS] == m[UPDATE_POLICY_STEPS] == 3.0
    assert m[GUARD_COMMITTED_FRAC] == 0.0
    assert torch.equal(get_flat(actor), before)


def test_stopped_early_only_when_minibatches_were_left() -> None:
    """The pass-end KL check after the last pass cuts nothing: the flag stays 0 though the
    drift is far over the bound; with a pass left the same check stops the update."""
    actor, batch = rollout(512, 6, seed=2)
    state = {k: v.clone() for k, v in actor.state_dict().items()}
    identity, lagrangian = {"name": "identity", "lr": 3e-2}, {"name": "lagrangian"}
    stop = {"name": "early_stop", "target_kl": 1e-6}
    one_pass = update(actor, batch, stop, passes=1, minibatch=64, blender=lagrangian, precond=identity)
    assert one_pass[UPDATE_POLICY_STEPS] == 8.0 and one_pass[UPDATE_STOPPED_EARLY] == 0.0
    actor.load_state_dict(state)
    two_passes = update(actor, batch, stop, passes=2, minibatch=64, blender=lagrangian, precond=identity)
    assert two_passes[UPDATE_POLICY_STEPS] == 8.0 and two_passes[UPDATE_STOPPED_EARLY] == 1.0
