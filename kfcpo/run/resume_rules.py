"""What a resumed run may change: where it runs and how long, not what it learns.

A resumed run continues the checkpoint's experiment, so every key that shapes the
learning (seed, cost limit, discount, learning rates, epoch size, component parameters,
...) must equal the checkpoint's. Only the keys in RESUME_FREE_KEYS may differ: the
budget (`total_steps`, at least the steps already done), the hardware and the
layout of the env vector (the same trajectories for any process layout, docs/algorithm.md
4.5.1; another number of envs or ranks starts fresh episodes and is warned about on load),
and the bookkeeping. Otherwise the run folder's config.yaml would describe a run that was
trained with other values.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from kfcpo.config.errors import ConfigError
from kfcpo.config.schema import dotted_items

# Prefixes of dotted keys a resumed run may change.
RESUME_FREE_KEYS = (
    "total_steps", "out_dir", "resume", "registry_paths", "threads", "check_sync",
    "trainer", "logger", "checkpoint", "env.vector", "env.workers", "env.num_envs",
)
SHOWN_KEYS = 3  # differences named in the error; the rest are counted


def _is_free(key: str) -> bool:
    return any(key == free or key.startswith(f"{free}.") for free in RESUME_FREE_KEYS)


def changed_keys(saved: DictConfig, cfg: DictConfig) -> list[tuple[str, Any, Any]]:
    """(key, the checkpoint's value, this config's) for every key that may not change and
    does. Keys the checkpoint does not record (added to kfcpo after it was written) are
    not compared: their values are this kfcpo's defaults."""
    mine, theirs = dotted_items(cfg), dotted_items(saved)
    return [(k, theirs[k], mine.get(k)) for k in theirs
            if not _is_free(k) and k in mine and mine[k] != theirs[k]]


def check_same_run(saved: DictConfig, cfg: DictConfig, steps_done: int, key: str) -> None:
    """ConfigError (one line) if `cfg` changes a key that shapes the learning, or asks for
    fewer steps than the checkpoint has done."""
    changed = changed_keys(saved, cfg)
    if changed:
        shown = ", ".join(f"{k}={old!r} (this config: {new!r})" for k, old, new in changed[:SHOWN_KEYS])
        more = f" and {len(changed) - SHOWN_KEYS} more" if len(changed) > SHOWN_KEYS else ""
        raise ConfigError(
            f"{key}: the checkpoint was trained with {shown}{more}; a resumed run keeps what it "
            "learns with (it may change total_steps, the hardware, the env layout and the logging): "
            "resume with the run's values, e.g. --config <run>/config.yaml, or start a new run"
        )
    if cfg.total_steps < steps_done:
        raise ConfigError(
            f"total_steps: {cfg.total_steps} is below the {steps_done} steps the checkpoint has "
            f"done; give total_steps >= {steps_done} to continue it"
        )
