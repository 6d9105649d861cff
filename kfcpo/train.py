"""Build the Trainer, its loggers and callbacks, and run `fit` for a validated config."""

from __future__ import annotations

import csv
import math
import netrc
import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf

from kfcpo.checkpoint import CHECKPOINTS_DIR, check_compatible, find_checkpoint, run_dir_of
from kfcpo.ckpt_io import AtomicCheckpointIO
from kfcpo.config import ConfigError
from kfcpo.module import SafeRLModule
from kfcpo.progress import EnvStepProgressBar

TRAINER_DEFAULTS = {"accelerator": "cpu", "devices": 1}
LAST_NAME = "last"  # checkpoints/last.ckpt
METRICS_FILE = "metrics.csv"


def default_out_dir(cfg: DictConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{cfg.algorithm}-{cfg.env.id}-s{cfg.seed}"


def wandb_mode(mode: str) -> str | None:
    """`auto` is online with an API key (env or ~/.netrc) and offline otherwise, so a
    machine without network never waits on wandb's login."""
    if mode == "disabled":
        return None
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        return "online" if netrc.netrc().authenticators("api.wandb.ai") else "offline"
    except (FileNotFoundError, netrc.NetrcParseError):
        return "offline"


class ContinuedCSVLogger(CSVLogger):
    """A CSVLogger that continues a run's metrics.csv instead of deleting it.

    Lightning's CSV writer removes an existing metrics.csv when it starts. Resuming in
    the same folder, the rows of the epochs the checkpoint covers are written back first;
    rows of later epochs (logged before a crash, after the checkpoint) are dropped, since
    the resumed run logs those epochs again.
    """

    def __init__(self, save_dir: str, keep_through_epoch: int) -> None:
        super().__init__(save_dir=save_dir, name="", version="")
        self._header, self._rows = _read_rows(Path(save_dir) / METRICS_FILE, keep_through_epoch)

    @property
    @rank_zero_experiment  # other ranks get Lightning's dummy and write nothing
    def experiment(self) -> Any:
        if self._experiment is None:
            writer = super().experiment  # deletes metrics.csv: write the kept rows back
            if self._header:
                with open(writer.metrics_file_path, "w", newline="") as f:
                    out = csv.DictWriter(f, fieldnames=self._header)
                    out.writeheader()
                    out.writerows(self._rows)
                writer.metrics_keys = list(self._header)
        return self._experiment


def _read_rows(path: Path, keep_through_epoch: int) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r.get("epoch", "") != "" and int(r["epoch"]) <= keep_through_epoch]
        return list(reader.fieldnames or []), rows


def build_loggers(cfg: DictConfig, out_dir: Path, resumed_epoch: int | None = None) -> list[Logger]:
    """`resumed_epoch`: the last epoch the resumed checkpoint covers (None: a new run)."""
    csv_logger = (
        CSVLogger(save_dir=str(out_dir), name="", version="")
        if resumed_epoch is None
        else ContinuedCSVLogger(str(out_dir), resumed_epoch)
    )
    loggers: list[Logger] = [csv_logger]
    mode = wandb_mode(cfg.logger.wandb.mode)
    if mode is not None:
        w = cfg.logger.wandb
        loggers.append(
            WandbLogger(
                project=w.project, entity=w.entity, group=w.group, tags=list(w.tags),
                save_dir=str(out_dir), mode=mode, config=OmegaConf.to_container(cfg),
            )
        )
    return loggers


class LastCheckpoint(ModelCheckpoint):
    """`last.ckpt` after every epoch, replaced in place: what a crashed run resumes from.

    ModelCheckpoint's own `save_last` only follows its top-k saves (with save_top_k=0 it
    wrote once, when training ended). As a subclass it also has its own state key, so it
    can sit beside the every-N-epochs ModelCheckpoint even when N is 1.
    """

    def __init__(self, dirpath: Path) -> None:
        super().__init__(
            dirpath=dirpath, filename=LAST_NAME, save_top_k=1, every_n_epochs=1, enable_version_counter=False
        )


def build_trainer(cfg: DictConfig, out_dir: Path, resumed_epoch: int | None = None) -> pl.Trainer:
    ckpt_dir = out_dir / CHECKPOINTS_DIR
    callbacks = [
        ModelCheckpoint(
            dirpath=ckpt_dir, filename="epoch{epoch:04d}", auto_insert_metric_name=False,
            every_n_epochs=cfg.checkpoint.every_n_epochs, save_top_k=-1,
        ),
        LastCheckpoint(ckpt_dir),
        EnvStepProgressBar(cfg.total_steps),
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


def refuse_finished_run(out_dir: Path) -> None:
    """A new run never writes over another run's metrics and checkpoints."""
    held = [name for name in (METRICS_FILE, CHECKPOINTS_DIR) if (out_dir / name).exists()]
    if held:
        raise ConfigError(
            f"out_dir: '{out_dir}' already holds a run ({', '.join(held)}); continue it with "
            f"resume={out_dir}, or give a new out_dir"
        )


def fit(cfg: DictConfig) -> Path:
    """Train; returns the run folder (config.yaml, metrics.csv, checkpoints/).

    `resume` is a checkpoint file, or a run folder: then its newest readable checkpoint,
    and the run continues in that folder unless `out_dir` says otherwise.
    """
    ckpt_path, resumed_epoch = None, None
    if cfg.resume:
        ckpt_path, ckpt = find_checkpoint(cfg.resume)
        check_compatible(ckpt, cfg)
        resumed_epoch = int(ckpt["epoch"])
    if cfg.out_dir:
        out_dir = Path(cfg.out_dir)
    elif cfg.resume and Path(cfg.resume).is_dir():
        out_dir = run_dir_of(cfg.resume)
    else:
        out_dir = default_out_dir(cfg)
    if not cfg.resume:
        refuse_finished_run(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / "config.yaml")
    module = SafeRLModule(cfg)
    trainer = build_trainer(cfg, out_dir, resumed_epoch)
    with warnings.catch_warnings():
        # One batch per epoch from an in-process IterableDataset is the design, not a
        # bottleneck: silence Lightning's generic hints about workers and batch counts.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        trainer.fit(module, ckpt_path=ckpt_path)
    return out_dir
