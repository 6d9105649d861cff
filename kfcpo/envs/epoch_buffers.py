"""The arrays of one rollout epoch of the worker engine, (T, N, ...) each, in one block
of memory: shared memory made before a pool's workers start (they inherit it, as the
per-step ``StepBuffers``), or plain process memory for the in-process (sync) variant.

Why one block for the whole epoch: the worker engine steps ``T`` times without a
message per step (``kfcpo.envs.policy_worker``), so everything a step produces (raw and
normalized observations, pi's means, the actions, rewards, costs, episode flags) must be
written where the main process reads it at the epoch's end. The main process writes the
epoch's inputs (the first observations, row 0 of ``obs``, and the action noise) before
it starts the workers. Each worker writes only its own envs' columns and the main
process reads them only after every worker has replied, so no lock is needed.

Inherited rather than attached by name: an unnamed block is freed with the last process
that maps it, so no segment can leak when a run is killed, and no resource tracker is
involved. The price is that the block's size, hence ``T``, is fixed when the pool starts.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

import numpy as np

# Each array starts at a multiple of this many bytes (a cache line), so every array has
# the same alignment in every process that maps the block.
ALIGN = 64


@dataclass(frozen=True)
class EpochLayout:
    """The shapes and dtypes of an epoch's arrays for ``steps`` steps of ``num_envs`` envs."""

    steps: int
    num_envs: int
    obs_shape: tuple[int, ...]
    obs_dtype: str
    act_shape: tuple[int, ...]

    def arrays(self) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        """Every array's (dtype, shape). ``obs`` has ``steps + 1`` rows: row t is what
        the policy saw at step t, row T the observation the next epoch starts from."""
        T, N = self.steps, self.num_envs
        f32, f64, flag = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.bool_)
        return {
            "obs": (np.dtype(self.obs_dtype), (T + 1, N, *self.obs_shape)),
            "norm_obs": (f32, (T, N, *self.obs_shape)),
            "noise": (f32, (T, N, *self.act_shape)),  # standard normal draws of each env's generator
            "mean": (f32, (T, N, *self.act_shape)),
            "act": (f32, (T, N, *self.act_shape)),  # the unclipped samples
            "reward": (f64, (T, N)),
            "cost": (f64, (T, N)),
            "terminated": (flag, (T, N)),
            "truncated": (flag, (T, N)),
            # Steps each env has finished this epoch: the progress the main process reads
            # while it waits for the workers' replies.
            "stepped": (np.dtype(np.int64), (N,)),
        }

    def offsets(self) -> tuple[dict[str, int], int]:
        """Each array's byte offset in the block, and the block's size."""
        out, end = {}, 0
        for key, (dtype, shape) in self.arrays().items():
            out[key] = end
            end += -(-int(np.prod(shape)) * dtype.itemsize // ALIGN) * ALIGN
        return out, max(end, 1)


@dataclass
class EpochBuffers:
    """One block holding an epoch's arrays; ``views()`` gives numpy arrays on it (each
    process makes its own views of the same memory)."""

    layout: EpochLayout
    raw: Any  # a multiprocessing RawArray (shared) or a bytearray (this process only)

    @classmethod
    def create(cls, layout: EpochLayout, ctx: BaseContext | None = None) -> EpochBuffers:
        """Shared memory for the workers `ctx` will start, or private memory without one."""
        _, size = layout.offsets()
        raw = bytearray(size) if ctx is None else ctx.RawArray(ctypes.c_uint8, size)
        return cls(layout, raw)

    def views(self) -> dict[str, np.ndarray]:
        """Every array of ``layout.arrays()``, on this block."""
        offsets, _ = self.layout.offsets()
        out = {}
        for key, (dtype, shape) in self.layout.arrays().items():
            count = int(np.prod(shape))
            out[key] = np.frombuffer(self.raw, dtype=dtype, count=count, offset=offsets[key]).reshape(shape)
        return out
