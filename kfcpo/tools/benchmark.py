"""`kfcpo benchmark`: run a grid of algorithms x envs x seeds at a budget, then write a
results table and curves.

Each run is `python -m kfcpo.cli fit` in its own process, in RUNS_DIR/<env>/<algorithm>/seed<k>,
with wandb off (a `logger.wandb.mode=...` override turns it back on) and its output in
`benchmark.log` there. key=value overrides (anywhere on the line) go to every run. Runs are
started J at a time (default: as many as the cores hold, see `grid.default_jobs`). A run
whose metrics.csv reached the budget is skipped; one with `checkpoints/last.ckpt` short of
it is resumed from there, its earlier metrics rows kept; any other is started afresh. A
failed run is reported (exit code, end of its log) and makes the exit code 1; the table is
still written for the other runs. Run folders are keyed by env, algorithm and seed only:
use another --runs-dir when changing any other setting. With --report nothing is started:
the table and curves are written from the runs already complete.

OUT/results.md: per (env, algorithm), final return and cost as mean ± std over seeds, where
a run's final value is its mean over the last 10% of its epochs, and whether the mean final
cost is within the runs' cost_limit; with the command that made it, the code and the date.
OUT/curves.png: `kfcpo plot`'s curves of the same runs.
"""

from __future__ import annotations

import argparse
import sys

from kfcpo.config import ConfigError
from kfcpo.tools.grid import (
    PROG,
    GridSpec,
    any_complete,
    check,
    cores_per_run,
    default_jobs,
    report_missing,
    run_grid,
)
from kfcpo.tools.results import write_results

EXIT_FAILED = 1  # a run failed, or its results could not be read back


def run_spec(spec: GridSpec) -> int:
    """Check everything, run (or, with `report`, only table) the grid; the exit code.
    ConfigError (one line) before anything starts for bad input."""
    configs = check(spec)
    jobs = spec.jobs or default_jobs(cores_per_run(configs))
    runs = spec.runs()
    if spec.report and not any_complete(spec):  # a table of dashes would replace a real one
        raise ConfigError(f"--report: none of the grid's {len(runs)} runs is complete in "
                          f"'{spec.runs_dir}', so nothing is written; give the --runs-dir the grid ran "
                          "in, or run it without --report")
    how = "report only, none started" if spec.report else f"up to {jobs} at a time"
    print(f"{PROG}: {len(runs)} runs, {how}, in {spec.runs_dir}", flush=True)
    failures = report_missing(spec, runs) if spec.report else run_grid(spec, runs, jobs)
    try:
        written = write_results(spec, runs)
    except ConfigError as err:  # a run folder that finished but does not read back
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {', '.join(map(str, written))}")
    if failures:
        print(f"{PROG}: {len(failures)} run(s) failed:", file=sys.stderr)
        print("\n".join(f.report() for f in failures), file=sys.stderr)
        return EXIT_FAILED
    return 0


def run(args: argparse.Namespace) -> int:
    """`kfcpo benchmark` from its parsed command line."""
    return run_spec(GridSpec.from_args(args))
