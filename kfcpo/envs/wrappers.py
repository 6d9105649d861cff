"""Wrappers that turn Safety Gymnasium envs into standard gymnasium (vector) envs.

Safety Gymnasium steps return a 6-tuple ``(obs, reward, cost, terminated,
truncated, info)``; gymnasium's vector envs unpack exactly five values. We use
gymnasium's 5-tuple with the cost in ``info["cost"]`` so the stock
``SyncVectorEnv``/``AsyncVectorEnv`` (autoreset, final observation, shared
memory, worker processes) work unchanged, and ``VectorCost`` then lifts the
cost to a complete ``(num_envs,)`` array.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import VectorEnv, VectorEnvWrapper

from kfcpo.envs import state

COST_KEY = "cost"


class SafetyToGymnasium(gymnasium.Wrapper):
    """5-tuple steps with ``info["cost"]``; seeds itself on its first reset."""

    def __init__(self, env: gymnasium.Env, seed: int | None = None) -> None:
        super().__init__(env)
        self._pending_seed = seed
        if seed is not None:
            self.action_space.seed(seed)
            self.observation_space.seed(seed)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        # A vector env resets its workers without a seed; the seed given at
        # construction must still decide the first episode.
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        return self.env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        # safety_gymnasium calls np.array(action, copy=False), which numpy 2
        # rejects whenever a copy is needed (lists, other dtypes).
        action = np.asarray(action, dtype=self.action_space.dtype)
        obs, reward, cost, terminated, truncated, info = self.env.step(action)
        info[COST_KEY] = float(cost)
        return obs, float(reward), bool(terminated), bool(truncated), info

    @property
    def env_state(self) -> bytes:
        """This env's complete state (see ``kfcpo.envs.state``). A property, not a method,
        so a vector env can read and write it by name: ``get_attr`` / ``set_attr`` give env
        ``i`` its own value, in its worker process for ``AsyncVectorEnv``."""
        return state.capture(self)

    @env_state.setter
    def env_state(self, blob: bytes) -> None:
        state.restore(self, blob)

    def close(self) -> None:
        """Close the env and the render contexts safety_gymnasium leaves open."""
        # safety_gymnasium never frees its render contexts; freed at interpreter
        # exit instead, after EGL is torn down, they raise EGLError noise.
        viewers = getattr(getattr(self.env.unwrapped, "task", None), "_viewers", {})
        for viewer in viewers.values():
            viewer.close()
        viewers.clear()
        super().close()


class VectorCost(VectorEnvWrapper):
    """Guarantee ``info["cost"]`` is a float64 array of shape ``(num_envs,)``.

    On the step that ends an episode, gymnasium 0.29's autoreset replaces that
    env's info with the reset info and moves the step's info (with its cost) to
    ``info["final_info"][i]``; the final observation is in
    ``info["final_observation"][i]``. This wrapper copies that last cost back, so
    every step's cost is in one place.
    """

    def __init__(self, env: VectorEnv) -> None:
        super().__init__(env)
        # Copied because VectorEnvWrapper's attribute forwarding warns on each use.
        self.num_envs = env.num_envs
        self.is_vector_env = True
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.metadata = env.metadata
        self.render_mode = env.render_mode
        self.spec = env.spec

    def step_wait(self) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step_wait()
        info[COST_KEY] = step_costs(info, self.num_envs)
        info[f"_{COST_KEY}"] = np.ones(self.num_envs, dtype=bool)
        return obs, reward, terminated, truncated, info


def step_costs(info: dict[str, Any], num_envs: int) -> np.ndarray:
    """The per-env cost of one vector step, including envs that just autoreset."""
    reported = info.get(f"_{COST_KEY}")
    if reported is not None and "_final_info" not in info and reported.all():
        # Most steps: every env reported its cost and none reset. What the general path
        # below computes then, without its per-step masks (this runs before each action).
        return np.array(info[COST_KEY], dtype=np.float64)
    cost = np.zeros(num_envs, dtype=np.float64)
    found = np.zeros(num_envs, dtype=bool)
    if COST_KEY in info:
        found |= info[f"_{COST_KEY}"]
        cost[found] = info[COST_KEY][found]
    for i in np.flatnonzero(info.get("_final_info", np.zeros(num_envs, dtype=bool))):
        cost[i] = info["final_info"][i][COST_KEY]
        found[i] = True
    if not found.all():
        raise KeyError(f"no cost reported by envs {np.flatnonzero(~found).tolist()}")
    return cost
