"""Writing checkpoints during `kfcpo fit`: Lightning's checkpoint IO made atomic and the
callbacks that decide when, where and with what a checkpoint is written.

A process killed at any moment, `kill -9` during a write included, leaves every `*.ckpt`
complete or untouched (kfcpo.run.atomic); Lightning's own writer truncates the target
first. What goes into a checkpoint is the module's business (`SafeRLModule`'s
`on_save_checkpoint`); its format and reading are kfcpo.run.checkpoint's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from kfcpo.run.atomic import write_atomic
from kfcpo.run.checkpoint import VERSION_KEY
from kfcpo.run.layout import EPOCH_NAME, LAST_NAME
from kfcpo.version import run_info

KEEP_ALL = -1  # ModelCheckpoint's save_top_k: keep every periodic checkpoint


def save_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """`torch.save(obj, path)`, atomically."""
    write_atomic(path, lambda f: torch.save(obj, f))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic local writes (a Trainer `plugins=`)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write `checkpoint` to `path` atomically; refuses storage options (local files only)."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomic(checkpoint, path)


class RecordVersion(Callback):
    """Every checkpoint names the kfcpo that wrote it (`kfcpo_version`, a top-level key
    beside Lightning's own), so an exported or evaluated policy can say what trained it."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Add the version to the checkpoint being saved."""
        checkpoint[VERSION_KEY] = run_info()["kfcpo_version"]


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


def checkpoint_callbacks(ckpt_dir: Path, every_n_epochs: int) -> list[ModelCheckpoint]:
    """The two checkpoint writers of a run: `epochNNNN.ckpt` every `every_n_epochs`
    epochs (all kept) and `last.ckpt` after every epoch, both in `ckpt_dir`."""
    return [
        ModelCheckpoint(
            dirpath=ckpt_dir, filename=EPOCH_NAME, auto_insert_metric_name=False,
            every_n_epochs=every_n_epochs, save_top_k=KEEP_ALL,
        ),
        LastCheckpoint(ckpt_dir),
    ]
