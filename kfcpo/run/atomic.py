"""Write a file atomically: readers (and a resume after a crash) see the old complete
file or the new complete one, never a truncated one, even after `kill -9` mid-write.

The data goes to a hidden partial file in the same folder (so the rename never crosses
file systems), is flushed and fsynced, then `os.replace`d over the target (atomic on
POSIX); the folder is fsynced too, so the rename itself survives a power loss.
Standard library only, so it costs nothing to import.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

PARTIAL_SUFFIX = ".partial"  # not `.ckpt`: a run folder's checkpoint scan never sees one


def partial_path(path: Path) -> Path:
    """The hidden file a write of `path` goes to before it is renamed over `path`."""
    # One fixed name per target: a write interrupted by a kill is overwritten by the next.
    return path.with_name(f".{path.name}{PARTIAL_SUFFIX}")


def write_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Create or replace `path` with what `write` writes to the open file it is given."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(target)
    with open(tmp, "wb") as f:
        write(f)
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
