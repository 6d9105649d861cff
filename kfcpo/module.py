"""The LightningModule: one Lightning epoch = one rollout + one update.

Manual optimization; the update (kfcpo.update) runs the module's `Algorithm`, the
composition preconditioner x blender x guard built once from the config (kfcpo.algorithm).
The dataset collects with the live policy, so it is built in `setup` (after the process
group exists) and never in a worker process.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from kfcpo import metrics_schema as schema
from kfcpo.adam import adam
from kfcpo.algorithm import Algorithm
from kfcpo.config.validate import check_rank_split
from kfcpo.data import Rollout, RolloutDataset
from kfcpo.data.cost_window import EpisodeCostWindow
from kfcpo.data.rollout import GAEConfig, RolloutCollector
from kfcpo.data.worker_rollout import WorkerRolloutCollector
from kfcpo.dist import all_sum, assert_same_on_ranks, world_size
from kfcpo.envs import ObsNormalizer, make_vector_env, space_dims
from kfcpo.envs.state import EnvStateError
from kfcpo.models import Critics, GaussianActor
from kfcpo.registry import Registry
from kfcpo.run.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_KEY
from kfcpo.run.encoding import numpy_state_from_tensors, numpy_state_to_tensors
from kfcpo.seeding import rank_seed
from kfcpo.update import UpdateConfig, critic_update, policy_update

# env.engine: where the rollout runs the policy (kfcpo.config.validate.ENGINE_MODES).
COLLECTORS: dict[str, type[RolloutCollector]] = {"step": RolloutCollector, "worker": WorkerRolloutCollector}


@contextmanager
def _seeded_init(seed: int) -> Iterator[None]:
    """Initial weights from `seed` alone: not from whatever the process drew before (two
    runs in one process start alike) nor from its thread count (orthogonal init's QR in
    MKL rounds differently with 1 and 2 threads); the global RNG is left untouched."""
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def gather_to_all(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (`[obj]` on one process)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


class SafeRLModule(pl.LightningModule):
    """A safe-RL agent as a LightningModule: the policy (`actor`), the reward and cost
    critics, the observation normalizer and the `algorithm` (preconditioner x blender x
    guard) that updates the policy, all built from one validated config.

    Each Lightning epoch collects one rollout (the dataloader) and runs one
    `training_step`: the policy update, then the critics' regression. Checkpoints add to
    Lightning's what exact resume needs (on_save_checkpoint).

    Args:
        cfg: a validated config (kfcpo.config.load_config).
        registry: the registry the config was validated with (default: read again from
            the config's `registry_paths`).
    """

    def __init__(self, cfg: DictConfig, registry: Registry | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.save_hyperparameters({"config": OmegaConf.to_container(cfg)})
        obs_dim, act_dim = space_dims(cfg.env.id)
        hidden, act = list(cfg.model.hidden), cfg.model.activation
        with _seeded_init(int(cfg.seed)):
            self.actor = GaussianActor(obs_dim, act_dim, hidden, act, cfg.model.init_log_std)
            self.critics = Critics(obs_dim, hidden, act)
            self.algorithm = Algorithm.from_config(cfg, self.actor, registry)
        self.normalizer = ObsNormalizer((obs_dim,), enabled=cfg.env.normalize_obs, clip=cfg.env.obs_clip)
        self.update_cfg = UpdateConfig.from_config(cfg)
        self.env_steps = 0
        self.updates = 0  # policy version: how many updates the policy has had
        # NaN until an episode finishes: logged as a gap, not as a fake 0 return and cost.
        self.episode_means = {"ep_ret": math.nan, "ep_cost": math.nan, "ep_len": math.nan}
        self.cost_window = EpisodeCostWindow(int(cfg.cost_window))
        self.collector: RolloutCollector | None = None
        self.shuffle = torch.Generator().manual_seed(int(cfg.seed))

    # ----------------------------------------------------------------- data
    def setup(self, stage: str) -> None:
        """Seed this rank and build its envs and rollout collector (once; the process
        group exists by now)."""
        if self.collector is not None:
            return
        cfg, rank, world = self.cfg, self.global_rank, self.trainer.world_size
        check_rank_split(cfg, world)  # also checked before the run starts (kfcpo.train.fit)
        per_rank = cfg.steps_per_epoch // world
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        seed = rank_seed(int(cfg.seed), rank)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        steps_per_env = per_rank // cfg.env.num_envs
        worker = cfg.env.engine == "worker"  # its pool shares an epoch's arrays with the workers
        envs = make_vector_env(cfg.env.id, cfg.env.num_envs, seed=seed, vector=cfg.env.vector,
                               workers=cfg.env.workers, epoch_steps=steps_per_env if worker else None)
        gae_cfg = GAEConfig.from_config(cfg)
        self.collector = COLLECTORS[cfg.env.engine](
            envs, self.actor, self.critics, self.normalizer, steps_per_env, gae_cfg, seed,
        )

    def teardown(self, stage: str) -> None:
        """Close the envs."""
        if self.collector is not None:
            self.collector.close()
            self.collector = None

    def _collect(self) -> Rollout:
        assert self.collector is not None, "setup() builds the collector before any epoch"
        return self.collector.collect(self.updates)

    def train_dataloader(self) -> DataLoader:
        """One rollout per epoch, collected in this process with the live policy."""
        # batch_size=None: the rollout is already one batch; no collation, no workers
        # (the collector steps the envs with the live policy in this process).
        return DataLoader(RolloutDataset(self._collect), batch_size=None, num_workers=0)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam for the critics (the policy's steps are the algorithm's)."""
        params = list(self.critics.parameters())
        return adam(params, lr=self.cfg.model.critic_lr)

    # --------------------------------------------------------------- update
    def _episode_stats(self, rollout: Rollout) -> dict[str, float]:
        s = rollout.stats
        sums = all_sum(torch.tensor([s.ep_ret_sum, s.ep_cost_sum, s.ep_len_sum, s.episodes, s.env_steps],
                                    dtype=torch.float64))
        ep_ret, ep_cost, ep_len, episodes, env_steps = sums.tolist()
        if episodes:  # otherwise keep the previous estimate (no episode finished)
            for key, total in (("ep_ret", ep_ret), ("ep_cost", ep_cost), ("ep_len", ep_len)):
                self.episode_means[key] = total / episodes
        self.env_steps += int(env_steps)
        for costs in gather_to_all(s.ep_costs):  # rank order: the same window on every rank
            self.cost_window.extend(costs)
        means = self.episode_means  # checkpointed under these keys; logged under the schema's
        return {
            schema.EPISODE_RETURN: means["ep_ret"],
            schema.EPISODE_COST: means["ep_cost"],
            schema.EPISODE_LENGTH: means["ep_len"],
            schema.EPISODE_COUNT: float(episodes),
            schema.EPISODE_JC: self.cost_window.mean(),
        }

    def training_step(self, rollout: Rollout, batch_idx: int) -> None:
        """One epoch's update from its rollout: the policy update (kfcpo.update), the
        critics' regression, then the epoch's metrics logged as one row."""
        stats = self._episode_stats(rollout)
        batch = rollout.batch
        # NaN until an episode has finished: policy_update then steps as if Jc = 0.
        ep_cost = stats[schema.EPISODE_JC]
        # The budget done before this epoch: the first update sees 0.
        done = self.updates * self.cfg.steps_per_epoch / self.cfg.total_steps
        self.algorithm.precond.set_progress(done)
        metrics = policy_update(self.actor, batch, self.algorithm, ep_cost, self.update_cfg, self.shuffle)
        self.updates += 1
        optimizer = self.optimizers()
        targets = torch.stack([batch.ret_r, batch.ret_c])
        start = time.perf_counter()
        metrics[schema.CRITIC_LOSS] = critic_update(
            self.critics, targets, batch.obs, optimizer.optimizer, self.update_cfg, self.shuffle
        )
        metrics[schema.TIME_CRITIC_S] = time.perf_counter() - start
        self._count_update_as_lightning_step(optimizer)
        if self.cfg.check_sync:
            assert_same_on_ranks(dict(self.named_parameters()))
        # The whole epoch's work: rollout, policy update and critic regression.
        epoch_s = rollout.stats.rollout_s + metrics[schema.TIME_UPDATE_S] + metrics[schema.TIME_CRITIC_S]
        metrics.update(stats)
        metrics.update({
            schema.TIME_ENV_STEPS: float(self.env_steps),
            schema.TIME_ROLLOUT_S: rollout.stats.rollout_s,
            schema.TIME_STEPS_PER_S: rollout.stats.env_steps * self.trainer.world_size / epoch_s,
            schema.POLICY_LOG_STD: float(self.actor.log_std.detach().mean()),
        })
        shown = set(schema.PROGRESS_BAR_KEYS)
        self.log_dict({k: v for k, v in metrics.items() if k in shown}, prog_bar=True, on_step=True,
                      on_epoch=False, batch_size=1, rank_zero_only=True)
        self.log_dict({k: v for k, v in metrics.items() if k not in shown}, on_step=True,
                      on_epoch=False, batch_size=1, rank_zero_only=True)

    @staticmethod
    def _count_update_as_lightning_step(optimizer: LightningOptimizer) -> None:
        """One epoch's update is one Lightning step (global_step == updates).

        Lightning counts `global_step` in steps of its LightningOptimizer wrapper. The
        critics' ~1,600 minibatch steps per epoch go to the raw optimizer (the wrapper's
        hooks per step cost time and would make `step` count minibatches), so without
        this global_step stayed 0 and ModelCheckpoint, which skips saving while
        global_step is unchanged since its last save, wrote nothing until training ended.
        The wrapper's step after the regression has no gradients to apply (they were set
        to None): torch's Adam then leaves parameters and state untouched, and Lightning
        counts the step through its public API."""
        optimizer.zero_grad(set_to_none=True)
        optimizer.step()

    # ---------------------------------------------------------- checkpoints
    # Exact resume: a resumed run must draw every random number and see every env
    # transition that the uninterrupted run would have. Lightning restores the networks,
    # the critics' optimizer and its loop counters; this adds the rest. Order on resume
    # (Trainer._run): setup() (builds and seeds the collector) -> on_load_checkpoint
    # (overwrites those seeds and the fresh envs) -> training; Lightning itself neither
    # seeds nor restores RNGs there, and nothing draws from them in between.
    def _rank_state(self) -> dict[str, Any]:
        """What differs between ranks: the RNGs (seeded per rank) and the collector."""
        assert self.collector is not None, "checkpoints are written after setup()"
        return {
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": numpy_state_to_tensors(np.random.get_state()),
                "python": random.getstate(),
            },
            "collector": self.collector.state_dict(),
        }

    def _load_rank_state(self, state: dict[str, Any]) -> None:
        assert self.collector is not None, "Lightning calls setup() before on_load_checkpoint"
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(numpy_state_from_tensors(state["rng"]["numpy"]))
        random.setstate(state["rng"]["python"])
        try:
            self.collector.load_state_dict(state["collector"])
        except EnvStateError as err:  # e.g. env.num_envs changed: resumable, not exactly
            rank_zero_warn(f"{err}: the envs start fresh episodes, so the resume is not exact")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add what exact resume needs beyond Lightning's state, under CHECKPOINT_KEY."""
        checkpoint[CHECKPOINT_KEY] = {
            "format": CHECKPOINT_FORMAT,
            **self.algorithm.state_dict(),  # "precond", "blender"
            "normalizer": self.normalizer.state_dict(),
            "env_steps": self.env_steps,
            "updates": self.updates,
            "episode_means": dict(self.episode_means),
            "cost_window": self.cost_window.state_dict(),
            "shuffle": self.shuffle.get_state(),
            # Lightning calls this hook on every rank and writes rank 0's dict: gather.
            "ranks": gather_to_all(self._rank_state()),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore what `on_save_checkpoint` added; warns when the resume cannot be exact
        (an older checkpoint, another number of ranks)."""
        state = checkpoint[CHECKPOINT_KEY]
        self.algorithm.load_state_dict(state)
        self.normalizer.load_state_dict(state["normalizer"])
        self.env_steps, self.updates = state["env_steps"], state["updates"]
        self.episode_means = dict(state["episode_means"])
        if "cost_window" in state:  # older checkpoints: the window refills from the next epochs
            self.cost_window.load_state_dict(state["cost_window"])
        self.shuffle.set_state(state["shuffle"])
        ranks = state.get("ranks")
        if ranks is not None and len(ranks) == self.trainer.world_size:
            self._load_rank_state(ranks[self.global_rank])
            return
        why = (
            "the checkpoint has no env or per-rank RNG states (an older kfcpo wrote it)"
            if ranks is None
            else f"the checkpoint holds {len(ranks)} ranks' states, this run has {self.trainer.world_size}"
        )
        rank_zero_warn(f"{why}: the envs start fresh episodes from their seeds, so the resume is not exact")
