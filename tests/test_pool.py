"""The worker-pool vector env (`env.vector=async`): any layout of envs over worker
processes returns what the sync vector env returns, bit for bit, resumes exactly, and
shuts its workers down on close, on errors and when its parent dies."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields

import gymnasium
import numpy as np
import pytest
import torch
from helpers import vector_replay

from kfcpo.data.rollout import GAEConfig, RolloutCollector
from kfcpo.envs import ObsNormalizer, make_vector_env, space_dims
from kfcpo.envs.layout import blocks, resolve_workers, usable_cores
from kfcpo.envs.pool import PoolVectorEnv, PoolWorkerError
from kfcpo.envs.state import EnvStateError, load_vector_state, vector_state
from kfcpo.models import Critics, GaussianActor

# Hopper's episodes terminate within tens of steps under a random policy; Circle1 with a
# short limit truncates (the bootstrap path). Both end episodes inside a few hundred steps.
HOPPER = "SafetyHopperVelocity-v1"
CIRCLE = "SafetyPointCircle1-v0"
LIMIT = 37
STEPS = 300
# (num_envs, workers): one worker for all, uneven blocks (2+1), one env per worker.
LAYOUTS = [(3, 1), (3, 2), (3, 3)]


# --- layout ----------------------------------------------------------------------


def test_blocks_are_contiguous_and_balanced() -> None:
    assert blocks(5, 2) == [range(0, 3), range(3, 5)]
    assert blocks(8, 3) == [range(0, 3), range(3, 6), range(6, 8)]
    assert blocks(4, 4) == [range(i, i + 1) for i in range(4)]
    with pytest.raises(ValueError, match="workers"):
        blocks(2, 3)


def test_resolve_workers_caps_at_num_envs_and_autodetects() -> None:
    assert resolve_workers(8, 2) == 2
    assert resolve_workers(2, 5) == 2
    assert resolve_workers(64, 0) == min(64, usable_cores())
    with pytest.raises(ValueError, match="workers"):
        resolve_workers(4, -1)


# --- same results as sync ----------------------------------------------------------


def _vector_trace(env_id: str, num_envs: int, vector: str, workers: int) -> list[bytes]:
    venv = make_vector_env(env_id, num_envs, seed=3, vector=vector, workers=workers,
                           max_episode_steps=LIMIT if env_id == CIRCLE else None)
    rng = np.random.default_rng(0)
    try:
        obs, info = venv.reset()
        out = [obs.tobytes(), repr(sorted(info)).encode()]
        for _ in range(STEPS):
            obs, reward, terminated, truncated, info = venv.step(rng.uniform(-1, 1, venv.action_space.shape))
            out += [obs.tobytes(), reward.tobytes(), terminated.tobytes(), truncated.tobytes(),
                    info["cost"].tobytes(), repr(sorted(info)).encode()]
            for i in np.flatnonzero(info.get("_final_observation", [])):
                out.append(info["final_observation"][i].tobytes())
                out.append(repr(sorted(info["final_info"][i].items())).encode())
    finally:
        venv.close()
    return out


@pytest.mark.parametrize("env_id", [HOPPER, CIRCLE])
def test_vector_steps_equal_sync_bit_for_bit(env_id: str) -> None:
    expected = _vector_trace(env_id, 3, "sync", 0)
    assert sum(b"final_observation" in x for x in expected) > 0  # episodes did end
    for num_envs, workers in LAYOUTS:
        assert _vector_trace(env_id, num_envs, "async", workers) == expected, (num_envs, workers)


def _rollouts(env_id: str, vector: str, workers: int) -> list:
    torch.manual_seed(0)
    obs_dim, act_dim = space_dims(env_id)
    actor, critics = GaussianActor(obs_dim, act_dim), Critics(obs_dim)
    envs = make_vector_env(env_id, 3, seed=0, vector=vector, workers=workers,
                           max_episode_steps=LIMIT if env_id == CIRCLE else None)
    collector = RolloutCollector(envs, actor, critics, ObsNormalizer((obs_dim,), clip=5.0),
                                 STEPS // 3 // 2, GAEConfig(0.99, 0.99, 0.97, True), 0)
    try:
        return [collector.collect(epoch) for epoch in range(2)]  # the state carries over
    finally:
        envs.close()


@pytest.mark.parametrize("env_id", [HOPPER, CIRCLE])
def test_rollout_equals_sync_bit_for_bit(env_id: str) -> None:
    expected = _rollouts(env_id, "sync", 0)
    assert sum(r.stats.episodes for r in expected) >= 3
    for workers in (1, 2):
        got = _rollouts(env_id, "async", workers)
        for a, b in zip(expected, got, strict=True):
            for f in fields(a.batch):
                assert torch.equal(getattr(a.batch, f.name), getattr(b.batch, f.name)), (workers, f.name)
            assert (a.stats.ep_costs, a.stats.ep_ret_sum, a.stats.episodes) == (
                b.stats.ep_costs, b.stats.ep_ret_sum, b.stats.episodes)


# --- exact resume ----------------------------------------------------------------


def test_state_round_trip_across_layouts_is_bit_exact() -> None:
    rng = np.random.default_rng(1)
    make = lambda vector, workers, seed: make_vector_env(  # noqa: E731
        CIRCLE, 3, seed=seed, vector=vector, workers=workers, max_episode_steps=LIMIT)
    source = make("async", 2, 0)  # blocks of 2 + 1 envs
    source.reset(seed=0)
    vector_replay(source, rng.uniform(-1, 1, (50, 3, 2)))
    state = vector_state(source)
    actions = rng.uniform(-1, 1, (60, 3, 2))
    expected = vector_replay(source, actions)
    source.close()
    # A state saved under one layout restores into any other.
    for vector, workers in (("async", 2), ("async", 3), ("sync", 0)):
        target = make(vector, workers, 99)
        target.reset(seed=99)
        load_vector_state(target, state)
        assert vector_replay(target, actions) == expected, (vector, workers)
        target.close()


def test_failed_restore_raises_its_own_type_and_keeps_the_pool() -> None:
    venv = make_vector_env(CIRCLE, 2, seed=0, vector="async", workers=1)
    other = make_vector_env("SafetyPointGoal1-v0", 2, seed=0, vector="sync")
    try:
        venv.reset(seed=0)
        other.reset(seed=0)
        with pytest.raises(EnvStateError, match="SafetyPointGoal1-v0"):
            load_vector_state(venv, vector_state(other))
        venv.step(np.zeros((2, 2)))  # still usable
    finally:
        venv.close()
        other.close()


# --- shutdown --------------------------------------------------------------------


class Boom(gymnasium.Env):
    """Raises on its `fail_at`-th step."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float64)
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, fail_at: int) -> None:
        self.fail_at, self.steps = fail_at, 0

    def reset(self, *, seed=None, options=None):
        return np.zeros(2), {}

    def step(self, action):
        self.steps += 1
        if self.steps == self.fail_at:
            raise ArithmeticError(f"boom at step {self.steps}")
        return np.full(2, self.steps / 10), 1.0, False, False, {"cost": 0.0}


    def raise_local(self) -> None:
        class LocalError(Exception):  # not importable: cannot travel as a type
            pass

        raise LocalError("made in the worker")


def _boom(fail_at: int) -> Boom:
    return Boom(fail_at)


def _fails_in_worker(main_pid: int) -> Boom:
    # The pool builds one env in the main process for the spaces: that one succeeds.
    if os.getpid() != main_pid:
        raise OSError("no such model file")
    return Boom(0)


OK = functools.partial(_boom, 0)  # picklable, so the tests hold under any start method


def _exited(processes) -> bool:
    return all(p.exitcode is not None for p in processes)


def test_close_joins_every_worker() -> None:
    pool = PoolVectorEnv([OK] * 4, workers=2)
    processes = list(pool._processes)
    pool.reset()
    pool.step(np.zeros((4, 1)))
    pool.close()
    assert _exited(processes) and all(p.exitcode == 0 for p in processes)


def test_step_error_is_raised_with_its_type_and_closes_the_pool() -> None:
    pool = PoolVectorEnv([OK, OK, functools.partial(_boom, 2)], workers=2)
    processes = list(pool._processes)
    pool.reset()
    pool.step(np.zeros((3, 1)))
    with pytest.raises(ArithmeticError, match="boom at step 2") as info:
        pool.step(np.zeros((3, 1)))
    assert "in env worker 1" in "".join(getattr(info.value, "__notes__", []))
    assert pool.closed and _exited(processes)


def test_construction_error_leaves_no_worker() -> None:
    before = set(_children())
    with pytest.raises(OSError, match="no such model file"):
        PoolVectorEnv([functools.partial(_fails_in_worker, os.getpid())] * 2, workers=2)
    assert set(_children()) <= before


def test_failed_call_keeps_the_pool() -> None:
    pool = PoolVectorEnv([OK] * 2, workers=1)
    try:
        with pytest.raises(AttributeError):
            pool.get_attr("no_such_attribute")
        pool.set_attr("fail_at", [1, 1])  # the pool still answers
        assert pool.get_attr("fail_at") == (1, 1)
        pool.reset()
        with pytest.raises(ArithmeticError):
            pool.step(np.zeros((2, 1)))
    finally:
        pool.close()


def test_error_of_a_type_only_the_worker_knows_is_a_pool_worker_error() -> None:
    pool = PoolVectorEnv([OK] * 2, workers=2)
    try:
        with pytest.raises(PoolWorkerError, match="LocalError: made in the worker"):
            pool.call("raise_local")
    finally:
        pool.close()


def _children() -> list[int]:
    me, out = str(os.getpid()), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields_ = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields_[1] == me and fields_[0] != "Z":
            out.append(int(pid))
    return out


ORPHAN_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from test_pool import OK
from kfcpo.envs.pool import PoolVectorEnv
pool = PoolVectorEnv([OK] * 2, workers=2)
print(*[p.pid for p in pool._processes], flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_parent_is_killed() -> None:
    tests = os.path.dirname(os.path.abspath(__file__))
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT.format(tests=tests)],
                              stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
