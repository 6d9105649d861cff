"""The experiment config: every key, its type and its default, in one place.

Component sections (`preconditioner`, `blender`, `guard`) are typed as mappings here:
their keys are `name` plus the parameters that the named registry entry declares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf


@dataclass
class EnvConfig:
    """`env.*`: the Safety Gymnasium task and how its vector of envs runs."""

    id: str = "SafetyPointGoal1-v0"
    num_envs: int = 1
    vector: str = "sync"  # sync (this process) | async (worker processes)
    # async only: worker processes stepping the envs, each a contiguous block of them
    # (0 = one per usable core; never more than num_envs). Results do not depend on it.
    workers: int = 0
    # Where the policy runs during a rollout: step (this process, one round trip to the
    # envs per vector step) | worker (in the env workers, a whole epoch per message;
    # observations normalized with the statistics of the previous epoch's end; the first
    # epoch, a warm-up, is the step engine's; docs/algorithm.md 4.5.1). With vector=sync,
    # worker runs its loop in this process.
    engine: str = "step"
    normalize_obs: bool = True
    obs_clip: float = 5.0  # normalized observations clipped to +-5 (OmniSafe's obs normalizer)


@dataclass
class ModelConfig:
    """`model.*`: the networks and the critics' regression."""

    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    init_log_std: float = 0.0  # sigma 1 at the start (OmniSafe's Gaussian actor)
    critic_lr: float = 1e-3
    critic_iters: int = 10  # passes over the epoch's data for V_r and V_c
    critic_minibatch_size: int = 128
    # OmniSafe's critic_norm_coef and max_grad_norm: an L2 term on the critics' weights and
    # a clip of their gradient norm (0 turns either off).
    critic_l2: float = 1e-3
    critic_max_grad_norm: float = 40.0


@dataclass
class WandbConfig:
    """`logger.wandb.*`: a key wins over wandb's own environment variables only where set
    (README, wandb)."""

    mode: str = "auto"  # auto | online | offline | disabled
    project: str = "kfcpo"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    """`logger.*`: the loggers besides metrics.csv (which is always written)."""

    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class CheckpointConfig:
    """`checkpoint.*`: `last.ckpt` is written every epoch, `epochNNNN.ckpt` every
    `every_n_epochs`."""

    every_n_epochs: int = 10


@dataclass
class Config:
    """The whole experiment config (README, "Using it"); kfcpo.config composes and
    validates it."""

    algorithm: str = "ppo_lag"
    env: EnvConfig = field(default_factory=EnvConfig)
    seed: int = 0
    # torch intra-op threads per process; 0 keeps torch's default. Rollout forwards are
    # tiny (num_envs rows), where extra threads only add synchronization (measured 6x
    # slower with 2 threads on a loaded 2-core machine).
    threads: int = 1
    # After every update, verify that all ranks hold identical parameters and stop with
    # an error naming the first differing tensor if not (costs one all-reduce).
    check_sync: bool = False
    total_steps: int = 1_000_000
    steps_per_epoch: int = 20_000
    cost_limit: float = 25.0
    gamma: float = 0.99
    cost_gamma: float = 0.99
    gae_lambda: float = 0.95
    standardize_adv: bool = True
    # Cost advantages: "center" (subtract the mean; OmniSafe's buffer), "standardize" (also
    # divide by the std, as the reward's) or "none". Centring keeps the cost signal's own
    # scale, which the constrained blenders weigh against the reward (docs/algorithm.md).
    cost_adv: str = "center"
    # Jc, the episode-cost estimate every blender reads: the mean cost of the last
    # `cost_window` finished episodes over all ranks (OmniSafe's logger window_lens: 100).
    cost_window: int = 100
    update_iters: int = 10
    minibatch_size: int = 128
    model: ModelConfig = field(default_factory=ModelConfig)
    preconditioner: dict[str, Any] = field(default_factory=dict)
    blender: dict[str, Any] = field(default_factory=dict)
    guard: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    out_dir: str | None = None
    resume: str | None = None
    registry_paths: list[str] = field(default_factory=list)


def dotted_items(cfg: DictConfig) -> dict[str, Any]:
    """Every value of a config under its dotted key (`model.critic_lr`), resolved; lists
    are values, not sections."""
    def walk(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        items: dict[str, Any] = {}
        for key, value in tree.items():
            if isinstance(value, Mapping):
                items.update(walk(value, f"{prefix}{key}."))
            else:
                items[f"{prefix}{key}"] = value
        return items

    return walk(OmegaConf.to_container(cfg, resolve=True), "")  # type: ignore[arg-type]
