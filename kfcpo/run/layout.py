"""The layout of a run folder: the names of its files and the path arithmetic between a
run folder, its `checkpoints/` and a checkpoint file.

    <run>/config.yaml                 the resolved config (kfcpo.run.folder writes it)
    <run>/metrics.csv                 one row per epoch (kfcpo.run.csv_logger continues it)
    <run>/checkpoints/last.ckpt       after every epoch (kfcpo.run.checkpoint_io)
    <run>/checkpoints/epochNNNN.ckpt  every `checkpoint.every_n_epochs`

Standard library only, so it costs nothing to import.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_SUFFIX = ".ckpt"
LAST_NAME = "last"  # checkpoints/last.ckpt, replaced after every epoch
LAST_CHECKPOINT = f"{LAST_NAME}{CHECKPOINT_SUFFIX}"
EPOCH_NAME = "epoch{epoch:04d}"  # checkpoints/epochNNNN.ckpt (a ModelCheckpoint filename)
EPOCH_FILE = re.compile(r"epoch(\d+)" + re.escape(CHECKPOINT_SUFFIX))  # matches EPOCH_NAME's files
RUN_FILES = (METRICS_FILE, CHECKPOINTS_DIR)  # what makes a folder hold a run
DEFAULT_RUNS_DIR = "runs"  # where a run without `out_dir` goes, relative to the working folder
STAMP_FORMAT = "%Y%m%d-%H%M%S"


def default_out_dir(cfg: DictConfig) -> Path:
    """runs/<time>-<algorithm>-<env>-s<seed>: the folder of a run that names none."""
    stamp = datetime.now().strftime(STAMP_FORMAT)
    return Path(DEFAULT_RUNS_DIR) / f"{stamp}-{cfg.algorithm}-{cfg.env.id}-s{cfg.seed}"


def last_checkpoint(run_dir: Path) -> Path:
    """<run>/checkpoints/last.ckpt (whether or not it exists)."""
    return run_dir / CHECKPOINTS_DIR / LAST_CHECKPOINT


def held_run(folder: Path) -> list[str]:
    """The files and folders of a run that `folder` holds (empty: it holds none)."""
    return [name for name in RUN_FILES if os.path.lexists(folder / name)]


def resume_run_dir(path: str | Path) -> Path:
    """The run folder a `resume=` path continues in: the folder itself, or the one holding
    its `checkpoints/` (for a checkpoint file or the `checkpoints/` folder).

    Path arithmetic only: nothing is read, so it names the folder a resumed run writes
    to even before that folder holds a config.yaml."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    return folder.parent if folder.name == CHECKPOINTS_DIR else folder


def checkpoint_run_dir(checkpoint: Path) -> Path:
    """The run folder a checkpoint file was trained in, to log beside it (its config.yaml,
    its wandb/): <run> for <run>/<any folder>/<file> when <run> holds a config.yaml,
    else the checkpoint's own folder (a checkpoint copied somewhere on its own)."""
    run = checkpoint.resolve().parent.parent
    return run if (run / CONFIG_FILE).is_file() else checkpoint.resolve().parent
