"""The collector of the worker engine (``env.engine: worker``; docs/algorithm.md 4.5.1):
the policy runs where the envs step, a whole epoch at a time, and this process turns the
epoch's arrays into the same Rollout as ``RolloutCollector``.

Per epoch (after the warm-up, below): draw every env's action noise from its own
generator, write it and the current observations into the epoch's arrays, send the plan
(the actor's weights, the normalizer as it is now, the step count) and wait once; then,
in this process, merge the epoch's observations into the normalizer step by step over
all envs (the order the step engine merges them in, so the statistics are those it would
reach from the same observations), compute both critics' values of all T x N normalized
observations in one forward, the bootstrap values of truncated episodes' final
observations, the log-densities, the episode statistics (``StepRecorder``: episode sums
carry over epochs) and GAE.

The one difference from the step engine: epoch k's observations are normalized with the
statistics as they were after epoch k-1 (the step engine's move every step). Frozen at
the initial statistics (mean 0, var 1) the first epoch would see raw observations,
clipped, and the next one normalized ones: the first update fits the policy to inputs it
never sees again. So while the normalizer has seen fewer observations than one epoch of
this rank (``warming_up``: in a fresh run, the first epoch), the epoch runs the step
engine's own loop (``RolloutCollector.collect``) and is the step engine's epoch bit for
bit: its statistics move every step, its noise comes from the global torch generator,
and the envs' own noise generators are left untouched.

The same seed gives the same rollouts whatever the layout: with ``vector=async`` and any
number of workers, or ``vector=sync`` (the loop runs in this process); see
``kfcpo.envs.policy_worker`` for why (the warm-up epoch too: the step engine's results do
not depend on the layout). Outside the warm-up ``on_progress`` gets the steps the
workers report in the epoch's ``stepped`` array while the main process waits for them
(every ``pool.PROGRESS_POLL_S``), so a progress bar moves during the epoch, not once per
epoch; with the loop in this process (``vector=sync``), once at the epoch's end.
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kfcpo.data.batch import Rollout
from kfcpo.data.rollout import GAEConfig, RolloutCollector
from kfcpo.data.rollout_nets import RolloutNets
from kfcpo.data.step_record import StepRecorder
from kfcpo.dist import world_size
from kfcpo.envs import ObsNormalizer, RunningMeanStd
from kfcpo.envs.epoch_buffers import EpochBuffers, EpochLayout
from kfcpo.envs.normalize import batch_moments
from kfcpo.envs.policy_worker import EpochPlan, Final, run_block
from kfcpo.envs.pool import PoolVectorEnv
from kfcpo.envs.state import EnvStateError
from kfcpo.models import COST, REWARD, Critics, GaussianActor
from kfcpo.models.frozen_policy import FrozenPolicy
from kfcpo.threads import one_thread

if TYPE_CHECKING:  # annotations only: gymnasium loads with kfcpo.envs, after its shim
    import gymnasium

NOISE_KEY = "noise_rngs"  # the collector state's entry for the generators' states


def noise_seed(seed: int, env: int) -> int:
    """The seed of env ``env``'s action-noise generator in a run (rank) seeded ``seed``:
    ``SeedSequence((seed, env))``'s first 64-bit word. A function of the env's index, not
    of the worker that steps it; hashed, so the streams of neighbouring envs and of other
    ranks (``kfcpo.seeding.rank_seed``) are unrelated."""
    return int(np.random.SeedSequence((seed, env)).generate_state(1, np.uint64)[0])


class WorkerRolloutCollector(RolloutCollector):
    """``RolloutCollector`` with the policy run in the env workers for whole epochs.

    ``envs`` is a sync vector env (the loop runs here) or a worker pool built with
    ``epoch_steps=steps_per_env`` (``make_vector_env``), whose shared arrays it uses."""

    def __init__(
        self,
        envs: gymnasium.vector.VectorEnv,
        actor: GaussianActor,
        critics: Critics,
        normalizer: ObsNormalizer,
        steps_per_env: int,
        gae_cfg: GAEConfig,
        seed: int,
    ) -> None:
        # Here, not at the top: gymnasium must load after kfcpo.envs' shim, which keeps a
        # plugin's import-time notice off stderr (a one-line error must stay one line).
        from gymnasium.vector import SyncVectorEnv

        inner = envs.unwrapped
        if isinstance(inner, PoolVectorEnv):
            if inner.epoch_layout is None or inner.epoch_layout.steps != steps_per_env:
                raise ValueError(f"the worker engine needs a pool built with epoch_steps={steps_per_env}, "
                                 f"this one has {getattr(inner.epoch_layout, 'steps', None)}")
        elif not isinstance(inner, SyncVectorEnv):
            raise TypeError(f"the worker engine runs on a sync vector env or a worker pool, not "
                            f"{type(inner).__name__}")
        super().__init__(envs, actor, critics, normalizer, steps_per_env, gae_cfg, seed)
        self._pool = inner if isinstance(inner, PoolVectorEnv) else None
        self._sync_envs = None if self._pool is not None else inner.envs
        if self._pool is not None:
            self._arrays = self._pool.epoch_views
        else:
            obs_space, act_space = envs.single_observation_space, envs.single_action_space
            layout = EpochLayout(steps_per_env, self.num_envs, tuple(obs_space.shape), obs_space.dtype.str,
                                 tuple(act_space.shape))
            self._arrays = EpochBuffers.create(layout).views()
        self.noise_rngs = [torch.Generator().manual_seed(noise_seed(seed, i)) for i in range(self.num_envs)]
        self._reported = 0  # the epoch's steps already passed to on_progress

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """``RolloutCollector``'s state and every env's noise generator state (uint8
        tensors, one row per env), so a resumed run draws the same actions."""
        return {**super().state_dict(), NOISE_KEY: torch.stack([g.get_state() for g in self.noise_rngs])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises EnvStateError, changing nothing, if the state is for other envs or has
        no generator states (a step-engine run wrote it)."""
        rngs = state.get(NOISE_KEY)
        if rngs is None:
            raise EnvStateError("collector state has no action-noise generators (the step engine wrote it)")
        if rngs.shape[0] != self.num_envs:
            raise EnvStateError(f"collector state has {rngs.shape[0]} noise generators, this run has "
                                f"{self.num_envs} envs")
        super().load_state_dict(state)
        for g, rng in zip(self.noise_rngs, rngs, strict=True):
            g.set_state(rng.clone())

    # ---------------------------------------------------------------- collect
    def _noise(self) -> np.ndarray:
        """(T, N, *act_shape) standard normal draws: env i's column from its own
        generator, ``randn((T, *act_shape))`` once per epoch."""
        shape = (self.steps_per_env, *self.envs.single_action_space.shape)
        draws = [torch.randn(shape, generator=g, dtype=torch.float32) for g in self.noise_rngs]
        return torch.stack(draws, dim=1).numpy()

    def _run(self, plan: EpochPlan) -> list[Final]:
        self._arrays["stepped"][...] = 0
        self._reported = 0
        if self._pool is not None:
            on_wait = None if self.on_progress is None else self._report_progress
            finals = self._pool.run_epoch(plan, on_wait)
        else:
            with one_thread():
                finals = run_block(self._sync_envs, 0, plan, self._arrays)
        self._report_progress()
        return finals

    def _report_progress(self) -> None:
        """Pass the steps finished since the last report (the workers' ``stepped``
        counts) to ``on_progress``."""
        done = int(self._arrays["stepped"].sum())
        if self.on_progress is not None and done > self._reported:
            self.on_progress(done - self._reported)
        self._reported = done

    def warming_up(self) -> bool:
        """Whether the next epoch runs the step engine's loop: the normalizer is on and has
        seen fewer observations than one epoch of this rank (T x N). A function of the
        normalizer's checkpointed count alone, so a resumed run takes the path the
        uninterrupted one took, under any layout. Under DDP all ranks take the same path:
        the count is 0 on every rank before the first epoch (or the same checkpoint's),
        and both paths end in ``_merge_ranks``, which leaves every rank the same float64
        statistics (all ranks' observations: world_size x T x N after the first epoch).
        With normalization off the policy's inputs are raw observations in every epoch,
        so there is nothing to warm up (and the count never grows)."""
        normalizer = self.normalizer
        return normalizer.enabled and normalizer.rms.count < self.steps_per_env * self.num_envs

    def collect(self, policy_version: int) -> Rollout:
        """One epoch's `steps_per_env` steps of every env with the policy as it is now:
        the step engine's loop while ``warming_up``, otherwise run where the envs step;
        the same Rollout as ``RolloutCollector.collect`` either way."""
        if self.warming_up():
            return super().collect(policy_version)
        return self._collect_in_workers(policy_version)

    @torch.no_grad()
    def _collect_in_workers(self, policy_version: int) -> Rollout:
        start = time.perf_counter()
        self.device = self.actor.log_std.device  # Lightning moves the module after setup
        T, N, a = self.steps_per_env, self.num_envs, self._arrays
        a["obs"][0] = self.obs
        a["noise"][...] = self._noise()
        frozen = copy.deepcopy(self.normalizer)  # this epoch's statistics
        plan = EpochPlan(T, FrozenPolicy.of(self.actor), frozen, self.act_low, self.act_high)
        finals = sorted(self._run(plan), key=lambda f: (f[0], f[1]))  # (step, env): any layout
        self.obs = a["obs"][T].copy()

        # The statistics, as the step engine merges them: each step's observations of all envs.
        start_stats = self.normalizer.rms.state_dict()
        epoch_stats = RunningMeanStd(self.normalizer.rms.shape) if world_size() > 1 else None
        for t in range(T):
            moments = batch_moments(a["obs"][t], self.normalizer.rms.shape)
            self.normalizer.merge(*moments)
            if epoch_stats is not None:
                epoch_stats.merge(*moments)

        record = StepRecorder(T, N, self.ep_ret, self.ep_cost, self.ep_len)  # progress came from _run
        for t in range(T):
            record.defer(t, a["reward"][t], a["cost"][t], a["terminated"][t], a["truncated"][t])
        record.flush()
        grid = record.tensors()

        # Copies: the arrays are overwritten by the next epoch.
        obs_buf, act_buf = torch.from_numpy(a["norm_obs"].copy()), torch.from_numpy(a["act"].copy())
        nets = RolloutNets(self.actor, self.critics)
        obs = obs_buf.to(self.device)
        values = nets.values(obs.reshape(T * N, -1)).cpu().reshape(-1, T, N)  # one forward
        grid["v_r"], grid["v_c"] = values[REWARD], values[COST]
        mean = torch.from_numpy(a["mean"]).to(self.device)
        grid["logp"] = nets.log_prob(mean, act_buf.to(self.device)).cpu()
        boot_r, boot_c = torch.full((T, N), torch.nan), torch.full((T, N), torch.nan)
        if finals:
            steps, envs = [f[0] for f in finals], [f[1] for f in finals]
            final_obs = self._tensor(np.stack([f[2] for f in finals]), frozen)
            v_r, v_c = self._values(nets, final_obs)  # one forward, rows in (step, env) order
            boot_r[steps, envs], boot_c[steps, envs] = v_r, v_c
        last_r, last_c = self._values(nets, self._tensor(self.obs, frozen))
        if epoch_stats is not None:
            self._merge_ranks(start_stats, epoch_stats)
        batch = self._advantages(obs_buf, act_buf, grid, boot_r, boot_c, last_r, last_c)
        return Rollout(batch=batch, stats=self._epoch_stats(record, start, policy_version))
