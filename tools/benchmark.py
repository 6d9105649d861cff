"""Benchmark a grid of algorithms x envs x seeds at a budget: runs, a results table, curves.

Usage: python tools/benchmark.py --algorithms ppo_lag kfcpo [--envs SafetyPointGoal1-v0 ...]
           [--seeds 0 1 2] --total-steps 300000 [--steps-per-epoch N] [--num-envs N]
           [--jobs J] [--config FILE] [--out docs/results] [--runs-dir runs/benchmark]
           [--report] [key=value ...]

Each run is `python -m kfcpo.cli fit` in its own process, in RUNS_DIR/<env>/<algorithm>/seed<k>,
with wandb off (a `logger.wandb.mode=...` override turns it back on) and its output in
`benchmark.log` there. key=value overrides (anywhere on the line) go to every run. Runs are
started J at a time (default: as many as the cores hold, see `default_jobs`). A run whose
metrics.csv reached the budget is skipped; one with `checkpoints/last.ckpt` short of it is
resumed from there, its earlier metrics rows kept; any other is started afresh. A failed
run is reported (exit code, end of its log) and makes the exit code 1; the table is still
written for the other runs. Run folders are keyed by env, algorithm and seed only: use
another --runs-dir when changing any other setting. With --report nothing is started: the
table and curves are written from the runs already complete (e.g. while a grid still runs).

OUT/results.md: per (env, algorithm), final return and cost as mean ± std over seeds, where
a run's final value is its mean over the last 10% of its epochs, and whether the mean final
cost is within the runs' cost_limit; with the command that made it and the date.
OUT/curves.png: tools/plot.py's curves of the same runs.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plot import PlotError, Run, cost_limits, group_runs, load_runs, plot_runs

import kfcpo
from kfcpo.config import ConfigError, load_config
from kfcpo.envs.layout import resolve_workers

PROG = "tools/benchmark.py"
METRICS_FILE = "metrics.csv"
PRIOR_METRICS_FILE = "metrics.prior.csv"  # earlier attempts' rows while a resume runs
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
LOG_FILE = "benchmark.log"
LOG_TAIL_LINES = 15  # lines of a failed run's log shown in the report
FINAL_FRACTION = 0.1  # "final" = mean over this last fraction of a run's epochs (at least one)
EXIT_FAILED = 1
EXIT_CONFIG = 2
# Keys the tool sets per run (the grid, the budget, the folder): not for overrides.
CONTROLLED_KEYS = ("algorithm", "env.id", "seed", "total_steps", "out_dir", "resume")
RUN_CODE = ("kfcpo", "registry", "conf")  # what a run executes, besides the orchestrator
TABLE_HEADER = ("env", "algorithm", "final return", "final cost", "seeds", "cost limit met")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    env: str
    algorithm: str
    seed: int
    dir: Path

    @property
    def name(self) -> str:
        return f"{self.env}/{self.algorithm}/seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class Failure:
    spec: RunSpec
    code: int

    def report(self) -> str:
        log = self.spec.dir / LOG_FILE
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:] if log.is_file() else []
        lines = [f"  {self.spec.name}: exit code {self.code}; last lines of {log}:"]
        return "\n".join(lines + [f"    | {line}" for line in tail])


# -- command line -----------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Options via argparse; every `key=value` word, wherever it stands, is an override."""
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0],
        epilog="key=value words, anywhere on the line, are config overrides for every run.",
    )
    parser.add_argument("--algorithms", nargs="+", required=True, help="algorithm presets")
    parser.add_argument("--envs", nargs="+", default=["SafetyPointGoal1-v0"], help="env ids")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--total-steps", type=int, required=True, help="env steps per run (the budget)")
    parser.add_argument("--steps-per-epoch", type=int, help="env steps per epoch (default: config's)")
    parser.add_argument("--num-envs", type=int, help="envs per run (default: config's)")
    parser.add_argument("--jobs", "-j", type=positive_int,
                        help="runs at once (default: cores // cores per run)")
    parser.add_argument("--config", "-c", help="experiment YAML under every run (default: presets only)")
    parser.add_argument("--out", default="docs/results", help="folder for results.md and curves.png")
    parser.add_argument("--runs-dir", default="runs/benchmark", help="folder of the run folders")
    parser.add_argument("--report", action="store_true",
                        help="start no run; table and curves from the runs already complete")
    args = parser.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides
    return args


def run_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides every run gets, besides its own algorithm, env, seed and folder."""
    budget = [f"total_steps={args.total_steps}"]
    if args.steps_per_epoch is not None:
        budget.append(f"steps_per_epoch={args.steps_per_epoch}")
    if args.num_envs is not None:
        budget.append(f"env.num_envs={args.num_envs}")
    return [*budget, "logger.wandb.mode=disabled", *args.overrides]


def cell_overrides(args: argparse.Namespace, algorithm: str, env: str) -> list[str]:
    return [f"algorithm={algorithm}", f"env.id={env}", *run_overrides(args)]


def check_overrides(overrides: Sequence[str]) -> None:
    for item in overrides:
        if item.split("=", 1)[0] in CONTROLLED_KEYS:
            raise ConfigError(f"override '{item}': {PROG} sets this key itself (see its options)")


def load_cell_configs(args: argparse.Namespace) -> list[DictConfig]:
    """Every (algorithm, env) config, validated before any run starts (ConfigError if not)."""
    return [
        load_config(args.config, cell_overrides(args, algorithm, env))[0]
        for algorithm in args.algorithms for env in args.envs
    ]


def cores_per_run(configs: Sequence[DictConfig]) -> int:
    """The most cores one run keeps busy: its env worker processes with `env.vector=async`,
    else one."""
    return max(resolve_workers(cfg.env.num_envs, cfg.env.workers) if cfg.env.vector == "async" else 1
               for cfg in configs)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_jobs(per_run: int) -> int:
    return max(1, available_cores() // max(1, per_run))


# -- one run ----------------------------------------------------------------------------


def grid(args: argparse.Namespace) -> list[RunSpec]:
    root = Path(args.runs_dir)
    return [
        RunSpec(env, algorithm, seed, root / env / algorithm / f"seed{seed}")
        for env in args.envs for algorithm in args.algorithms for seed in args.seeds
    ]


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def reached_steps(run_dir: Path) -> float:
    """The largest env_steps in the run's metrics.csv (0 without one)."""
    steps = [float(r["env_steps"]) for r in read_rows(run_dir / METRICS_FILE) if r.get("env_steps")]
    return max(steps, default=0.0)


def merge_prior_metrics(run_dir: Path) -> None:
    """Fold the stashed rows of earlier attempts back into metrics.csv, one row per epoch
    (the latest attempt's wins), and drop the stash."""
    prior = run_dir / PRIOR_METRICS_FILE
    if not prior.is_file():
        return
    by_epoch = {r["epoch"]: r for r in read_rows(prior) + read_rows(run_dir / METRICS_FILE)}
    rows = sorted(by_epoch.values(), key=lambda r: int(r["epoch"]))
    fields = sorted({k for r in rows for k in r})  # Lightning's CSVLogger sorts its columns too
    with open(run_dir / METRICS_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    prior.unlink()


def stash_metrics(run_dir: Path) -> None:
    """Keep the rows so far: Lightning's CSVLogger empties metrics.csv in a folder it reopens."""
    if (run_dir / METRICS_FILE).is_file():
        shutil.copyfile(run_dir / METRICS_FILE, run_dir / PRIOR_METRICS_FILE)


def fit_command(args: argparse.Namespace, spec: RunSpec, resume: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "kfcpo.cli", "fit"]
    if args.config:
        cmd += ["--config", args.config]
    cmd += [*cell_overrides(args, spec.algorithm, spec.env), f"seed={spec.seed}", f"out_dir={spec.dir}"]
    return cmd + ([f"resume={resume}"] if resume else [])


def is_complete(run_dir: Path, total_steps: int) -> bool:
    return reached_steps(run_dir) >= total_steps


def prepare_incomplete(spec: RunSpec) -> Path | None:
    """The checkpoint to resume from (the rows so far stashed), or None after clearing the
    folder of a run that never reached a checkpoint."""
    checkpoint = spec.dir / LAST_CHECKPOINT
    if checkpoint.is_file():
        stash_metrics(spec.dir)
        return checkpoint
    shutil.rmtree(spec.dir, ignore_errors=True)
    return None


def execute(cmd: list[str], spec: RunSpec, resume: Path | None) -> int:
    """Run one fit, its stdout and stderr appended to its log; its exit code."""
    spec.dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(spec.dir / LOG_FILE, "a") as log:
        how = f"resume from {resume}" if resume else "fresh start"
        log.write(f"== {datetime.now():%Y-%m-%d %H:%M:%S} {PROG}: {how}\n== {shlex.join(cmd)}\n")
        log.flush()
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if resume:
        merge_prior_metrics(spec.dir)
    verdict = "done" if code == 0 else f"FAILED (exit code {code})"
    print(f"  {verdict:<7} {spec.name} ({time.monotonic() - start:.0f} s)", flush=True)
    return code


def report_missing(args: argparse.Namespace, specs: Sequence[RunSpec]) -> list[Failure]:
    """--report: name the runs left out of the table (none is started); no failures."""
    for spec in specs:
        reached = reached_steps(spec.dir)  # one read of metrics.csv per run
        if reached < args.total_steps:
            print(f"  missing {spec.name} ({reached:.0f} of {args.total_steps} steps)", flush=True)
    return []


def run_grid(args: argparse.Namespace, specs: Sequence[RunSpec], jobs: int) -> list[Failure]:
    """Skip, resume or start each run, `jobs` at a time; the runs that failed."""
    todo: list[tuple[RunSpec, Path | None]] = []
    for spec in specs:
        merge_prior_metrics(spec.dir)  # rows stashed by an interrupted earlier invocation
        if is_complete(spec.dir, args.total_steps):
            print(f"  skip    {spec.name} (complete: {reached_steps(spec.dir):.0f} steps)", flush=True)
            continue
        resume = prepare_incomplete(spec)
        how = f"resume  {spec.name} from {resume}" if resume else f"start   {spec.name}"
        print(f"  {how}", flush=True)
        todo.append((spec, resume))
    if not todo:
        return []
    with ThreadPoolExecutor(max_workers=min(jobs, len(todo))) as pool:
        codes = list(pool.map(lambda t: execute(fit_command(args, *t), *t), todo))
    return [Failure(spec, code) for (spec, _), code in zip(todo, codes, strict=True) if code != 0]


# -- results ----------------------------------------------------------------------------


def clip_to_budget(run: Run, total_steps: int) -> Run:
    """The run's epochs up to the first one that reached the budget (a folder may hold more)."""
    n = int(np.searchsorted(run.steps, total_steps)) + 1
    metrics = {k: v[:n] for k, v in run.metrics.items()}
    return dataclasses.replace(run, steps=run.steps[:n], metrics=metrics)


def final_value(run: Run, metric: str) -> float:
    """Mean of `metric` over the run's last FINAL_FRACTION of epochs (NaN epochs ignored)."""
    values = run.metrics[metric]
    last = values[-max(1, math.ceil(FINAL_FRACTION * len(values))):]
    last = last[~np.isnan(last)]
    return float(last.mean()) if len(last) else math.nan


def mean_std(values: Sequence[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}"


def table_row(env: str, algorithm: str, runs: Sequence[Run]) -> tuple[str, ...]:
    if not runs:
        return (env, algorithm, "–", "–", "0", "–")
    returns = [final_value(r, "ep_ret") for r in runs]
    costs = [final_value(r, "ep_cost") for r in runs]
    limit = min(cost_limits(runs), default=math.nan)  # the strictest, should seeds differ
    met = f"yes (≤ {limit:g})" if np.mean(costs) <= limit else f"no (> {limit:g})"
    return (env, algorithm, mean_std(returns), mean_std(costs), str(len(runs)), met)


def code_version() -> str:
    """The git commit the runs' code comes from, flagged when kfcpo/, registry/ or conf/
    differ from it (the orchestrator's own edits do not change a run)."""
    root = Path(kfcpo.__file__).resolve().parents[1]

    def git(*words: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *words], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return f"kfcpo from {root} (not a git checkout)"
    changed = git("status", "--porcelain", "--", *RUN_CODE)
    return f"git commit {commit}" + (" with uncommitted changes to " + ", ".join(RUN_CODE) if changed else "")


def results_markdown(args: argparse.Namespace, runs: Sequence[Run], command: str) -> str:
    groups = group_runs(runs)
    rows = [
        table_row(env, algorithm, groups.get(env, {}).get(algorithm, []))
        for env in args.envs for algorithm in args.algorithms
    ]
    lines = [
        "# Benchmark results",
        "",
        f"Budget: {args.total_steps:,} env steps per run. Final = a run's mean over its last "
        f"{FINAL_FRACTION:.0%} of epochs; mean ± std over seeds. Cost limit met: mean final "
        "cost ≤ the runs' `cost_limit`.",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * 3 + ["---"]) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "![return and cost curves](curves.png)",
        "",
        f"Command: `{command}`",
        "",
        f"Code: {code_version()}",
        "",
        f"Date: {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
    ]
    return "\n".join(lines) + "\n"


def write_results(args: argparse.Namespace, specs: Sequence[RunSpec], command: str) -> list[Path]:
    """results.md over the complete runs, and curves.png when there is any; the files written."""
    complete = [s.dir for s in specs if is_complete(s.dir, args.total_steps)]
    runs = [clip_to_budget(r, args.total_steps) for r in load_runs(complete)] if complete else []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "results.md"
    table.write_text(results_markdown(args, runs, command))
    curves = out / "curves.png"
    if not runs:
        curves.unlink(missing_ok=True)  # no stale figure beside an empty table
        return [table]
    return [table, plot_runs(runs, curves, band="std", title="mean over seeds, band ± std")]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        check_overrides(args.overrides)
        configs = load_cell_configs(args)
        jobs = args.jobs or default_jobs(cores_per_run(configs))
    except ConfigError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    specs = grid(args)
    how = "report only, none started" if args.report else f"up to {jobs} at a time"
    print(f"{PROG}: {len(specs)} runs, {how}, in {args.runs_dir}", flush=True)
    failures = report_missing(args, specs) if args.report else run_grid(args, specs, jobs)
    try:
        # The command that makes these runs (with --report it would only table them).
        command = shlex.join(["python", PROG, *(a for a in argv if a != "--report")])
        written = write_results(args, specs, command)
    except PlotError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {', '.join(map(str, written))}")
    if failures:
        print(f"{PROG}: {len(failures)} run(s) failed:", file=sys.stderr)
        print("\n".join(f.report() for f in failures), file=sys.stderr)
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
