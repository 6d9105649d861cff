"""The folder `kfcpo fit` writes a run into: which one, the refusals that protect other
runs, making it (and unmaking it when the run fails before training), and config.yaml.

Every refusal is a one-line ConfigError naming `out_dir`, raised before anything is
created or any env starts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from kfcpo.config import ConfigError
from kfcpo.config.validate import check_folder_path
from kfcpo.run.layout import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    default_out_dir,
    held_run,
    resume_run_dir,
)
from kfcpo.version import run_info

OUT_DIR_VALID = "a folder path (new, empty, or the run to continue with resume=)"
REWRITTEN = (CONFIG_FILE, METRICS_FILE, CHECKPOINTS_DIR)  # what a run (re)writes in its folder
RUN_INFO_HEADER = "# the kfcpo that made this run (not config keys)"


def out_dir_for(cfg: DictConfig) -> Path:
    """The run's folder: `out_dir` if given; else, resuming a run folder, that folder
    (the run continues where it was); else a new runs/<time>-<algorithm>-<env>-s<seed>."""
    if cfg.out_dir:
        return Path(cfg.out_dir)
    if cfg.resume and os.path.isdir(cfg.resume):
        return resume_run_dir(cfg.resume)
    return default_out_dir(cfg)


def refuse_finished_run(out_dir: Path) -> None:
    """A new run never writes over another run's metrics and checkpoints."""
    held = held_run(out_dir)
    if held:
        raise ConfigError(
            f"out_dir: '{out_dir}' already holds a run ({', '.join(held)}); continue it with "
            f"resume={out_dir}, or give a new out_dir"
        )


def refuse_foreign_config(out_dir: Path) -> None:
    """A run writes its config.yaml into its folder: one that kfcpo did not write (no
    RUN_INFO_HEADER, e.g. the user's own experiment file) is never overwritten."""
    config = out_dir / CONFIG_FILE
    if not os.path.isfile(config):
        return
    try:
        written_by_kfcpo = RUN_INFO_HEADER in config.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise ConfigError(f"out_dir: cannot read '{config}' ({err.strerror}); give a new out_dir") from None
    if not written_by_kfcpo:
        raise ConfigError(
            f"out_dir: '{config}' is not a kfcpo run's config and a run would overwrite it; give "
            "a new or empty out_dir, or move the file"
        )


def check_out_dir(out_dir: Path, resume_run: Path | None) -> None:
    """Refuse, before anything is created, an out_dir that is a file, cannot be written,
    lies inside another run's folder, or (resuming `resume_run`) holds a different run."""
    check_folder_path(out_dir, "out_dir", OUT_DIR_VALID)
    for name in REWRITTEN:
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
    if resume_run is None or out_dir.resolve() != resume_run.resolve():
        refuse_foreign_config(out_dir)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None: all exist)."""
    missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
    return missing[-1] if missing else None


@contextmanager
def made_run_folder(out_dir: Path) -> Iterator[Path]:
    """Make `out_dir` (with its parents) for the body to set a run up in; if the body
    fails, remove the folders this made, so a run that never started leaves nothing."""
    created = _first_missing(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield out_dir
    except BaseException:
        if created is not None:  # nothing of a run in it yet: leave no half-made folder
            shutil.rmtree(created, ignore_errors=True)
        raise


def write_run_config(cfg: DictConfig, path: Path) -> None:
    """config.yaml: the resolved config, then which kfcpo made the run (RUN_INFO_KEYS;
    `kfcpo fit --config` drops those, so the file can be given back as a config)."""
    info = yaml.safe_dump(run_info(), sort_keys=False)
    path.write_text(f"{OmegaConf.to_yaml(cfg)}{RUN_INFO_HEADER}\n{info}")
