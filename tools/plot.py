"""Return and cost curves of kfcpo runs, grouped by algorithm per env, to a PNG.

Usage: python tools/plot.py RUN_DIR... -o OUT.png [--cost-limit D] [--band minmax|std]
                            [--group-by KEY...] [--title TEXT]

A RUN_DIR is a run folder (config.yaml + metrics.csv) or any folder above run folders.
Runs whose `--group-by` config values (default: `algorithm`) match on one env are one
group: its line is the mean over seeds on a common env-step grid, its band the min-max
(or mean +- std) across seeds. The cost limit is a dashed line (from the runs' configs
unless given). `load_runs` and `plot_runs` are for reuse by other tools.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display

import matplotlib.pyplot as plt
import numpy as np
import yaml
from matplotlib.ticker import EngFormatter

METRICS = (("ep_ret", "episode return"), ("ep_cost", "episode cost"))
GRID_POINTS = 200  # points of the common step grid a group is interpolated on
BANDS = ("minmax", "std")
BAND_ALPHA = 0.2
DPI = 120
PANEL_SIZE = (5.5, 3.6)  # inches per (env, metric) panel


class PlotError(ValueError):
    """A run folder that cannot be read; main() prints it as one line."""


@dataclass
class Run:
    path: Path
    config: dict
    steps: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def env_id(self) -> str:
        return str(select(self.config, "env.id"))

    @property
    def seed(self) -> int:
        return int(select(self.config, "seed"))  # type: ignore[call-overload]

    def key(self, group_by: Sequence[str]) -> str:
        """The group label: the config values at the dotted keys in `group_by`."""
        return "/".join(str(select(self.config, k)) for k in group_by)


def select(config: dict, dotted: str) -> object:
    node: object = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise PlotError(f"a run's config.yaml has no key '{dotted}'")
        node = node[part]
    return node


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders: each path itself if it has a metrics.csv, else the run folders below it."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "metrics.csv").is_file():
            found.append(p)
        elif p.is_dir() and (below := sorted(m.parent for m in p.rglob("metrics.csv"))):
            found.extend(below)
        else:
            raise PlotError(f"'{p}' is not a run folder (no metrics.csv in or below it)")
    return found


def _float(text: str | None) -> float:
    # Lightning's CSV leaves a cell empty for a metric not logged that epoch.
    return float(text) if text not in (None, "") else math.nan


def read_run(path: Path) -> Run:
    cfg_path = path / "config.yaml"
    if not cfg_path.is_file():
        raise PlotError(f"'{path}' has metrics.csv but no config.yaml")
    try:
        config = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError as err:
        raise PlotError(f"'{cfg_path}' is not YAML ({type(err).__name__})") from None
    if not isinstance(config, dict):
        raise PlotError(f"'{cfg_path}' is not a kfcpo config (not a mapping)")
    with open(path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "env_steps" not in rows[0]:
        raise PlotError(f"'{path / 'metrics.csv'}' has no env_steps column or no rows")
    by_step: dict[float, dict[str, str]] = {}
    for row in rows:
        step = _float(row.get("env_steps"))
        if not math.isnan(step):
            by_step[step] = row  # a repeated step (e.g. a re-logged epoch): keep the last
    steps = np.array(sorted(by_step))
    # Every column (the plotted ones and the diagnostics that tables report beside them).
    columns = sorted({k for row in rows for k in row if k} | {k for k, _ in METRICS})
    metrics = {k: np.array([_float(by_step[s].get(k)) for s in steps]) for k in columns}
    return Run(path=path, config=config, steps=steps, metrics=metrics)


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Every run below `paths`, read; PlotError (one line) for an unreadable one."""
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


def aggregate(runs: Sequence[Run], metric: str, band: str = "minmax") -> tuple[np.ndarray, ...]:
    """(grid, mean, low, high) of `metric` across runs on a common step grid.

    The grid spans only the steps every run covers, so no run is extrapolated; runs
    with one point each (a one-epoch run) give a grid of those points' common step.
    """
    curves = []
    for r in runs:
        ok = ~np.isnan(r.metrics[metric])
        if ok.any():
            curves.append((r.steps[ok], r.metrics[metric][ok]))
    if not curves:
        return (np.empty(0),) * 4
    start = max(s[0] for s, _ in curves)
    stop = min(s[-1] for s, _ in curves)
    if stop < start:  # no step range shared by all runs: fall back to each run's own span
        start, stop = min(s[0] for s, _ in curves), max(s[-1] for s, _ in curves)
    n = GRID_POINTS if stop > start else 1
    grid = np.linspace(start, stop, n)
    values = np.stack([np.interp(grid, s, v) for s, v in curves])
    mean = values.mean(axis=0)
    if band == "std":
        std = values.std(axis=0)
        return grid, mean, mean - std, mean + std
    return grid, mean, values.min(axis=0), values.max(axis=0)


def cost_limits(runs: Iterable[Run]) -> list[float]:
    return sorted({float(r.config["cost_limit"]) for r in runs if "cost_limit" in r.config})


def plot_runs(
    runs: Sequence[Run],
    out: str | Path,
    *,
    cost_limit: float | None = None,
    band: str = "minmax",
    group_by: Sequence[str] = ("algorithm",),
    title: str | None = None,
) -> Path:
    """Draw one row per env (return | cost vs env steps) and save a PNG at `out`."""
    if not runs:
        raise PlotError("no runs to plot")
    if band not in BANDS:
        raise PlotError(f"band must be one of {', '.join(BANDS)}, got '{band}'")
    groups = group_runs(runs, group_by)
    labels = sorted({label for by_label in groups.values() for label in by_label})
    # One colour per group label, the same in every panel.
    colors = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(labels)}
    fig, axes = plt.subplots(
        len(groups), len(METRICS), squeeze=False,
        figsize=(PANEL_SIZE[0] * len(METRICS), PANEL_SIZE[1] * len(groups)),
    )
    band_name = "min-max" if band == "minmax" else "\u00b1 std"
    for row, (env, by_label) in enumerate(groups.items()):
        for col, (metric, name) in enumerate(METRICS):
            ax = axes[row][col]
            for label, members in by_label.items():
                grid, mean, low, high = aggregate(members, metric, band)
                if not len(grid):
                    continue
                color = colors[label]
                seeds = len(members)
                ax.plot(grid, mean, color=color, marker="o" if len(grid) == 1 else None,
                        label=f"{label} ({seeds} seed{'s' if seeds > 1 else ''})")
                if seeds > 1:
                    ax.fill_between(grid, low, high, color=color, alpha=BAND_ALPHA, linewidth=0)
            if metric == "ep_cost":
                for limit in [cost_limit] if cost_limit is not None else cost_limits(
                    r for members in by_label.values() for r in members
                ):
                    ax.axhline(limit, color="black", linestyle="--", linewidth=1,
                               label=f"cost limit {limit:g}")
            ax.set_title(f"{env}: {name}")
            ax.set_xlabel("env steps")
            ax.set_ylabel(name)
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small", loc="best")
    fig.suptitle(title or f"mean over seeds, band: {band_name}", fontsize="medium")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plot.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders or folders above them")
    parser.add_argument("-o", "--out", required=True, help="output PNG")
    parser.add_argument("--cost-limit", type=float, help="dashed line here (default: the runs' cost_limit)")
    parser.add_argument("--band", choices=BANDS, default="minmax", help="band across seeds (default minmax)")
    parser.add_argument("--group-by", nargs="+", default=["algorithm"], metavar="KEY",
                        help="dotted config keys whose values name a group (default: algorithm)")
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.runs)
        out = plot_runs(runs, args.out, cost_limit=args.cost_limit, band=args.band,
                        group_by=args.group_by, title=args.title)
    except PlotError as err:
        print(f"plot.py: error: {err}", file=sys.stderr)
        return 2
    print(f"{len(runs)} runs -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
