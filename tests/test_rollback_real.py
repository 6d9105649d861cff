"""The rollback invariant on a real Safety Gymnasium rollout with deliberately large steps."""

import torch
from torch.distributions import kl_divergence

from kfcpo.algorithm import Algorithm
from kfcpo.data.rollout import GAEConfig, RolloutCollector
from kfcpo.envs import ObsNormalizer, make_vector_env, space_dims
from kfcpo.flat import get_flat
from kfcpo.models import Critics, GaussianActor
from kfcpo.update import UpdateConfig, policy_update

ENV = "SafetyPointGoal1-v0"
EPS = 0.01


def test_no_committed_step_exceeds_eps_and_rejected_steps_change_nothing() -> None:
    torch.manual_seed(0)
    obs_dim, act_dim = space_dims(ENV)
    actor, critics = GaussianActor(obs_dim, act_dim), Critics(obs_dim)
    envs = make_vector_env(ENV, 1, seed=0)
    collector = RolloutCollector(
        envs, actor, critics, ObsNormalizer((obs_dim,)), 600, GAEConfig(0.99, 0.99, 0.95, True), 0
    )
    batch = collector.collect(0).batch
    envs.close()

    algorithm = Algorithm.from_sections(
        actor, {"name": "kfac", "damping": 0.1, "decay": 0.0},
        # A trust region 20x the guard's threshold: most steps must be refused.
        {"name": "margin", "target_kl": 20 * EPS}, {"name": "kl_rollback", "target_kl": EPS},
    )
    blender, guard = algorithm.blender, algorithm.guard
    records = []
    commit = guard.commit

    def spy(mover, step, mb):
        before = get_flat(actor)
        with torch.no_grad():
            old = actor.distribution(mb.obs)
        ok = commit(mover, step, mb)
        with torch.no_grad():
            kl = float(kl_divergence(actor.distribution(mb.obs), old).sum(-1).mean())
        records.append((ok, kl, torch.equal(before, get_flat(actor))))
        return ok

    guard.commit = spy
    # Shrinking trust regions across calls give both outcomes on the same data.
    for delta in (20 * EPS, EPS, EPS / 4):
        blender.target_kl = delta
        cfg = UpdateConfig(update_iters=1, minibatch_size=100, critic_iters=0, critic_minibatch_size=1,
                           cost_limit=25.0)
        shuffle = torch.Generator().manual_seed(0)
        policy_update(actor, batch, algorithm, 30.0, cfg, shuffle)
    committed = [r for r in records if r[0]]
    rejected = [r for r in records if not r[0]]
    assert committed and rejected, records
    assert all(kl <= EPS for _, kl, _ in committed)
    assert all(kl > 0 for _, kl, _ in committed)  # committed steps really moved the policy
    assert all(unchanged and kl == 0.0 for _, kl, unchanged in rejected)
