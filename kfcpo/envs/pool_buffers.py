"""Shared-memory arrays through which a worker pool exchanges each step's arrays.

Actions go to the workers and observations, rewards and episode flags come back as
writes into these arrays, so a step's pipe messages carry only the command and the
per-env info dicts: no array is pickled on the per-step path. Each worker writes only
its own rows, and the main process reads them only after every worker has replied, so
no lock is needed (the pipe message orders the writes before the reads).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

import gymnasium
import numpy as np


def _box(space: gymnasium.Space, what: str) -> gymnasium.spaces.Box:
    if not isinstance(space, gymnasium.spaces.Box):
        raise ValueError(f"the worker pool needs a Box {what} space, got {space}; use vector 'sync'")
    return space


@dataclass
class StepBuffers:
    """Raw shared arrays for ``num_envs`` envs; ``views()`` gives numpy arrays on them."""

    num_envs: int
    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    act_shape: tuple[int, ...]
    act_dtype: np.dtype
    raw: dict[str, Any]

    @classmethod
    def create(
        cls,
        ctx: BaseContext,
        num_envs: int,
        observation_space: gymnasium.Space,
        action_space: gymnasium.Space,
    ) -> StepBuffers:
        """Shared-memory buffers for `num_envs` envs of these spaces (Box spaces only)."""
        obs, act = _box(observation_space, "observation"), _box(action_space, "action")
        sizes = {
            "obs": num_envs * int(np.prod(obs.shape)) * obs.dtype.itemsize,
            "act": num_envs * int(np.prod(act.shape)) * act.dtype.itemsize,
            "reward": num_envs * np.dtype(np.float64).itemsize,
            "terminated": num_envs,
            "truncated": num_envs,
        }
        # Bytes, viewed with the right dtype: one code path for every dtype a Box can have.
        raw = {k: ctx.RawArray(ctypes.c_uint8, max(n, 1)) for k, n in sizes.items()}
        return cls(num_envs, obs.shape, obs.dtype, act.shape, act.dtype, raw)

    def views(self) -> dict[str, np.ndarray]:
        """The buffers as numpy arrays (obs, act, reward, terminated, truncated), one
        row per env; each process makes its own views of the same memory."""
        n = self.num_envs
        layout = {
            "obs": (self.obs_dtype, (n, *self.obs_shape)),
            "act": (self.act_dtype, (n, *self.act_shape)),
            "reward": (np.dtype(np.float64), (n,)),
            "terminated": (np.dtype(np.bool_), (n,)),
            "truncated": (np.dtype(np.bool_), (n,)),
        }
        out = {}
        for key, (dtype, shape) in layout.items():
            count = int(np.prod(shape))
            out[key] = np.frombuffer(self.raw[key], dtype=dtype, count=count).reshape(shape)
        return out

