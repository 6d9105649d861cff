"""`kfcpo plot`: return and cost curves of runs, grouped per env, to an image file.

Runs whose `--group-by` config values (default: `algorithm`) match on one env are one
group: its line is the mean over seeds on a common env-step grid, its band the min-max
(or mean +- std) across seeds. The cost limit is a dashed line (from the runs' configs
unless given). `plot_runs` is reused by `kfcpo benchmark` and `kfcpo ablate`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import EngFormatter

from kfcpo.config import ConfigError
from kfcpo.config.validate import check_file_path
from kfcpo.metrics_schema import EPISODE_COST
from kfcpo.run.history import CURVE_METRICS, Run, cost_limits, group_runs, load_runs
from kfcpo.tools.commands import PLOT_BANDS

METRICS = CURVE_METRICS
GRID_POINTS = 200  # points of the common step grid a group is interpolated on
BANDS = PLOT_BANDS
BAND_ALPHA = 0.2
DPI = 120
PANEL_SIZE = (5.5, 3.6)  # inches per (env, metric) panel
PALETTE, PALETTE_SIZE = "tab10", 10  # one colour per group label, cycling after ten
# Formats matplotlib writes with no extra program (pgf needs LaTeX, jpg/tif Pillow options).
IMAGE_SUFFIXES = (".png", ".pdf", ".svg")


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Each epoch's value as the mean of the last `window` epochs up to it (fewer at the
    start; NaN epochs ignored, NaN where the whole window is): one epoch's episodes are a
    noisy sample, and a trailing window shows only what had happened by that step."""
    if window <= 1:
        return values
    out = np.full(len(values), np.nan)
    for i in range(len(values)):
        part = values[max(0, i - window + 1) : i + 1]
        part = part[~np.isnan(part)]
        if len(part):
            out[i] = part.mean()
    return out


def aggregate(
    runs: Sequence[Run], metric: str, band: str = "minmax", smooth: int = 1
) -> tuple[np.ndarray, ...]:
    """(grid, mean, low, high) of `metric` across runs on a common step grid, each run's
    values first replaced by their trailing mean over `smooth` epochs.

    The grid spans only the steps every run covers, so no run is extrapolated; runs
    with one point each (a one-epoch run) give a grid of those points' common step.
    """
    curves = []
    for r in runs:
        ok = ~np.isnan(r.metrics[metric])
        if ok.any():
            curves.append((r.steps[ok], trailing_mean(r.metrics[metric], smooth)[ok]))
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
        # Sample std over seeds, as the results table (kfcpo.tools.results); one run: no band.
        std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
        return grid, mean, mean - std, mean + std
    return grid, mean, values.min(axis=0), values.max(axis=0)


def check_smooth(smooth: object) -> int:
    """`smooth` as a window of epochs (an integer >= 1); ConfigError if not."""
    if isinstance(smooth, bool) or not isinstance(smooth, int) or smooth < 1:
        raise ConfigError(f"--smooth: got {smooth!r}; expected an integer >= 1 (epochs; 1 = raw curves)")
    return smooth


def check_image_path(out: str | Path) -> Path:
    """`out` as an image file matplotlib can write and kfcpo can create; ConfigError if not."""
    valid = f"an image file path ending in one of {', '.join(IMAGE_SUFFIXES)}, e.g. curves.png"
    if Path(out).suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(f"--out: '{out}' is not an image file name; expected {valid}")
    return check_file_path(out, "--out", valid)


def _draw_panel(ax: plt.Axes, env: str, metric: str, name: str, by_label: dict[str, list[Run]],
                colors: dict, band: str, cost_limit: float | None, smooth: int) -> None:
    for label, members in by_label.items():
        grid, mean, low, high = aggregate(members, metric, band, smooth)
        if not len(grid):
            continue
        seeds = len(members)
        ax.plot(grid, mean, color=colors[label], marker="o" if len(grid) == 1 else None,
                label=f"{label} ({seeds} seed{'s' if seeds > 1 else ''})")
        if seeds > 1:
            ax.fill_between(grid, low, high, color=colors[label], alpha=BAND_ALPHA, linewidth=0)
    if metric == EPISODE_COST:
        members = [r for rs in by_label.values() for r in rs]
        for limit in [cost_limit] if cost_limit is not None else cost_limits(members):
            ax.axhline(limit, color="black", linestyle="--", linewidth=1, label=f"cost limit {limit:g}")
    ax.set_title(f"{env}: {name}")
    ax.set_xlabel("env steps")
    ax.set_ylabel(name)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="best")


def plot_runs(
    runs: Sequence[Run],
    out: str | Path,
    *,
    cost_limit: float | None = None,
    band: str = "minmax",
    group_by: Sequence[str] = ("algorithm",),
    title: str | None = None,
    smooth: int = 1,
) -> Path:
    """Draw one row per env (return | cost vs env steps) and save the figure at `out`."""
    if not runs:
        raise ConfigError("RUN_DIR: no runs to plot; expected at least one run folder")
    if band not in BANDS:
        raise ConfigError(f"--band: got '{band}'; expected one of {', '.join(BANDS)}")
    check_smooth(smooth)
    groups = group_runs(runs, group_by)
    labels = sorted({label for by_label in groups.values() for label in by_label})
    # One colour per group label, the same in every panel.
    colors = {label: plt.get_cmap(PALETTE)(i % PALETTE_SIZE) for i, label in enumerate(labels)}
    fig, axes = plt.subplots(
        len(groups), len(METRICS), squeeze=False,
        figsize=(PANEL_SIZE[0] * len(METRICS), PANEL_SIZE[1] * len(groups)),
    )
    for row, (env, by_label) in enumerate(groups.items()):
        for col, (metric, name) in enumerate(METRICS):
            _draw_panel(axes[row][col], env, metric, name, by_label, colors, band, cost_limit, smooth)
    band_name = "min-max" if band == "minmax" else "\u00b1 std"
    smoothed = f", each run's trailing mean over {smooth} epochs" if smooth > 1 else ""
    fig.suptitle(title or f"mean over seeds, band: {band_name}{smoothed}", fontsize="medium")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def run(args: argparse.Namespace) -> int:
    """`kfcpo plot`: every input checked before the figure is drawn; exit code 0."""
    if args.cost_limit is not None and not math.isfinite(args.cost_limit):
        raise ConfigError(f"--cost-limit: got {args.cost_limit}; expected a finite number")
    check_image_path(args.out)
    check_smooth(args.smooth)
    runs = load_runs(args.runs)
    out = plot_runs(runs, args.out, cost_limit=args.cost_limit, band=args.band,
                    group_by=args.group_by, title=args.title, smooth=args.smooth)
    print(f"{len(runs)} runs -> {out}")
    return 0
