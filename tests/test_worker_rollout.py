"""The worker engine (`env.engine=worker`) against its definition: the first epoch (the
warm-up, while the normalizer has seen less than an epoch) is the step engine's bit for
bit; after it, a plain step-by-step loop over a sync vector env (each env's own noise
generator, the normalizer frozen at the epoch's start, the statistics merged step by
step, values computed over the epoch) must give the same batches, statistics and
normalizer bit for bit, in this process and in worker processes; the same seed gives the
same rollouts with any number of workers; a collector restored from a saved state after
the warm-up or after a worker epoch continues exactly; an env error in a worker closes
the pool and reaches the caller. Real Safety Gymnasium envs, tiny budgets."""

from __future__ import annotations

import copy
import functools
import os
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from test_ddp import _finish_rank, free_port
from test_pool import Boom, _boom, _exited
from test_rollout import CIRCLE, GAE_CFG, HOPPER, LIMIT, OBS_CLIP, STD_EPS, _gae, _nets

from kfcpo.data.batch import Batch
from kfcpo.data.rollout import RolloutCollector
from kfcpo.data.worker_rollout import NOISE_KEY, WorkerRolloutCollector
from kfcpo.envs import COST_KEY, ObsNormalizer, VectorCost, make_vector_env
from kfcpo.envs import pool as pool_module
from kfcpo.envs.pool import PoolVectorEnv
from kfcpo.envs.state import EnvStateError
from kfcpo.models import COST, REWARD, Critics, GaussianActor

# Three epochs: the warm-up (the step engine's loop), then two in the workers.
NUM_ENVS, STEPS_PER_ENV, EPOCHS, SEED = 3, 40, 3, 5
LAYOUT_ENVS = 5  # over 1, 2 and 3 workers: blocks of 5; 3 + 2; 2 + 2 + 1
OTHER_SEED = SEED + 11  # a restored collector's own seed, which the restore must override
# (vector, workers): the loop in this process; blocks of 2 + 1 envs in two workers.
ENGINES = [("sync", 0), ("async", 2)]


def _envs(env_id: str, vector: str = "sync", workers: int = 0, num_envs: int = NUM_ENVS,
          seed: int = SEED) -> VectorCost:
    return make_vector_env(env_id, num_envs, seed=seed, vector=vector, workers=workers,
                           max_episode_steps=LIMIT if env_id == CIRCLE else None, epoch_steps=STEPS_PER_ENV)


def _generators(seed: int, num_envs: int) -> list[torch.Generator]:
    """Env i's action noise: torch's generator seeded with SeedSequence((seed, i))'s first
    64-bit word (the documented formula)."""
    words = (np.random.SeedSequence((seed, i)).generate_state(1, np.uint64)[0] for i in range(num_envs))
    return [torch.Generator().manual_seed(int(w)) for w in words]


@functools.cache
@torch.no_grad()
def _reference(env_id: str) -> tuple[list[Batch], list[tuple], dict]:
    """The engine's definition: the first epoch the step engine's (its collector on the
    same envs, noise from the global generator), then one vector step at a time in this
    process, the envs' generators drawn from their first draw on."""
    actor, critics = _nets(env_id)
    envs = _envs(env_id)
    norm = ObsNormalizer((actor.obs_dim,), clip=OBS_CLIP)
    step = RolloutCollector(envs, actor, critics, norm, STEPS_PER_ENV, GAE_CFG, SEED)  # resets the envs
    torch.manual_seed(SEED)
    warm_up = step.collect(0)
    s = warm_up.stats
    batches, stats = [warm_up.batch], [(s.ep_ret_sum, s.ep_cost_sum, s.ep_len_sum, s.ep_costs, None)]
    generators = _generators(SEED, NUM_ENVS)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    T, N = STEPS_PER_ENV, NUM_ENVS
    raw, ep_ret, ep_cost, ep_len = (getattr(step, k).copy() for k in ("obs", "ep_ret", "ep_cost", "ep_len"))
    threads = torch.get_num_threads()
    for _ in range(1, EPOCHS):
        frozen = copy.deepcopy(norm)  # what the policy sees all epoch
        # Each env draws its whole epoch's noise at once from its own generator.
        noise = torch.stack([torch.randn((T, actor.act_dim), generator=g) for g in generators], dim=1)
        obs, act = torch.zeros(T, N, actor.obs_dim), torch.zeros(T, N, actor.act_dim)
        g = {k: torch.zeros(T, N) for k in ("logp", "r", "c", "term", "end")}
        finals = []
        sums, ep_costs = np.zeros(3), []
        for t in range(T):
            norm.rms.merge(len(raw), raw.mean(axis=0), raw.var(axis=0))
            x = torch.as_tensor(frozen.normalize(raw), dtype=torch.float32)
            torch.set_num_threads(1)  # the forward's rounding depends on the thread count
            mean = actor.mean_net(x)
            torch.set_num_threads(threads)
            a = mean + actor.log_std.exp() * noise[t]
            raw, reward, terminated, truncated, info = envs.step(np.clip(a.numpy(), low, high))
            obs[t], act[t] = x, a
            g["logp"][t] = actor.distribution_at(mean).log_prob(a).sum(-1)
            finals += [(t, i, info["final_observation"][i]) for i in np.flatnonzero(truncated & ~terminated)]
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
        # Values of the whole epoch in one forward; the final observations' in another.
        values = critics(obs.reshape(T * N, -1)).reshape(2, T, N)
        boot = torch.full((2, T, N), torch.nan)
        if finals:
            final_values = critics(torch.as_tensor(frozen.normalize(np.stack([f[2] for f in finals])),
                                                   dtype=torch.float32))
            for k, (t, i, _) in enumerate(finals):
                boot[:, t, i] = final_values[:, k]
        last = critics(torch.as_tensor(frozen.normalize(raw), dtype=torch.float32))
        out = {}
        for key, row, gamma in (("r", REWARD, GAE_CFG.gamma), ("c", COST, GAE_CFG.cost_gamma)):
            next_values = torch.cat([values[row][1:], last[row][None]])
            next_values = torch.where(torch.isnan(boot[row]), next_values, boot[row])
            adv, ret = _gae(g[key], values[row], next_values, g["term"], g["end"], gamma, GAE_CFG.lam)
            out[key] = (adv.reshape(-1), ret.reshape(-1))
        adv_r = out["r"][0]
        centred = adv_r - adv_r.mean()
        adv_r = centred / ((centred**2).mean().sqrt() + STD_EPS)
        batches.append(Batch(
            obs=obs.reshape(-1, actor.obs_dim), act=act.reshape(-1, actor.act_dim),
            logp_old=g["logp"].reshape(-1), adv_r=adv_r, adv_c=out["c"][0] - out["c"][0].mean(),
            ret_r=out["r"][1], ret_c=out["c"][1],
        ))
        stats.append((*sums.tolist(), ep_costs, len(finals)))
    envs.close()
    return batches, stats, norm.state_dict()


def _collector(env_id: str, vector: str, workers: int, num_envs: int = NUM_ENVS,
               seed: int = SEED) -> WorkerRolloutCollector:
    actor, critics = _nets(env_id)
    norm = ObsNormalizer((actor.obs_dim,), clip=OBS_CLIP)
    envs = _envs(env_id, vector, workers, num_envs, seed)
    return WorkerRolloutCollector(envs, actor, critics, norm, STEPS_PER_ENV, GAE_CFG, seed)


def _collect(collector: RolloutCollector, epochs: int = EPOCHS) -> list:
    """``epochs`` epochs from the global generator seeded ``SEED`` (as the module seeds a
    rank before its first epoch: the warm-up draws from it), then close."""
    torch.manual_seed(SEED)
    try:
        return [collector.collect(epoch) for epoch in range(epochs)]
    finally:
        collector.close()


def _noise_states(collector: WorkerRolloutCollector) -> torch.Tensor:
    return torch.stack([g.get_state() for g in collector.noise_rngs])


def _assert_same_batch(a: Batch, b: Batch, what: object) -> None:
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        assert x.dtype == y.dtype and torch.equal(x, y), (what, f.name)


@pytest.mark.parametrize(("vector", "workers"), ENGINES)
@pytest.mark.parametrize("env_id", [HOPPER, CIRCLE])
def test_worker_engine_equals_step_by_step_definition_bit_for_bit(env_id: str, vector: str,
                                                                   workers: int) -> None:
    expected, expected_stats, expected_norm = _reference(env_id)
    in_workers = expected_stats[1:]  # the epochs after the warm-up
    if env_id == CIRCLE:
        assert sum(s[4] for s in in_workers) >= 3  # truncations: the bootstrap path
    else:
        assert sum(len(s[3]) for s in in_workers) >= 3  # terminations
    collector = _collector(env_id, vector, workers)
    rollouts = _collect(collector)
    for epoch, (want, want_stats, got) in enumerate(zip(expected, expected_stats, rollouts, strict=True)):
        _assert_same_batch(want, got.batch, epoch)
        s = got.stats
        assert (s.ep_ret_sum, s.ep_cost_sum, s.ep_len_sum, s.ep_costs) == want_stats[:4]
    assert collector.normalizer.state_dict() == expected_norm


@pytest.mark.parametrize(("vector", "workers"), ENGINES)
@pytest.mark.parametrize("env_id", [HOPPER, CIRCLE])
def test_first_epoch_is_the_step_engines_bit_for_bit(env_id: str, vector: str, workers: int) -> None:
    """The warm-up: with the normalizer fresh the worker engine runs the step engine's
    loop, so its first epoch (batch, statistics, normalizer, envs' state, the global
    generator's draws) is the step engine's, and the envs' generators are not drawn."""
    actor, critics = _nets(env_id)
    step = RolloutCollector(_envs(env_id), actor, critics, ObsNormalizer((actor.obs_dim,), clip=OBS_CLIP),
                            STEPS_PER_ENV, GAE_CFG, SEED)
    expected = _collect(step, 1)[0]
    expected_rng = torch.get_rng_state()
    collector = _collector(env_id, vector, workers)
    generators = _noise_states(collector)
    assert collector.warming_up()
    got = _collect(collector, 1)[0]
    _assert_same_batch(expected.batch, got.batch, "warm-up")
    assert torch.equal(torch.get_rng_state(), expected_rng)
    skip = {"rollout_s"}  # wall-clock
    assert [getattr(expected.stats, f.name) for f in fields(expected.stats) if f.name not in skip] == [
        getattr(got.stats, f.name) for f in fields(got.stats) if f.name not in skip]
    assert expected.stats.episodes >= 3
    assert collector.normalizer.state_dict() == step.normalizer.state_dict()
    for k in ("obs", "ep_ret", "ep_cost", "ep_len"):
        assert np.array_equal(getattr(collector, k), getattr(step, k)), k
    assert torch.equal(_noise_states(collector), generators)
    assert not collector.warming_up()  # the next epoch runs in the workers


def test_warm_up_rule() -> None:
    """Warm up while the normalizer has seen less than one epoch of this rank, never
    with normalization off: then the first epoch already runs in the workers."""
    collector = _collector(CIRCLE, "sync", 0)
    rms, epoch = collector.normalizer.rms, STEPS_PER_ENV * NUM_ENVS
    for count, warm in ((0, True), (epoch - 1, True), (epoch, False), (2 * epoch, False)):
        rms.count = float(count)
        assert collector.warming_up() is warm, count
    rms.count = 0.0
    collector.normalizer.enabled = False
    assert not collector.warming_up()
    generators = _noise_states(collector)
    torch.manual_seed(SEED)
    seeded = torch.get_rng_state()
    _collect(collector, 1)
    assert not torch.equal(_noise_states(collector), generators)  # the envs' generators drew
    assert torch.equal(torch.get_rng_state(), seeded)  # the global one did not


def _layout_run(env_id: str, vector: str, workers: int) -> tuple[list, dict, list]:
    """EPOCHS epochs (the first the warm-up) and the collector's state after them."""
    collector = _collector(env_id, vector, workers, num_envs=LAYOUT_ENVS)
    torch.manual_seed(SEED)  # the warm-up's noise
    try:
        rollouts = [collector.collect(epoch) for epoch in range(EPOCHS)]
        state = collector.state_dict()
    finally:
        collector.close()
    return rollouts, collector.normalizer.state_dict(), [state[k] for k in ("obs", "ep_ret", NOISE_KEY)]


@pytest.mark.parametrize("env_id", [HOPPER, CIRCLE])
def test_rollouts_do_not_depend_on_the_layout(env_id: str) -> None:
    expected, expected_norm, expected_state = _layout_run(env_id, "sync", 0)
    assert sum(r.stats.episodes for r in expected) >= 3
    for workers in (1, 2, 3):
        got, norm, state = _layout_run(env_id, "async", workers)
        for epoch, (a, b) in enumerate(zip(expected, got, strict=True)):
            _assert_same_batch(a.batch, b.batch, (workers, epoch))
            assert (a.stats.ep_costs, a.stats.ep_ret_sum, a.stats.ep_len_sum, a.stats.episodes) == (
                b.stats.ep_costs, b.stats.ep_ret_sum, b.stats.ep_len_sum, b.stats.episodes)
        assert norm == expected_norm
        assert all(torch.equal(x, y) for x, y in zip(state, expected_state, strict=True))


def test_restored_collector_continues_exactly(tmp_path: Path) -> None:
    """Saved after the warm-up (the next epoch is the first in the workers, from the
    generators' first draws) and after an epoch in the workers; the targets' global
    generator is seeded otherwise than the source's was, which epochs in the workers
    never draw from."""
    source = _collector(CIRCLE, "async", 2)
    saved, expected = [], []
    torch.manual_seed(SEED)
    try:
        for epoch in range(EPOCHS):
            rollout = source.collect(epoch)
            if epoch:
                expected.append(rollout)  # the epoch after the state saved before it
            if epoch < EPOCHS - 1:
                path = tmp_path / f"collector{epoch}.pt"
                state = {"collector": source.state_dict(), "normalizer": source.normalizer.state_dict()}
                torch.save(state, path)
                saved.append(torch.load(path, weights_only=True))
    finally:
        source.close()
    for after, (state, want) in enumerate(zip(saved, expected, strict=True)):
        # Restored under other layouts, from collectors seeded otherwise.
        for vector, workers in (("async", 3), ("sync", 0)):
            target = _collector(CIRCLE, vector, workers, seed=OTHER_SEED)
            target.load_state_dict(state["collector"])
            target.normalizer.load_state_dict(state["normalizer"])
            assert not target.warming_up()
            _assert_same_batch(want.batch, _collect(target, 1)[0].batch, (after, vector))
    fresh = _collector(CIRCLE, "sync", 0, seed=OTHER_SEED)
    fresh.normalizer.load_state_dict(saved[0]["normalizer"])
    assert not torch.equal(_collect(fresh, 1)[0].batch.act, expected[0].batch.act)  # the check can fail


def test_state_without_noise_generators_is_refused_unchanged() -> None:
    actor, critics = _nets(CIRCLE)
    step = RolloutCollector(_envs(CIRCLE), actor, critics, ObsNormalizer((actor.obs_dim,)), STEPS_PER_ENV,
                            GAE_CFG, SEED + 1)
    worker = _collector(CIRCLE, "sync", 0)
    try:
        before = worker.state_dict()
        with pytest.raises(EnvStateError, match="noise generators"):
            worker.load_state_dict(step.state_dict())
        after = worker.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in ("obs", "ep_len", NOISE_KEY))
    finally:
        step.close()
        worker.close()


def _past_warm_up(pool: PoolVectorEnv) -> WorkerRolloutCollector:
    torch.manual_seed(0)
    normalizer = ObsNormalizer((2,))
    normalizer.rms.count = float(STEPS_PER_ENV * pool.num_envs)  # the epochs run in the workers
    actor, critics = GaussianActor(2, 1), Critics(2)
    return WorkerRolloutCollector(VectorCost(pool), actor, critics, normalizer, STEPS_PER_ENV, GAE_CFG, SEED)


def test_env_error_in_a_worker_closes_the_pool_and_is_raised() -> None:
    pool = PoolVectorEnv([functools.partial(_boom, 0)] * 2 + [functools.partial(_boom, 5)], workers=2,
                         epoch_steps=STEPS_PER_ENV)
    processes = list(pool._processes)
    collector = _past_warm_up(pool)
    with pytest.raises(ArithmeticError, match="boom at step 5") as info:
        collector.collect(0)
    notes = "".join(getattr(info.value, "__notes__", []))
    assert "in env worker 1" in notes and "env 2 at step 4 of the epoch's 40" in notes
    assert pool.closed and _exited(processes)


SLOW_STEP_S = 0.005  # an epoch of 2 envs x 40 steps in a worker: 0.4 s, 40 polls of 0.01 s


class SlowStep(Boom):
    """Never fails (Boom's step count never equals 0) and takes SLOW_STEP_S per step."""

    def step(self, action):
        time.sleep(SLOW_STEP_S)
        return super().step(action)


def test_progress_is_reported_while_the_workers_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A progress bar moves during a worker epoch: the steps reach ``on_progress`` in
    several parts, the first before the epoch ends, each epoch's adding up to T x N."""
    monkeypatch.setattr(pool_module, "PROGRESS_POLL_S", 0.01)
    pool = PoolVectorEnv([functools.partial(SlowStep, 0)] * 3, workers=2, epoch_steps=STEPS_PER_ENV)
    collector = _past_warm_up(pool)
    epoch_steps = STEPS_PER_ENV * pool.num_envs
    try:
        for epoch in range(2):  # the second: the counts of the first must not carry over
            reports: list[int] = []
            collector.on_progress = reports.append
            collector.collect(epoch)
            assert sum(reports) == epoch_steps, (epoch, reports)
            assert min(reports) > 0, (epoch, reports)
            assert len(reports) >= 3 and reports[0] < epoch_steps, (epoch, reports)
    finally:
        collector.close()


def test_pool_without_epoch_buffers_is_refused() -> None:
    actor, critics = _nets(CIRCLE)
    envs = make_vector_env(CIRCLE, 2, seed=SEED, vector="async", workers=1)
    try:
        with pytest.raises(ValueError, match="epoch_steps=40"):
            WorkerRolloutCollector(envs, actor, critics, ObsNormalizer((actor.obs_dim,)), STEPS_PER_ENV,
                                   GAE_CFG, SEED)
    finally:
        envs.close()


# --------------------------------------------------------------------------- DDP
def _ddp_rank_main(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch_dist.init_process_group("gloo", rank=rank, world_size=2)
    collector = _collector(CIRCLE, "sync", 0, seed=SEED + 1000 * rank)  # as SafeRLModule seeds ranks
    _collect(collector)
    torch.save(collector.normalizer.state_dict(), f"{out}.{rank}")
    _finish_rank()


@pytest.mark.slow
def test_ranks_agree_on_the_normalizer(tmp_path: Path) -> None:
    out = str(tmp_path / "norm")
    mp.start_processes(_ddp_rank_main, args=(free_port(), out), nprocs=2, start_method="spawn")
    states = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]
    assert states[0] == states[1]
    assert states[0]["rms"]["count"] == 2 * EPOCHS * STEPS_PER_ENV * NUM_ENVS  # both ranks' observations
