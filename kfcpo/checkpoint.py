"""Reading checkpoints safely: a missing, truncated or foreign file is a one-line error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from kfcpo.config.errors import ConfigError

CHECKPOINT_KEY = "kfcpo"
CHECKPOINT_FORMAT = 1  # bump when the checkpoint layout changes incompatibly

# Keys whose change makes a checkpoint's tensors or component states meaningless.
STRUCTURAL_KEYS = (
    "env.id",
    "model.hidden",
    "model.activation",
    "preconditioner.name",
    "blender.name",
    "guard.name",
)


def read_checkpoint(path: str | Path, key: str = "resume") -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{key}: no such checkpoint file '{path}'")
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


def check_compatible(ckpt: dict[str, Any], cfg: DictConfig, key: str = "resume") -> None:
    saved = OmegaConf.create(ckpt["hyper_parameters"]["config"])
    for k in STRUCTURAL_KEYS:
        mine, theirs = OmegaConf.select(cfg, k), OmegaConf.select(saved, k)
        if mine != theirs:
            raise ConfigError(
                f"{key}: checkpoint was trained with {k}={theirs}, this config has {k}={mine}"
            )
