"""`kfcpo ablate STUDY.yaml`: named variants x seeds on one task, each run through the
benchmark grid (complete runs skipped, interrupted ones resumed), then one table per
study with final return and cost, rollback rate and w_c, and curves.

Writes OUT/ablations.md (every study's table, the command, the code commit) and
OUT/<study>.png (return and cost curves, mean and std band over seeds). The spec's format:
`kfcpo.tools.ablate_spec`.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
from pathlib import Path

import numpy as np

from kfcpo.config import ConfigError
from kfcpo.config.validate import check_folder_path
from kfcpo.metrics_schema import BLENDER_W_C, GUARD_ROLLBACK_FRAC
from kfcpo.run.history import Run
from kfcpo.tools.ablate_spec import AblationSpec, check_variant_names, load_spec
from kfcpo.tools.benchmark import run_spec
from kfcpo.tools.commands import ABLATE_RUNS_DIR
from kfcpo.tools.grid import GridSpec, any_complete, check
from kfcpo.tools.plot import plot_runs
from kfcpo.tools.provenance import runs_code, timestamp
from kfcpo.tools.results import (
    FINAL_FRACTION,
    HALF,
    NO_VALUE,
    SCORE_COLUMNS,
    complete_runs,
    markdown_rule,
    score_cells,
)

PROG = "kfcpo ablate"
REPORT_FILE = "ablations.md"
# Per-epoch diagnostics reported beside return and cost: mean over all epochs of a run.
DIAGNOSTICS = (GUARD_ROLLBACK_FRAC, BLENDER_W_C)
HEADER = ("variant", "what changes", *SCORE_COLUMNS, "seeds", "rollback rate", "w_c")
VARIANT_JOBS = 1  # one run at a time: a variant's runs share the machine with nothing else


def variant_grid(spec: AblationSpec, name: str, runs_dir: Path, report: bool) -> GridSpec:
    """The benchmark grid of one variant: its preset and overrides, every seed."""
    variant = spec.variants[name]
    return GridSpec(
        algorithms=(variant.algorithm,), envs=(spec.env,), seeds=spec.seeds, total_steps=spec.total_steps,
        steps_per_epoch=spec.steps_per_epoch, num_envs=spec.num_envs, jobs=VARIANT_JOBS,
        runs_dir=runs_dir / name, out=runs_dir / name / "report", report=report, overrides=variant.overrides,
    )


def variant_runs(spec: AblationSpec, name: str, runs_dir: Path) -> list[Run]:
    """The variant's complete runs, labelled with its name for grouping."""
    grid = variant_grid(spec, name, runs_dir, report=True)
    runs = complete_runs(grid, grid.runs())
    for run in runs:
        run.config["variant"] = name
    return runs


def mean_over_epochs(run: Run, metric: str) -> float:
    """The mean of a per-epoch diagnostic over all of a run's epochs (NaN if never logged)."""
    values = run.metrics.get(metric)
    if values is None:
        return math.nan
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else math.nan


def row(spec: AblationSpec, name: str, runs: list[Run]) -> tuple[str, ...]:
    """One variant's table row: finals, second halves, seeds and diagnostics."""
    what = spec.variants[name].what
    if not runs:
        return (name, what, *score_cells(runs), "0", *(NO_VALUE,) * len(DIAGNOSTICS))
    diags = []
    for metric in DIAGNOSTICS:
        values = [mean_over_epochs(r, metric) for r in runs]
        diags.append(NO_VALUE if all(math.isnan(v) for v in values) else f"{np.nanmean(values):.2f}")
    return (name, what, *score_cells(runs), str(len(runs)), *diags)


def slug(title: str) -> str:
    """A study title as a file name: lower case, runs of other characters as `_`."""
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def write_report(spec: AblationSpec, runs_dir: Path, out: Path, command: str) -> Path:
    """OUT/ablations.md (a table and a figure per study, the command, the code); its path."""
    out.mkdir(parents=True, exist_ok=True)
    by_variant = {name: variant_runs(spec, name, runs_dir) for name in spec.variants}
    lines = [
        "# Ablations",
        "",
        f"{spec.env}, {spec.total_steps:,} env steps per run, {spec.steps_per_epoch:,} "
        f"per epoch, {spec.num_envs} envs, seeds {', '.join(map(str, spec.seeds))}. Final = a "
        f"run's mean over its last {FINAL_FRACTION:.0%} of epochs, 2nd half over the last "
        f"{HALF:.0%}; mean ± sample std over seeds. "
        "Rollback rate and w_c: mean over all epochs and seeds.",
    ]
    for title, names in spec.studies.items():
        lines += ["", f"## {title}", "", "| " + " | ".join(HEADER) + " |",
                  markdown_rule(HEADER, numeric=HEADER[2:])]
        lines += ["| " + " | ".join(row(spec, n, by_variant[n])) + " |" for n in names]
        runs = [r for n in names for r in by_variant[n]]
        if runs:
            figure = plot_runs(runs, out / f"{slug(title)}.png", band="std", group_by=("variant",),
                               title=f"{title}: mean over seeds, band ± std")
            lines += ["", f"![{title}]({figure.name})"]
    every_run = (r.config for runs in by_variant.values() for r in runs)
    lines += ["", f"Command: `{command}`", "", f"Code: {runs_code(every_run)}", "", f"Date: {timestamp()}"]
    report = out / REPORT_FILE
    report.write_text("\n".join(lines) + "\n")
    return report


def command(args: argparse.Namespace) -> str:
    """The command that makes every variant's runs and this report (no --report, no --only:
    the report tables every variant)."""
    words = ["kfcpo", "ablate", args.spec, *(["--out", args.out] if args.out else [])]
    return shlex.join(words + (["--runs-dir", args.runs_dir] if args.runs_dir != ABLATE_RUNS_DIR else []))


def run(args: argparse.Namespace) -> int:
    """`kfcpo ablate`: the spec, --only and every variant's config checked before any run."""
    spec = load_spec(args.spec)
    if args.only:
        check_variant_names(args.only, spec.variants, "--only")
    runs_dir = Path(args.runs_dir)
    out = check_folder_path(args.out or spec.path.parent, "--out", "a folder for ablations.md and curves")
    names = list(args.only or spec.variants)
    grids = {name: variant_grid(spec, name, runs_dir, args.report) for name in names}
    for grid in grids.values():
        check(grid)  # a bad override in the last variant stops before the first one runs
    if args.report:  # only variants with runs are tabled; none: nothing is written
        grids = {name: grid for name, grid in grids.items() if any_complete(grid)}
        if not grids:
            raise ConfigError(f"--report: no variant has a complete run in '{runs_dir}', so nothing is "
                              "written; give the --runs-dir the study ran in, or run it without --report")
    codes = []
    for name, grid in grids.items():
        print(f"{PROG}: variant {name}", flush=True)
        codes.append(run_spec(grid))
    report = write_report(spec, runs_dir, out, command(args))
    print(f"wrote {report}")
    return max(codes, default=0)
