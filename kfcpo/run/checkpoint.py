"""The kfcpo checkpoint: its format, reading one safely, finding the one a run resumes
from, and whether a config may resume it.

A checkpoint is Lightning's dict (`state_dict`, `hyper_parameters`, loops, optimizers)
plus kfcpo's own state under CHECKPOINT_KEY (written by `SafeRLModule.on_save_checkpoint`)
and the top-level `kfcpo_version` (kfcpo.run.checkpoint_io.RecordVersion). A missing,
truncated or foreign file is a one-line ConfigError naming the option it came from.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from kfcpo.config.errors import ConfigError
from kfcpo.run.layout import (
    CHECKPOINT_SUFFIX,
    CHECKPOINTS_DIR,
    EPOCH_FILE,
    LAST_CHECKPOINT,
    last_checkpoint,
    resume_run_dir,
)
from kfcpo.run.resume_rules import check_same_run

CHECKPOINT_KEY = "kfcpo"
CHECKPOINT_FORMAT = 2  # bump when the checkpoint layout changes incompatibly (2: stacked critics)
VERSION_KEY = "kfcpo_version"  # top level, beside Lightning's keys: the kfcpo that wrote it
RESUME_KEY = "resume"  # the config key errors name by default

# Keys whose change makes a checkpoint's tensors or component states meaningless.
STRUCTURAL_KEYS = (
    "env.id",
    "model.hidden",
    "model.activation",
    "preconditioner.name",
    "blender.name",
    "guard.name",
    "blender.multiplier",  # the lagrangian blender's Adam and PID states differ
    "env.engine",  # the worker engine's collector state holds per-env noise generators
)
# What a structural key meant in checkpoints written before it existed.
LEGACY_VALUES = {"blender.multiplier": "adam", "env.engine": "step"}

FILE_VALID = f"a checkpoint file, e.g. runs/<run>/{CHECKPOINTS_DIR}/{LAST_CHECKPOINT}"
RESUME_VALID = f"a checkpoint file or a run folder holding {CHECKPOINTS_DIR}/*{CHECKPOINT_SUFFIX}"


def read_checkpoint(path: str | Path, key: str = RESUME_KEY) -> dict[str, Any]:
    """The contents of the kfcpo checkpoint file `path`; ConfigError (one line, naming
    `key`) for a folder, a missing or unreadable file, or another format."""
    p = Path(path)
    if os.path.isdir(p):
        last = last_checkpoint(p)
        hint = f", e.g. '{last}'" if os.path.isfile(last) else ""
        raise ConfigError(f"{key}: '{path}' is a folder; expected a checkpoint file{hint or ' (*.ckpt)'}")
    if not os.path.isfile(p):
        raise ConfigError(f"{key}: no such checkpoint file '{path}'; expected {FILE_VALID}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ConfigError(f"{key}: '{path}' is not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt or "hyper_parameters" not in ckpt:
        raise ConfigError(f"{key}: '{path}' is not a kfcpo checkpoint")
    state = ckpt[CHECKPOINT_KEY]
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"{key}: '{path}' has checkpoint format {fmt}; this kfcpo reads format {CHECKPOINT_FORMAT}"
        )
    return ckpt


def saved_config(ckpt: dict[str, Any]) -> DictConfig:
    """The resolved config the checkpoint's run trained with."""
    return OmegaConf.create(ckpt["hyper_parameters"]["config"])


def check_compatible(ckpt: dict[str, Any], cfg: DictConfig, key: str = RESUME_KEY) -> None:
    """ConfigError (one line) if `cfg` differs from the checkpoint's config in a key its
    tensors or component states depend on (STRUCTURAL_KEYS)."""
    saved = saved_config(ckpt)
    for k in STRUCTURAL_KEYS:
        mine, theirs = OmegaConf.select(cfg, k), OmegaConf.select(saved, k)
        if theirs is None and mine is not None:
            theirs = LEGACY_VALUES.get(k)
        if mine != theirs:
            raise ConfigError(
                f"{key}: checkpoint was trained with {k}={theirs}, this config has {k}={mine}; "
                f"resume it with {k}={theirs}, or start a new run"
            )


def _progress_order(f: Path) -> tuple[int, int, str]:
    """Sort key, newest training state last: last.ckpt (written after every epoch), then
    epochNNNN.ckpt by epoch, then any other file by modification time. Names first, since
    a copied run folder (cp -r, rsync without -t) gets fresh, arbitrary modification times."""
    if f.name == LAST_CHECKPOINT:
        return (2, 0, f.name)
    match = EPOCH_FILE.fullmatch(f.name)
    if match:
        return (1, int(match.group(1)), f.name)
    return (0, f.stat().st_mtime_ns, f.name)


def find_checkpoint(path: str | Path, key: str = RESUME_KEY) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to resume from, and its contents.

    A file is read as is (unreadable: the one-line error). A run folder (or its
    `checkpoints/`) gives its newest checkpoint that reads (``last.ckpt`` first, then
    the epoch checkpoints from the latest epoch down, then other files by modification
    time; ``_progress_order``):
    unreadable ones, e.g. truncated by a crash of an older writer, are skipped with a
    warning, so a run resumes from its last complete checkpoint.
    """
    p = Path(path)
    if not os.path.lexists(p):
        raise ConfigError(f"{key}: no such checkpoint file or run folder '{path}'; expected {RESUME_VALID}")
    if not os.path.isdir(p):
        return p, read_checkpoint(p, key)
    folder = p / CHECKPOINTS_DIR if os.path.isdir(p / CHECKPOINTS_DIR) else p
    try:
        found = [f for f in folder.glob(f"*{CHECKPOINT_SUFFIX}") if os.path.isfile(f)]
        newest_first = sorted(found, key=_progress_order, reverse=True)
    except OSError as err:
        raise ConfigError(f"{key}: cannot read the folder '{folder}' ({err.strerror})") from None
    if not newest_first:
        raise ConfigError(
            f"{key}: no checkpoint (*{CHECKPOINT_SUFFIX}) in '{folder}'; expected {RESUME_VALID}"
        )
    for candidate in newest_first:
        try:
            return candidate, read_checkpoint(candidate, key)
        except ConfigError as err:
            warnings.warn(f"{err}; trying an older checkpoint", stacklevel=2)
    raise ConfigError(f"{key}: none of the {len(newest_first)} checkpoints in '{folder}' is readable")


@dataclass(frozen=True)
class ResumePoint:
    """Where `resume=` continues a run: the checkpoint file, the last epoch it covers
    and the run folder it was written in."""

    checkpoint: Path
    epoch: int
    run_dir: Path


def resume_point(cfg: DictConfig) -> ResumePoint | None:
    """The checkpoint `cfg.resume` names, found and checked against `cfg` (None: no
    resume); ConfigError (one line) if there is none to resume or it does not fit."""
    if not cfg.resume:
        return None
    path, ckpt = find_checkpoint(cfg.resume)
    check_compatible(ckpt, cfg)
    check_same_run(saved_config(ckpt), cfg, int(ckpt[CHECKPOINT_KEY]["env_steps"]), RESUME_KEY)
    return ResumePoint(path, int(ckpt["epoch"]), resume_run_dir(path))
