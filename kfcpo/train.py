"""Build the Trainer, its loggers and callbacks, and run `fit` for a validated config."""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf

from kfcpo.checkpoint import CHECKPOINTS_DIR, check_compatible, find_checkpoint, run_dir_of
from kfcpo.ckpt_io import AtomicCheckpointIO
from kfcpo.config import ConfigError
from kfcpo.config.validate import check_folder_path
from kfcpo.module import SafeRLModule
from kfcpo.progress import EnvStepProgressBar
from kfcpo.version import run_info
from kfcpo.wandb_run import build_wandb_logger, resolve_mode

TRAINER_DEFAULTS = {"accelerator": "cpu", "devices": 1}
LAST_NAME = "last"  # checkpoints/last.ckpt
METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.yaml"
RUN_FILES = (METRICS_FILE, CHECKPOINTS_DIR)  # what makes a folder hold a run
OUT_DIR_VALID = "a folder path (new, empty, or the run to continue with resume=)"
# Lightning (2.6 here) logs this advertisement for every Trainer without a LitLogger.
LITLOGGER_TIP = "💡 Tip: For seamless cloud logging"
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def default_out_dir(cfg: DictConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{cfg.algorithm}-{cfg.env.id}-s{cfg.seed}"


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
    wandb_logger = build_wandb_logger(cfg, out_dir)  # None: off by the config or WANDB_MODE
    if wandb_logger is not None:
        loggers.append(wandb_logger)
    return loggers


class RecordVersion(Callback):
    """Every checkpoint names the kfcpo that wrote it (`kfcpo_version`, a top-level key
    beside Lightning's own), so an exported or evaluated policy can say what trained it."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint["kfcpo_version"] = run_info()["kfcpo_version"]


def write_run_config(cfg: DictConfig, path: Path) -> None:
    """config.yaml: the resolved config, then which kfcpo made the run (RUN_INFO_KEYS;
    `kfcpo fit --config` drops those, so the file can be given back as a config)."""
    info = yaml.safe_dump(run_info(), sort_keys=False)
    path.write_text(f"{OmegaConf.to_yaml(cfg)}# the kfcpo that made this run (not config keys)\n{info}")


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
    quiet_lightning_tips()
    ckpt_dir = out_dir / CHECKPOINTS_DIR
    callbacks = [
        ModelCheckpoint(
            dirpath=ckpt_dir, filename="epoch{epoch:04d}", auto_insert_metric_name=False,
            every_n_epochs=cfg.checkpoint.every_n_epochs, save_top_k=-1,
        ),
        LastCheckpoint(ckpt_dir),
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


def held_run(folder: Path) -> list[str]:
    """The files and folders of a run that `folder` holds (empty: it holds none)."""
    return [name for name in RUN_FILES if os.path.lexists(folder / name)]


def refuse_finished_run(out_dir: Path) -> None:
    """A new run never writes over another run's metrics and checkpoints."""
    held = held_run(out_dir)
    if held:
        raise ConfigError(
            f"out_dir: '{out_dir}' already holds a run ({', '.join(held)}); continue it with "
            f"resume={out_dir}, or give a new out_dir"
        )


def check_out_dir(out_dir: Path, resume_run: Path | None) -> None:
    """Refuse, before anything is created, an out_dir that is a file, cannot be written,
    lies inside another run's folder, or (resuming `resume_run`) holds a different run."""
    check_folder_path(out_dir, "out_dir", OUT_DIR_VALID)
    for name in (CONFIG_FILE, METRICS_FILE, CHECKPOINTS_DIR):  # what a run (re)writes in it
        inside = out_dir / name
        mode = os.W_OK | (os.X_OK if os.path.isdir(inside) else 0)
        if os.path.lexists(inside) and not os.access(inside, mode):
            raise ConfigError(f"out_dir: no permission to write '{inside}'; give a path you can write to")
    for parent in out_dir.resolve().parents:
        if os.path.isfile(parent / CONFIG_FILE) and held_run(parent):
            raise ConfigError(
                f"out_dir: '{out_dir}' is inside the run folder '{parent}'; give a folder outside other runs"
            )
    if resume_run is None:
        refuse_finished_run(out_dir)
    elif held_run(out_dir) and out_dir.resolve() != resume_run.resolve():
        raise ConfigError(
            f"out_dir: '{out_dir}' already holds another run ({', '.join(held_run(out_dir))}); a resumed "
            f"run continues in its own folder '{resume_run}' or in a new out_dir"
        )


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None: all exist)."""
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    return missing[-1] if missing else None


def fit(cfg: DictConfig) -> Path:
    """Train; returns the run folder (config.yaml, metrics.csv, checkpoints/).

    `resume` is a checkpoint file, or a run folder: then its newest readable checkpoint,
    and the run continues in that folder unless `out_dir` says otherwise. Every path is
    checked before anything is created or any env starts; a run folder this call created
    is removed again if the run fails before training starts.
    """
    ckpt_path, resumed_epoch, resume_run = None, None, None
    resolve_mode(cfg)  # a WANDB_MODE wandb would refuse: a one-line error before anything starts
    if cfg.resume:
        ckpt_path, ckpt = find_checkpoint(cfg.resume)
        check_compatible(ckpt, cfg)
        resumed_epoch = int(ckpt["epoch"])
        resume_run = run_dir_of(ckpt_path)
    if cfg.out_dir:
        out_dir = Path(cfg.out_dir)
    elif cfg.resume and os.path.isdir(cfg.resume):
        out_dir = run_dir_of(cfg.resume)
    else:
        out_dir = default_out_dir(cfg)
    check_out_dir(out_dir, resume_run)
    created = _first_missing(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        write_run_config(cfg, out_dir / CONFIG_FILE)
        module = SafeRLModule(cfg)
        trainer = build_trainer(cfg, out_dir, resumed_epoch)
    except BaseException:
        if created is not None:  # nothing of a run in it yet: leave no half-made folder
            shutil.rmtree(created, ignore_errors=True)
        raise
    with quiet_lightning(out_dir):
        trainer.fit(module, ckpt_path=ckpt_path)
    return out_dir
