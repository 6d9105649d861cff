"""The rollout collector against its definition: a plain step-by-step loop (one
torch.distributions Normal per step, preallocated buffers, the critics' module forward,
GAE in torch, np.mean and np.var) must give the same batch, statistics and normalizer
bit for bit, so the collector's shortcuts (RolloutNets, log-densities computed once per
epoch, GAE in numpy, batch_moments) can never change a result, and seeding and exact
resume stay what they were. Below it, each shortcut against what it replaces, over
more shapes than one rollout visits."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from kfcpo.data.batch import Batch
from kfcpo.data.rollout import GAEConfig, RolloutCollector
from kfcpo.data.rollout_nets import RolloutNets
from kfcpo.envs import COST_KEY, ObsNormalizer, VectorCost, make_vector_env, space_dims
from kfcpo.envs.normalize import batch_moments
from kfcpo.models import COST, REWARD, Critics, GaussianActor

# Hopper terminates episodes within tens of steps under a random policy (3 action
# dimensions); Circle1 with a short limit truncates them (the bootstrap path).
HOPPER = "SafetyHopperVelocity-v1"
CIRCLE = "SafetyPointCircle1-v0"
LIMIT = 37
NUM_ENVS, STEPS_PER_ENV, EPOCHS, SEED = 3, 40, 2, 5
GAE_CFG = GAEConfig(0.99, 0.95, 0.97, True, "center")
OBS_CLIP = 5.0
STD_EPS = 1e-8


def _nets(env_id: str) -> tuple[GaussianActor, Critics]:
    torch.manual_seed(SEED)
    obs_dim, act_dim = space_dims(env_id)
    actor, critics = GaussianActor(obs_dim, act_dim), Critics(obs_dim)
    with torch.no_grad():  # a distinct std per action dimension
        actor.log_std.add_(torch.linspace(-0.3, 0.4, act_dim))
    return actor, critics


def _envs(env_id: str) -> VectorCost:
    return make_vector_env(env_id, NUM_ENVS, seed=SEED, vector="sync",
                           max_episode_steps=LIMIT if env_id == CIRCLE else None)


def _gae(r: torch.Tensor, v: torch.Tensor, next_v: torch.Tensor, term: torch.Tensor, end: torch.Tensor,
         gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    deltas = r + gamma * next_v * (1.0 - term) - v
    adv, running = torch.zeros_like(r), torch.zeros_like(r[0])
    for t in reversed(range(len(r))):
        running = deltas[t] + gamma * lam * (1.0 - end[t]) * running
        adv[t] = running
    return adv, adv + v


@torch.no_grad()
def _reference(env_id: str) -> tuple[list[Batch], list[tuple], ObsNormalizer]:
    """The collector's definition, one step at a time."""
    actor, critics = _nets(env_id)
    envs = _envs(env_id)
    norm = ObsNormalizer((space_dims(env_id)[0],), clip=OBS_CLIP)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    T, N = STEPS_PER_ENV, NUM_ENVS
    raw, _ = envs.reset(seed=SEED)
    ep_ret, ep_cost, ep_len = np.zeros(N), np.zeros(N), np.zeros(N, dtype=np.int64)
    batches, stats = [], []

    def normalized(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(norm.normalize(x), dtype=torch.float32)

    for _ in range(EPOCHS):
        obs, act = torch.zeros(T, N, actor.obs_dim), torch.zeros(T, N, actor.act_dim)
        g = {k: torch.zeros(T, N) for k in ("logp", "v_r", "v_c", "r", "c", "term", "end")}
        boot = torch.full((2, T, N), torch.nan)
        sums, ep_costs = np.zeros(3), []
        for t in range(T):
            norm.rms.merge(len(raw), raw.mean(axis=0), raw.var(axis=0))
            x = normalized(raw)
            dist = actor.distribution(x)
            a = dist.sample()
            raw, reward, terminated, truncated, info = envs.step(np.clip(a.numpy(), low, high))
            obs[t], act[t], g["logp"][t] = x, a, dist.log_prob(a).sum(-1)
            g["v_r"][t], g["v_c"][t] = critics(x)
            for i in np.flatnonzero(truncated & ~terminated):
                boot[:, t, i] = critics(normalized(info["final_observation"][i][None]))[:, 0]
            done = terminated | truncated
            g["r"][t], g["c"][t] = torch.from_numpy(reward), torch.from_numpy(info[COST_KEY])
            g["term"][t], g["end"][t] = torch.from_numpy(terminated), torch.from_numpy(done)
            ep_ret += reward
            ep_cost += info[COST_KEY]
            ep_len += 1
            for i in np.flatnonzero(done):
                sums += (ep_ret[i], ep_cost[i], ep_len[i])
                ep_costs.append(float(ep_cost[i]))
                ep_ret[i] = ep_cost[i] = ep_len[i] = 0
        last = critics(normalized(raw))
        out = {}
        for key, row, gamma in (("r", REWARD, GAE_CFG.gamma), ("c", COST, GAE_CFG.cost_gamma)):
            values = g[f"v_{key}"]
            next_values = torch.cat([values[1:], last[row][None]])
            next_values = torch.where(torch.isnan(boot[row]), next_values, boot[row])
            adv, ret = _gae(g[key], values, next_values, g["term"], g["end"], gamma, GAE_CFG.lam)
            out[key] = (adv.reshape(-1), ret.reshape(-1))
        adv_r = out["r"][0]
        mean = adv_r.mean()
        adv_r = (adv_r - mean) / (((adv_r - mean) ** 2).mean().sqrt() + STD_EPS)
        batches.append(Batch(
            obs=obs.reshape(-1, actor.obs_dim), act=act.reshape(-1, actor.act_dim),
            logp_old=g["logp"].reshape(-1), adv_r=adv_r, adv_c=out["c"][0] - out["c"][0].mean(),
            ret_r=out["r"][1], ret_c=out["c"][1],
        ))
        stats.append((*sums.tolist(), ep_costs))
    envs.close()
    return batches, stats, norm


@pytest.mark.parametrize("env_id", [HOPPER, CIRCLE])
def test_collector_equals_step_by_step_definition_bit_for_bit(env_id: str) -> None:
    expected, expected_stats, expected_norm = _reference(env_id)
    actor, critics = _nets(env_id)
    envs = _envs(env_id)
    norm = ObsNormalizer((actor.obs_dim,), clip=OBS_CLIP)
    collector = RolloutCollector(envs, actor, critics, norm, STEPS_PER_ENV, GAE_CFG, SEED)
    try:
        rollouts = [collector.collect(epoch) for epoch in range(EPOCHS)]
    finally:
        envs.close()
    assert sum(len(s[3]) for s in expected_stats) >= 3  # episodes did end
    for want, want_stats, got in zip(expected, expected_stats, rollouts, strict=True):
        for f in fields(want):
            a, b = getattr(want, f.name), getattr(got.batch, f.name)
            assert a.dtype == b.dtype and torch.equal(a, b), f.name
        s = got.stats
        assert (s.ep_ret_sum, s.ep_cost_sum, s.ep_len_sum, s.ep_costs) == want_stats
    assert norm.state_dict() == expected_norm.state_dict()


@pytest.mark.parametrize("act_dim", [1, 2, 3, 8, 16, 17, 24])
@pytest.mark.parametrize("num_envs", [1, 3, 8])
def test_log_prob_of_a_whole_rollout_equals_each_steps_own(act_dim: int, num_envs: int) -> None:
    torch.manual_seed(act_dim * 10 + num_envs)
    actor, critics = GaussianActor(4, act_dim), Critics(4)
    with torch.no_grad():
        actor.log_std.copy_(torch.randn(act_dim) * 2)
        mean = torch.randn(25, num_envs, act_dim) * 3
        act = mean + torch.randn(25, num_envs, act_dim) * actor.log_std.exp()
        per_step = torch.stack([actor.distribution_at(m).log_prob(a).sum(-1)
                                for m, a in zip(mean, act, strict=True)])
        assert torch.equal(RolloutNets(actor, critics).log_prob(mean, act), per_step)


def test_rollout_nets_act_and_values_equal_the_modules() -> None:
    actor, critics = _nets(HOPPER)
    obs = torch.randn(NUM_ENVS, actor.obs_dim)
    nets = RolloutNets(actor, critics)
    with torch.no_grad():
        state = torch.get_rng_state()
        mean, act = nets.act(obs)
        torch.set_rng_state(state)
        dist = actor.distribution(obs)
        assert torch.equal(mean, dist.mean) and torch.equal(act, dist.sample())
        assert torch.equal(nets.values(obs), critics(obs))


@pytest.mark.parametrize("shape", [(), (1,), (28,), (3, 5)])
def test_batch_moments_are_numpys_mean_and_var_bit_for_bit(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(4)
    for n in (1, 2, 3, 8, 9, 300):
        batch = 1e6 + rng.normal(size=(n, *shape)) * rng.uniform(0, 10, size=shape)
        count, mean, var = batch_moments(batch, shape)
        assert count == n
        for got, want in ((mean, batch.mean(axis=0)), (var, batch.var(axis=0))):
            assert type(got) is type(want) and np.shape(got) == np.shape(want)
            assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
