"""Build the Trainer, its loggers and callbacks, and run `fit` for a validated config."""

from __future__ import annotations

import math
import netrc
import os
import warnings
from datetime import datetime
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from kfcpo.checkpoint import check_compatible, read_checkpoint
from kfcpo.module import SafeRLModule
from kfcpo.progress import EnvStepProgressBar

TRAINER_DEFAULTS = {"accelerator": "cpu", "devices": 1}


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


def build_loggers(cfg: DictConfig, out_dir: Path) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(save_dir=str(out_dir), name="", version="")]
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


def build_trainer(cfg: DictConfig, out_dir: Path) -> pl.Trainer:
    ckpt_dir = out_dir / "checkpoints"
    callbacks = [
        ModelCheckpoint(
            dirpath=ckpt_dir, filename="epoch{epoch:04d}", auto_insert_metric_name=False,
            every_n_epochs=cfg.checkpoint.every_n_epochs, save_top_k=-1,
        ),
        ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True, every_n_epochs=1),
        EnvStepProgressBar(cfg.total_steps),
    ]
    kwargs = {**TRAINER_DEFAULTS, **OmegaConf.to_container(cfg.trainer)}
    return pl.Trainer(
        max_epochs=math.ceil(cfg.total_steps / cfg.steps_per_epoch),
        logger=build_loggers(cfg, out_dir),
        callbacks=callbacks,
        default_root_dir=str(out_dir),
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        enable_model_summary=False,
        **kwargs,
    )


def fit(cfg: DictConfig) -> Path:
    """Train; returns the run folder (config.yaml, metrics.csv, checkpoints/)."""
    if cfg.resume:
        check_compatible(read_checkpoint(cfg.resume), cfg)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else default_out_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / "config.yaml")
    module = SafeRLModule(cfg)
    trainer = build_trainer(cfg, out_dir)
    with warnings.catch_warnings():
        # One batch per epoch from an in-process IterableDataset is the design, not a
        # bottleneck: silence Lightning's generic hints about workers and batch counts.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        trainer.fit(module, ckpt_path=cfg.resume)
    return out_dir
