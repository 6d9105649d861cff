"""Reading checkpoints safely: a missing, truncated or foreign file is a one-line error;
finding the checkpoint to resume a run folder from; bytes stored as tensors."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from kfcpo.config.errors import ConfigError

CHECKPOINT_KEY = "kfcpo"
CHECKPOINT_FORMAT = 2  # bump when the checkpoint layout changes incompatibly (2: stacked critics)
CHECKPOINTS_DIR = "checkpoints"  # inside a run folder
CHECKPOINT_SUFFIX = ".ckpt"

# Keys whose change makes a checkpoint's tensors or component states meaningless.
STRUCTURAL_KEYS = (
    "env.id",
    "model.hidden",
    "model.activation",
    "preconditioner.name",
    "blender.name",
    "guard.name",
)


LAST_CHECKPOINT = f"last{CHECKPOINT_SUFFIX}"
FILE_VALID = f"a checkpoint file, e.g. runs/<run>/{CHECKPOINTS_DIR}/{LAST_CHECKPOINT}"
RESUME_VALID = f"a checkpoint file or a run folder holding {CHECKPOINTS_DIR}/*{CHECKPOINT_SUFFIX}"


def read_checkpoint(path: str | Path, key: str = "resume") -> dict[str, Any]:
    p = Path(path)
    if os.path.isdir(p):
        last = p / CHECKPOINTS_DIR / LAST_CHECKPOINT
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


def check_compatible(ckpt: dict[str, Any], cfg: DictConfig, key: str = "resume") -> None:
    saved = OmegaConf.create(ckpt["hyper_parameters"]["config"])
    for k in STRUCTURAL_KEYS:
        mine, theirs = OmegaConf.select(cfg, k), OmegaConf.select(saved, k)
        if mine != theirs:
            raise ConfigError(
                f"{key}: checkpoint was trained with {k}={theirs}, this config has {k}={mine}; "
                f"resume it with {k}={theirs}, or start a new run"
            )


def find_checkpoint(path: str | Path, key: str = "resume") -> tuple[Path, dict[str, Any]]:
    """The checkpoint to resume from, and its contents.

    A file is read as is (unreadable: the one-line error). A run folder (or its
    `checkpoints/`) gives its newest checkpoint that reads, by modification time:
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
        newest_first = sorted(found, key=lambda f: (f.stat().st_mtime_ns, f.name), reverse=True)
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


def run_dir_of(path: str | Path) -> Path:
    """The run folder a resume path names: the folder itself, or the one holding its
    `checkpoints/` (for a checkpoint file or the `checkpoints/` folder)."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    return folder.parent if folder.name == CHECKPOINTS_DIR else folder


def blob_to_tensor(blob: bytes) -> torch.Tensor:
    """Opaque bytes as a uint8 tensor: torch's weights_only loader (used by Lightning)
    refuses arbitrary pickled objects but reads tensors."""
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.empty(0, dtype=torch.uint8)


def blob_from_tensor(t: torch.Tensor) -> bytes:
    return t.numpy().tobytes()
