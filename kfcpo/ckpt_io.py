"""Atomic checkpoint writes: a process killed at any moment, `kill -9` during a write
included, leaves every `*.ckpt` either complete or untouched, never truncated.

The checkpoint goes to a hidden partial file in the same folder (so the rename never
crosses file systems), is flushed and fsynced, then `os.replace`d over the target (atomic
on POSIX) and the folder entry is fsynced, so the rename also survives a power loss.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

PARTIAL_SUFFIX = ".partial"  # not `.ckpt`: a run folder's checkpoint scan never sees one


def partial_path(path: Path) -> Path:
    # One fixed name per target: a write interrupted by a kill is overwritten by the next.
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def save_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic local writes (Trainer `plugins=`)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        save_atomic(checkpoint, path)
