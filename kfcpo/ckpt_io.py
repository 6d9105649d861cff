"""Atomic checkpoint writes for Lightning (Trainer `plugins=`): a process killed at any
moment, `kill -9` during a write included, leaves every `*.ckpt` complete or untouched
(see `kfcpo.atomic_file`); Lightning's own writer truncates the target first."""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from kfcpo.atomic_file import write_atomic


def save_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    write_atomic(path, lambda f: torch.save(obj, f))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic local writes."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomic(checkpoint, path)
