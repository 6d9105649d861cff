"""Build the Trainer, its loggers and callbacks, and run `fit` for a validated config.

The run folder, checkpoints and metrics.csv are kfcpo.run's; this module puts them
together with Lightning's Trainer, the progress bar and wandb.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from kfcpo.config.validate import check_rank_split
from kfcpo.module import SafeRLModule
from kfcpo.progress import EnvStepProgressBar
from kfcpo.registry import Registry
from kfcpo.run.checkpoint import resume_point
from kfcpo.run.checkpoint_io import AtomicCheckpointIO, RecordVersion, checkpoint_callbacks
from kfcpo.run.csv_logger import csv_logger
from kfcpo.run.folder import check_out_dir, made_run_folder, out_dir_for, write_run_config
from kfcpo.run.layout import CHECKPOINTS_DIR, CONFIG_FILE
from kfcpo.wandb_run import build_wandb_logger, resolve_mode

TRAINER_DEFAULTS = {"accelerator": "cpu", "devices": 1}
# Lightning (2.6 here) logs this advertisement for every Trainer without a LitLogger.
LITLOGGER_TIP = "💡 Tip: For seamless cloud logging"
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def build_loggers(cfg: DictConfig, out_dir: Path, resumed_epoch: int | None = None) -> list[Logger]:
    """The run's CSV logger and, unless off, wandb's. `resumed_epoch`: the last epoch the
    resumed checkpoint covers (None: a new run)."""
    loggers: list[Logger] = [csv_logger(out_dir, resumed_epoch)]
    wandb_logger = build_wandb_logger(cfg, out_dir)  # None: off by the config or WANDB_MODE
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    return loggers


class _DropPrefixes(logging.Filter):
    """Drops the log records whose message starts with one of `prefixes`."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_lightning_tips() -> None:
    """Drop Lightning's litlogger advertisement (an info record on its rank-zero logger,
    which Lightning prints itself); its other information stays. Idempotent."""
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
            logger.addFilter(_DropPrefixes(LITLOGGER_TIP))


@contextmanager
def quiet_lightning(out_dir: Path) -> Iterator[None]:
    """Silence, while training in `out_dir`, Lightning's warnings that are noise for kfcpo:
    each matched by its message (naming kfcpo's own folder) and the module raising it.

    - "Experiment logs directory <out_dir>/ exists and is not empty": a fresh run's folder
      holds its config.yaml, and the metrics.csv a resumed run continues is kept by
      ContinuedCSVLogger (a new run into a folder with metrics.csv is refused earlier).
    - "Checkpoint directory <out_dir>/checkpoints exists and is not empty": a resumed run's
      own checkpoints (a new run into a folder with checkpoints/ is refused earlier).
    - torch's FutureWarning on `LeafSpec`, raised inside Lightning's own `_pytree` helpers.
    """
    ckpt_dir = os.path.realpath(out_dir / CHECKPOINTS_DIR)  # ModelCheckpoint names it so
    with warnings.catch_warnings():
        # One batch per epoch from an in-process IterableDataset is the design, not a
        # bottleneck: silence Lightning's generic hints about workers and batch counts.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings(
            "ignore",
            message=f"Experiment logs directory {re.escape(str(out_dir))}/* exists and is not empty",
            module=r"lightning\.fabric\.loggers\.csv_logs",
        )
        warnings.filterwarnings(
            "ignore", message=f"Checkpoint directory {re.escape(ckpt_dir)} exists and is not empty",
            module=r"lightning\.pytorch\.callbacks\.model_checkpoint",
        )
        warnings.filterwarnings(
            "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning,
            module=r"lightning\.pytorch\.utilities\._pytree",
        )
        yield


def build_trainer(cfg: DictConfig, out_dir: Path, resumed_epoch: int | None = None) -> pl.Trainer:
    """The Trainer of a run in `out_dir`: its epochs, loggers, checkpoint writers and
    progress bar; `resumed_epoch` as for `build_loggers`."""
    quiet_lightning_tips()
    callbacks = [
        *checkpoint_callbacks(out_dir / CHECKPOINTS_DIR, cfg.checkpoint.every_n_epochs),
        EnvStepProgressBar(cfg.total_steps),
        RecordVersion(),
    ]
    kwargs = {**TRAINER_DEFAULTS, **OmegaConf.to_container(cfg.trainer)}
    return pl.Trainer(
        max_epochs=math.ceil(cfg.total_steps / cfg.steps_per_epoch),
        logger=build_loggers(cfg, out_dir, resumed_epoch),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(out_dir),
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        **kwargs,
    )


def fit(cfg: DictConfig, registry: Registry | None = None) -> Path:
    """Train; returns the run folder (config.yaml, metrics.csv, checkpoints/).

    `registry`: the one `cfg` was validated with (kfcpo.config.load_config returns it);
    default: read again from the config's `registry_paths`.

    `resume` is a checkpoint file, or a run folder: then its newest readable checkpoint,
    and the run continues in that folder unless `out_dir` says otherwise. Every path is
    checked before anything is created or any env starts; a run folder this call created
    is removed again if the run fails before training starts.
    """
    resolve_mode(cfg)  # a WANDB_MODE wandb would refuse: a one-line error before anything starts
    resume = resume_point(cfg)
    out_dir = out_dir_for(cfg)
    check_out_dir(out_dir, resume.run_dir if resume else None)
    with made_run_folder(out_dir):
        write_run_config(cfg, out_dir / CONFIG_FILE)
        module = SafeRLModule(cfg, registry)
        trainer = build_trainer(cfg, out_dir, resume.epoch if resume else None)
        check_rank_split(cfg, trainer.world_size)  # the world size is known from here on
    with quiet_lightning(out_dir):
        trainer.fit(module, ckpt_path=resume.checkpoint if resume else None)
    return out_dir
