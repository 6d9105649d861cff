"""Collect one epoch of transitions from a vector of Safety Gymnasium envs with the
current policy, and turn it into a Batch (GAE for reward and cost, standardized)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kfcpo.data.batch import Batch, EpochStats, Rollout
from kfcpo.data.gae import gae
from kfcpo.data.rollout_nets import RolloutNets
from kfcpo.data.step_record import StepRecorder
from kfcpo.dist import all_gather, all_mean, world_size
from kfcpo.envs import COST_KEY, ObsNormalizer, RunningMeanStd
from kfcpo.envs.normalize import batch_moments
from kfcpo.envs.state import EnvStateError, load_vector_state, vector_state
from kfcpo.models import COST, REWARD, Critics, GaussianActor
from kfcpo.run.encoding import blob_from_tensor, blob_to_tensor

if TYPE_CHECKING:  # annotations only: gymnasium loads with kfcpo.envs, after its shim
    import gymnasium

STD_EPS = 1e-8  # keeps standardization finite when all advantages are equal
# The collector's own state between epochs: raw observations and unfinished episodes' sums.
_EPISODE_STATE = ("obs", "ep_ret", "ep_cost", "ep_len")
# What a rollout keeps of each step: the normalized observations, pi's means, the
# sampled actions and both critics' values.
_KEPT = ("obs", "mean", "act", "values")


@dataclass
class GAEConfig:
    """Discounts and GAE lambda of the advantages, and how each is normalized."""

    gamma: float
    cost_gamma: float
    lam: float
    standardize: bool  # reward advantages: zero mean, unit std
    cost_adv: str = "center"  # cost advantages: center | standardize | none

    @classmethod
    def from_config(cls, cfg: Any) -> GAEConfig:
        """The advantage settings of a validated run config."""
        return cls(cfg.gamma, cfg.cost_gamma, cfg.gae_lambda, cfg.standardize_adv, cfg.cost_adv)


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std over all ranks' samples (ranks hold equal counts)."""
    mean = all_mean(x.mean())
    var = all_mean(((x - mean) ** 2).mean())
    return (x - mean) / (var.sqrt() + STD_EPS)


def center(x: torch.Tensor) -> torch.Tensor:
    """Zero mean over all ranks' samples, the scale left as it is."""
    return x - all_mean(x.mean())


COST_ADV_SCALINGS = {"standardize": standardize, "center": center, "none": lambda x: x}


class RolloutCollector:
    """Owns the envs' running state across epochs (the epoch cut is not an episode end)."""

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
        self.envs, self.actor, self.critics = envs, actor, critics
        self.normalizer, self.steps_per_env, self.gae_cfg = normalizer, steps_per_env, gae_cfg
        self.num_envs = envs.num_envs
        self.act_low = envs.single_action_space.low
        self.act_high = envs.single_action_space.high
        self.obs, _ = envs.reset(seed=seed)
        self.ep_ret = np.zeros(self.num_envs)
        self.ep_cost = np.zeros(self.num_envs)
        self.ep_len = np.zeros(self.num_envs, dtype=np.int64)
        self.on_progress: Callable[[int], None] | None = None
        self.device = torch.device("cpu")

    def state_dict(self) -> dict[str, Any]:
        """Everything the next `collect` depends on besides the networks and RNGs: every
        env's state, the current observations and the unfinished episodes' sums. Tensors
        only (env states as uint8 bytes), so torch's weights_only loader reads it."""
        envs = vector_state(self.envs)
        return {
            "envs": [blob_to_tensor(b) for b in envs["envs"]],
            "spaces": blob_to_tensor(envs["spaces"]),
            **{k: torch.from_numpy(np.array(getattr(self, k))) for k in _EPISODE_STATE},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises EnvStateError, changing nothing, if the state is for other envs."""
        for k in _EPISODE_STATE:
            saved, expected = tuple(state[k].shape), np.shape(getattr(self, k))
            if saved != expected:
                raise EnvStateError(f"collector state '{k}' has shape {saved}, this run's is {expected}")
        envs = [blob_from_tensor(t) for t in state["envs"]]
        load_vector_state(self.envs, {"envs": envs, "spaces": blob_from_tensor(state["spaces"])})
        for k in _EPISODE_STATE:
            setattr(self, k, state[k].numpy().copy())

    def close(self) -> None:
        """Close the envs."""
        self.envs.close()

    def _tensor(self, obs: np.ndarray, normalizer: ObsNormalizer | None = None) -> torch.Tensor:
        """Observations normalized by `normalizer` (the live one by default) on the
        networks' device (buffers stay on the CPU)."""
        normalizer = self.normalizer if normalizer is None else normalizer
        return torch.as_tensor(normalizer.normalize(obs), dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def collect(self, policy_version: int) -> Rollout:
        """One epoch's `steps_per_env` steps of every env with the live policy: the batch
        with its advantages and returns, and the epoch's episode statistics.
        `policy_version` (updates so far) is recorded with the rollout."""
        start = time.perf_counter()
        self.device = self.actor.log_std.device  # Lightning moves the module after setup
        T, N = self.steps_per_env, self.num_envs
        nets = RolloutNets(self.actor, self.critics)
        # Each step's tensors, stacked after the loop: appending costs less than writing a
        # row of a preallocated buffer, and the stack holds the same values.
        kept: dict[str, list[torch.Tensor]] = {k: [] for k in _KEPT}
        boot_r, boot_c = torch.full((T, N), torch.nan), torch.full((T, N), torch.nan)
        record = StepRecorder(T, N, self.ep_ret, self.ep_cost, self.ep_len, self.on_progress)
        start_stats = self.normalizer.rms.state_dict()
        # Only DDP merges the epoch's own statistics (_merge_ranks): one process skips them.
        epoch_stats = RunningMeanStd(self.normalizer.rms.shape) if world_size() > 1 else None
        for t in range(T):
            # The next action waits for these lines only: the statistics, then the policy.
            moments = batch_moments(self.obs, self.normalizer.rms.shape)
            self.normalizer.merge(*moments)
            if epoch_stats is not None:
                epoch_stats.merge(*moments)
            obs = self._tensor(self.obs)
            mean, act = nets.act(obs)
            # The env gets the action clipped to its box; the buffer keeps the sample so
            # log-probabilities stay those of the Gaussian that drew it.
            self.envs.step_async(np.clip(act.cpu().numpy(), self.act_low, self.act_high))
            # While the envs step (in worker processes with vector=async): the work no
            # action depends on. None of it draws random numbers, so the order changes
            # no result.
            record.flush()  # the previous step's rewards, costs and episode ends
            for key, x in zip(_KEPT, (obs, mean, act, nets.values(obs)), strict=True):
                kept[key].append(x)
            self.obs, reward, terminated, truncated, info = self.envs.step_wait()
            # Bootstrap values now, not later: they normalize with this step's statistics.
            for i in np.flatnonzero(truncated & ~terminated):
                final = self._tensor(info["final_observation"][i][None])
                v_r, v_c = self._values(nets, final)
                boot_r[t, i], boot_c[t, i] = v_r[0], v_c[0]
            record.defer(t, reward, info[COST_KEY], terminated, truncated)
        record.flush()
        grid = record.tensors()
        obs_buf, mean, act_buf = (torch.stack(kept[k]) for k in ("obs", "mean", "act"))
        grid["logp"] = nets.log_prob(mean, act_buf).cpu()
        values = torch.stack(kept["values"], dim=1).cpu()  # (2, T, N)
        grid["v_r"], grid["v_c"] = values[REWARD], values[COST]
        last_r, last_c = self._values(nets, self._tensor(self.obs))
        if epoch_stats is not None:
            self._merge_ranks(start_stats, epoch_stats)
        batch = self._advantages(obs_buf.cpu(), act_buf.cpu(), grid, boot_r, boot_c, last_r, last_c)
        return Rollout(batch=batch, stats=self._epoch_stats(record, start, policy_version))

    def _epoch_stats(self, record: StepRecorder, start: float, policy_version: int) -> EpochStats:
        """The epoch's episode statistics from its recorder; `start` is the epoch's
        perf_counter start."""
        return EpochStats(
            ep_ret_sum=float(record.sums[0]),
            ep_cost_sum=float(record.sums[1]),
            ep_len_sum=float(record.sums[2]),
            episodes=record.episodes,
            ep_costs=record.ep_costs,
            env_steps=self.steps_per_env * self.num_envs,
            rollout_s=time.perf_counter() - start,
            policy_version=policy_version,
        )

    @staticmethod
    def _values(nets: RolloutNets, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = nets.values(obs).cpu()
        return values[REWARD], values[COST]

    def _merge_ranks(self, start: dict, epoch: RunningMeanStd) -> None:
        """Make every rank's normalizer the statistics of all ranks' observations: each
        rank saw only its own this epoch (DDP broadcasts buffers once, never again).
        Each rank's (count, mean, var) is merged with the parallel formula, in rank
        order, so all ranks compute the same float64 result."""
        parts = [torch.tensor([epoch.count]), torch.as_tensor(epoch.mean).reshape(-1),
                 torch.as_tensor(epoch.var).reshape(-1)]
        mine = torch.cat([p.to(torch.float64) for p in parts])
        self.normalizer.rms.load_state_dict(start)
        dim = epoch.mean.size
        for part in all_gather(mine):
            count, mean, var = float(part[0]), part[1 : 1 + dim].numpy(), part[1 + dim :].numpy()
            self.normalizer.rms.merge(count, mean.reshape(epoch.shape), var.reshape(epoch.shape))

    def _advantages(
        self, obs: torch.Tensor, act: torch.Tensor, grid: dict[str, torch.Tensor], boot_r: torch.Tensor,
        boot_c: torch.Tensor, last_r: torch.Tensor, last_c: torch.Tensor,
    ) -> Batch:
        cfg = self.gae_cfg
        out = {}
        for key, values, boot, last, gamma in (
            ("r", grid["v_r"], boot_r, last_r, cfg.gamma),
            ("c", grid["v_c"], boot_c, last_c, cfg.cost_gamma),
        ):
            next_values = torch.cat([values[1:], last[None]])
            next_values = torch.where(torch.isnan(boot), next_values, boot)
            adv, ret = gae(grid[key], values, next_values, grid["term"], grid["end"], gamma, cfg.lam)
            out[key] = (adv.reshape(-1), ret.reshape(-1))
        adv_r = standardize(out["r"][0]) if cfg.standardize else out["r"][0]
        adv_c = COST_ADV_SCALINGS[cfg.cost_adv](out["c"][0])
        return Batch(
            obs=obs.reshape(-1, obs.shape[-1]),
            act=act.reshape(-1, act.shape[-1]),
            logp_old=grid["logp"].reshape(-1),
            adv_r=adv_r,
            adv_c=adv_c,
            ret_r=out["r"][1],
            ret_c=out["c"][1],
        )
