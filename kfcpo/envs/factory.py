"""Build Safety Gymnasium envs as standard gymnasium envs and vector envs.

Single envs step as gymnasium's 5-tuple with the cost in ``info["cost"]`` (see
``wrappers``). Vector envs are gymnasium 0.29's ``SyncVectorEnv`` (all envs in this
process) or kfcpo's ``PoolVectorEnv`` (``vector="async"``: the envs spread over worker
processes, several per worker; see ``pool``), which returns the same arrays and infos
(autoreset: a finished episode's last observation is in ``info["final_observation"][i]``).
Both are wrapped so ``info["cost"]`` is always a float64 array of shape ``(num_envs,)``,
the final step's cost included.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import gymnasium
import safety_gymnasium
from gymnasium.vector import SyncVectorEnv

from kfcpo.envs.ids import UnknownEnvError, env_ids, validate_env_id
from kfcpo.envs.layout import AUTO_WORKERS, resolve_workers
from kfcpo.envs.pool import PoolVectorEnv
from kfcpo.envs.wrappers import SafetyToGymnasium, VectorCost

__all__ = [
    "UnknownEnvError",
    "env_ids",
    "make_env",
    "make_vector_env",
    "space_dims",
    "validate_env_id",
]

VectorKind = Literal["sync", "async"]


def make_env(
    env_id: str,
    seed: int | None = None,
    render_mode: str | None = None,
    *,
    max_episode_steps: int | None = None,
    **kwargs: Any,
) -> gymnasium.Env:
    """One Safety Gymnasium task as a gymnasium env with ``info["cost"]``.

    ``seed`` decides the first reset (and seeds the spaces); ``max_episode_steps``
    overrides the registered time limit (1000 for navigation tasks, which their
    own step counter also enforces, so only shorter limits take effect); other
    keyword arguments go to the task (e.g. ``camera_name="fixedfar"``, ``width``).
    """
    validate_env_id(env_id)
    env = safety_gymnasium.make(
        env_id, render_mode=render_mode, max_episode_steps=max_episode_steps, **kwargs
    )
    return SafetyToGymnasium(env, seed=seed)


def make_vector_env(
    env_id: str,
    num_envs: int,
    seed: int | None = 0,
    vector: VectorKind = "sync",
    *,
    max_episode_steps: int | None = None,
    context: str | None = None,
    workers: int = AUTO_WORKERS,
    epoch_steps: int | None = None,
) -> VectorCost:
    """``num_envs`` copies of a task, env ``i`` seeded with ``seed + i``.

    ``vector="async"`` steps the envs in ``workers`` worker processes, contiguous blocks
    of envs each (0: one per usable core; never more than ``num_envs``); ``context`` is
    the multiprocessing start method (the platform default when None). The layout never
    changes the results: the same seed gives the same arrays with any ``vector`` and
    ``workers``. ``epoch_steps`` (the worker engine's steps per env and epoch) makes an
    async pool share that epoch's arrays with its workers (``PoolVectorEnv``); a sync
    vector env needs nothing for it.
    """
    validate_env_id(env_id)
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    n_workers = resolve_workers(num_envs, workers)  # checks workers before anything starts
    # functools.partial of a module-level function pickles, which spawn and
    # forkserver workers need.
    env_fns = [
        functools.partial(
            make_env,
            env_id,
            None if seed is None else seed + i,
            max_episode_steps=max_episode_steps,
        )
        for i in range(num_envs)
    ]
    if vector == "sync":
        venv = SyncVectorEnv(env_fns)
    elif vector == "async":
        venv = PoolVectorEnv(env_fns, n_workers, context=context, epoch_steps=epoch_steps)
    else:
        raise ValueError(f"vector must be 'sync' or 'async', got {vector!r}")
    if seed is not None:
        venv.action_space.seed(seed)
        venv.observation_space.seed(seed)
    return VectorCost(venv)


@functools.cache
def space_dims(env_id: str) -> tuple[int, int]:
    """``(obs_dim, act_dim)`` of a task's flattened spaces (built once, cached)."""
    validate_env_id(env_id)
    env = safety_gymnasium.make(env_id)
    try:
        return (
            gymnasium.spaces.flatdim(env.observation_space),
            gymnasium.spaces.flatdim(env.action_space),
        )
    finally:
        env.close()
