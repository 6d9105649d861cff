"""Run folders read back for tables and plots: config.yaml and metrics.csv as curves.

A run folder is what `kfcpo fit` writes (config.yaml + metrics.csv); a folder given on
the command line may also be any folder above run folders. Reading runs does not load
Lightning.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from kfcpo.config import ConfigError
from kfcpo.metrics_schema import CURVE_METRICS, STEP_KEY
from kfcpo.run.layout import CONFIG_FILE, METRICS_FILE
from kfcpo.run.metrics import cell_value, read_rows

RUN_DIR_VALID = f"a run folder ({CONFIG_FILE} + {METRICS_FILE}) or a folder above run folders"


@dataclass
class Run:
    """One run: its config, the env steps of its epochs and every metric per epoch."""

    path: Path
    config: dict
    steps: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def env_id(self) -> str:
        """The env id the run trained on."""
        return str(select(self.config, "env.id"))

    @property
    def seed(self) -> int:
        """The run's seed."""
        return int(select(self.config, "seed"))  # type: ignore[call-overload]

    def key(self, group_by: Sequence[str]) -> str:
        """The group label: the config values at the dotted keys in `group_by`."""
        return "/".join(str(select(self.config, k)) for k in group_by)


def select(config: dict, dotted: str) -> object:
    """The value at a dotted key of a run's config; ConfigError if it has none."""
    node: object = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"a run's {CONFIG_FILE} has no key '{dotted}'; "
                              "--group-by takes dotted config keys, e.g. algorithm or env.id")
        node = node[part]
    return node


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders: each path itself if it has a metrics.csv, else the run folders below it."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / METRICS_FILE).is_file():
            found.append(p)
        elif p.is_dir() and (below := sorted(m.parent for m in p.rglob(METRICS_FILE))):
            found.extend(below)
        else:
            raise ConfigError(f"RUN_DIR: '{p}' is not a run folder (no {METRICS_FILE} in or below it); "
                              f"expected {RUN_DIR_VALID}")
    return found


def _read_config(path: Path) -> dict:
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        problem = f"has {METRICS_FILE} but no {CONFIG_FILE}"
        raise ConfigError(f"RUN_DIR: '{path}' {problem}; expected {RUN_DIR_VALID}")
    try:
        config = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"RUN_DIR: '{cfg_path}' is not YAML ({type(err).__name__}); "
                          f"expected the {CONFIG_FILE} kfcpo fit writes") from None
    if not isinstance(config, dict):
        raise ConfigError(f"RUN_DIR: '{cfg_path}' is not a kfcpo config (not a mapping); "
                          f"expected the {CONFIG_FILE} kfcpo fit writes")
    return config


def read_run(path: Path) -> Run:
    """One run folder; ConfigError (one line) if it cannot be read as one."""
    config = _read_config(path)
    rows = read_rows(path / METRICS_FILE)
    if not rows or STEP_KEY not in rows[0]:
        raise ConfigError(f"RUN_DIR: '{path / METRICS_FILE}' has no {STEP_KEY} column or no rows; "
                          f"expected the {METRICS_FILE} kfcpo fit writes")
    by_step: dict[float, dict[str, str]] = {}
    for row in rows:
        step = cell_value(row.get(STEP_KEY))
        if not math.isnan(step):
            by_step[step] = row  # a repeated step (e.g. a re-logged epoch): keep the last
    steps = np.array(sorted(by_step))
    # Every column (the plotted ones and the diagnostics that tables report beside them).
    columns = sorted({k for row in rows for k in row if k} | {k for k, _ in CURVE_METRICS})
    metrics = {k: np.array([cell_value(by_step[s].get(k)) for s in steps]) for k in columns}
    return Run(path=path, config=config, steps=steps, metrics=metrics)


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Every run below `paths`, read; ConfigError (one line) for an unreadable one."""
    return [read_run(p) for p in find_run_dirs(paths)]


def group_runs(
    runs: Iterable[Run], group_by: Sequence[str] = ("algorithm",)
) -> dict[str, dict[str, list[Run]]]:
    """env id -> group label -> runs (sorted by seed), envs and labels sorted."""
    groups: dict[str, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        groups[run.env_id][run.key(group_by)].append(run)
    return {
        env: {label: sorted(rs, key=lambda r: r.seed) for label, rs in sorted(by_label.items())}
        for env, by_label in sorted(groups.items())
    }


def cost_limits(runs: Iterable[Run]) -> list[float]:
    """The distinct cost limits the runs were trained with, ascending."""
    return sorted({float(r.config["cost_limit"]) for r in runs if "cost_limit" in r.config})
