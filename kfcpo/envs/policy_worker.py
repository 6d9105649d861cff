"""The worker engine's epoch loop (``env.engine: worker``; docs/algorithm.md 4.5.1): a
worker runs the policy on its own block of envs for a whole epoch, without a message
per step.

Why: with the step engine the main process normalizes, runs the actor and draws the
actions once per vector step while the env workers wait for them, one round trip per
step; on 2 cores the rollout reached 0.72-0.85 of the raw env rate. Here the main
process sends each worker one ``EpochPlan`` per epoch (the actor's weights, the
normalizer frozen at the epoch's start, the step count) and the worker steps ``T`` times
on its own, writing every step into the epoch's arrays (``kfcpo.envs.epoch_buffers``).
Not in the first epoch of a run: that one, a warm-up while the normalizer has seen less
than an epoch of observations, runs the step engine's loop (``kfcpo.data.worker_rollout``).

What makes the result independent of the layout (how many workers, which envs each
has, or all envs in the main process):
- each env's action noise comes from its own generator, drawn by the main process into
  ``noise`` before the epoch (``kfcpo.data.worker_rollout``);
- normalization, the action's ``mean + std * noise`` and the clip are elementwise;
- the actor's forward, whose matmuls and activations round differently for different
  row counts (measured with MKL: rows computed 1, 2 or 3 at a time, and 5 at a time on
  2 threads, differ from the same rows in a batch of 16), always runs on all ``N``
  rows, each env in its own row, rows of other workers' envs left at zero: a matmul
  row depends only on its own inputs, so env i's mean is the same whatever fills the
  other rows. One torch thread (``kfcpo.threads.one_thread``), as the thread count can change a
  matmul's rounding too.

Each env is stepped and autoreset by gymnasium 0.29 ``SyncVectorEnv``'s rule (as
``pool_worker.step_block``): the episode's last observation is replaced by the reset's,
and kept (``final_observation``) when the episode was truncated, for the bootstrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium
import numpy as np
import torch

from kfcpo.envs.normalize import ObsNormalizer
from kfcpo.envs.wrappers import COST_KEY
from kfcpo.models.frozen_policy import FrozenPolicy

# The final observation of a truncated episode: (step, env, observation).
Final = tuple[int, int, np.ndarray]


@dataclass
class EpochPlan:
    """Everything a worker needs for one epoch besides its envs and the epoch's arrays."""

    steps: int
    policy: FrozenPolicy
    normalizer: ObsNormalizer  # the statistics at the epoch's start, used unchanged all epoch
    act_low: np.ndarray  # the action box the envs get the samples clipped to
    act_high: np.ndarray


@torch.no_grad()
def run_block(
    envs: Sequence[gymnasium.Env], first: int, plan: EpochPlan, arrays: dict[str, np.ndarray]
) -> list[Final]:
    """Step envs ``first, first+1, ...`` for ``plan.steps`` steps with the plan's policy,
    starting from their rows of ``arrays["obs"][0]`` and writing every step into their
    columns of ``arrays``; the final observations of the truncated episodes, in step
    order. Call under ``kfcpo.threads.one_thread``."""
    block = slice(first, first + len(envs))
    obs, norm_obs, noise = arrays["obs"], arrays["norm_obs"], arrays["noise"]
    mean_out, act_out = arrays["mean"], arrays["act"]
    reward, cost, terminated, truncated = (arrays[k] for k in ("reward", "cost", "terminated", "truncated"))
    stepped = arrays["stepped"]
    forward = plan.policy.mean_fn()
    rows = torch.zeros(norm_obs.shape[1:], dtype=torch.float32)  # all N envs' rows
    rows_np = rows.numpy()  # the same memory
    finals: list[Final] = []
    for t in range(plan.steps):
        x = plan.normalizer.normalize(obs[t, block])
        norm_obs[t, block] = rows_np[block] = x
        mean = forward(rows)[block].numpy()
        # Two float32 operations, each rounded once, as the reference writes them.
        act = mean + plan.policy.std * noise[t, block]
        mean_out[t, block], act_out[t, block] = mean, act
        clipped = np.clip(act, plan.act_low, plan.act_high)  # the buffer keeps the sample
        for j, env in enumerate(envs):
            i = first + j
            try:
                next_obs, r, term, trunc, info = env.step(clipped[j])
                if term or trunc:
                    if trunc and not term:
                        finals.append((t, i, np.array(next_obs)))
                    next_obs, _ = env.reset()
            except Exception as err:
                err.add_note(f"env {i} at step {t} of the epoch's {plan.steps} (worker engine)")
                raise
            obs[t + 1, i] = next_obs
            reward[t, i], cost[t, i] = r, info[COST_KEY]
            terminated[t, i], truncated[t, i] = term, trunc
        stepped[block] = t + 1
    return finals
