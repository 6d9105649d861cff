"""The results of a benchmark grid: a markdown table of final return and cost per
(env, algorithm), and the curves beside it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kfcpo.metrics_schema import EPISODE_COST, EPISODE_RETURN
from kfcpo.run.history import Run, cost_limits, group_runs, load_runs
from kfcpo.tools.grid import GridSpec, RunSpec, is_complete
from kfcpo.tools.plot import plot_runs
from kfcpo.tools.provenance import runs_code, timestamp

FINAL_FRACTION = 0.1  # "final" = mean over this last fraction of a run's epochs (at least one)
# One epoch's episodes are a noisy sample of the policy's cost (PointGoal1: ~20 episodes,
# per-epoch cost 5-60 around a mean of 25), so the mean over the last half of the epochs
# is reported beside "final" as the steadier measure of where a method holds the cost.
HALF = 0.5
# Return and cost over seeds: the columns every results and ablation table shares.
SCORE_COLUMNS = ("final return", "final cost", "return, 2nd half", "cost, 2nd half")
TABLE_HEADER = ("env", "algorithm", *SCORE_COLUMNS, "seeds", "cost limit met")
RESULTS_FILE, CURVES_FILE = "results.md", "curves.png"
NO_VALUE = "–"  # a cell without runs


def clip_to_budget(run: Run, total_steps: int) -> Run:
    """The run's epochs up to the first one that reached the budget (a folder may hold more)."""
    n = int(np.searchsorted(run.steps, total_steps)) + 1
    metrics = {k: v[:n] for k, v in run.metrics.items()}
    return dataclasses.replace(run, steps=run.steps[:n], metrics=metrics)


def tail_mean(run: Run, metric: str, fraction: float) -> float:
    """Mean of `metric` over the run's last `fraction` of epochs, at least one (NaN epochs
    ignored)."""
    values = run.metrics[metric]
    last = values[-max(1, math.ceil(fraction * len(values))):]
    last = last[~np.isnan(last)]
    return float(last.mean()) if len(last) else math.nan


def final_value(run: Run, metric: str) -> float:
    """Mean of `metric` over the run's last FINAL_FRACTION of epochs (NaN epochs ignored)."""
    return tail_mean(run, metric, FINAL_FRACTION)


def second_half(run: Run, metric: str) -> float:
    """Mean of `metric` over the run's last HALF of epochs (NaN epochs ignored)."""
    return tail_mean(run, metric, HALF)


# Seeds are a sample of the algorithm's outcomes: the unbiased (n - 1) spread, which with the
# usual 3 seeds is 1.22x the population std that would understate it.
SEED_DDOF = 1


def mean_std(values: Sequence[float]) -> str:
    """Values as "mean ± std" over seeds (sample std, two decimals); a single seed has no
    spread and shows its value alone."""
    if len(values) < 2:
        return f"{np.mean(values):.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=SEED_DDOF):.2f}"


def score_cells(runs: Sequence[Run]) -> tuple[str, ...]:
    """The SCORE_COLUMNS cells of some seeds' runs (NO_VALUE each without runs)."""
    if not runs:
        return (NO_VALUE,) * len(SCORE_COLUMNS)
    finals = [mean_std([final_value(r, m) for r in runs]) for m in (EPISODE_RETURN, EPISODE_COST)]
    halves = [mean_std([second_half(r, m) for r in runs]) for m in (EPISODE_RETURN, EPISODE_COST)]
    return (*finals, *halves)


def markdown_rule(header: Sequence[str], numeric: Sequence[str]) -> str:
    """A table's separator row: the `numeric` columns right-aligned, the others left."""
    return "|" + "|".join("---:" if column in numeric else "---" for column in header) + "|"


def table_row(env: str, algorithm: str, runs: Sequence[Run]) -> tuple[str, ...]:
    """One (env, algorithm) row: final and 2nd-half return and cost over seeds, limit met."""
    if not runs:
        return (env, algorithm, *score_cells(runs), "0", NO_VALUE)
    costs = [final_value(r, EPISODE_COST) for r in runs]
    limit = min(cost_limits(runs), default=math.nan)  # the strictest, should seeds differ
    met = f"yes (≤ {limit:g})" if np.mean(costs) <= limit else f"no (> {limit:g})"
    return (env, algorithm, *score_cells(runs), str(len(runs)), met)


def results_markdown(spec: GridSpec, runs: Sequence[Run]) -> str:
    """The whole results.md: the table, the curves, command, code and date."""
    groups = group_runs(runs)
    rows = [
        table_row(env, algorithm, groups.get(env, {}).get(algorithm, []))
        for env in spec.envs for algorithm in spec.algorithms
    ]
    lines = [
        "# Benchmark results",
        "",
        f"Budget: {spec.total_steps:,} env steps per run. Final = a run's mean over its last "
        f"{FINAL_FRACTION:.0%} of epochs, 2nd half over its last {HALF:.0%}; mean ± sample std over "
        "seeds. Cost limit met: mean final "
        "cost ≤ the runs' `cost_limit`.",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        markdown_rule(TABLE_HEADER, numeric=(*SCORE_COLUMNS, "seeds")),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"![return and cost curves]({CURVES_FILE})",
        "",
        f"Command: `{spec.command()}`",
        "",
        f"Code: {runs_code(r.config for r in runs)}",
        "",
        f"Date: {timestamp()}",
    ]
    return "\n".join(lines) + "\n"


def complete_runs(spec: GridSpec, runs: Sequence[RunSpec]) -> list[Run]:
    """The runs that reached the budget, read and cut at it."""
    dirs = [r.dir for r in runs if is_complete(r.dir, spec.total_steps)]
    return [clip_to_budget(r, spec.total_steps) for r in load_runs(dirs)] if dirs else []


def write_results(spec: GridSpec, runs: Sequence[RunSpec]) -> list[Path]:
    """results.md over the complete runs, and curves.png when there is any; the files written."""
    complete = complete_runs(spec, runs)
    spec.out.mkdir(parents=True, exist_ok=True)
    table = spec.out / RESULTS_FILE
    table.write_text(results_markdown(spec, complete))
    curves = spec.out / CURVES_FILE
    if not complete:
        curves.unlink(missing_ok=True)  # no stale figure beside an empty table
        return [table]
    return [table, plot_runs(complete, curves, band="std", title="mean over seeds, band ± std")]
