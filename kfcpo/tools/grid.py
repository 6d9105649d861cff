"""A benchmark grid: algorithms x envs x seeds at one budget, each run a `kfcpo fit`
process in its own folder, skipped when complete and resumed when interrupted."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig

from kfcpo.config import ConfigError, load_config
from kfcpo.config.validate import check_folder_path
from kfcpo.envs.layout import resolve_workers, usable_cores
from kfcpo.run.layout import last_checkpoint
from kfcpo.run.metrics import merge_prior_metrics, reached_steps

PROG = "kfcpo benchmark"
LOG_FILE = "benchmark.log"
LOG_TAIL_LINES = 15  # lines of a failed run's log shown in the report
# Keys the grid sets per run, and the option that sets each: not for overrides.
CONTROLLED_KEYS = {"algorithm": "--algorithms", "env.id": "--envs", "seed": "--seeds",
                   "total_steps": "--total-steps", "out_dir": "--runs-dir", "resume": "(automatic)"}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of the grid and its folder."""

    env: str
    algorithm: str
    seed: int
    dir: Path

    @property
    def name(self) -> str:
        """env/algorithm/seedK, as progress lines and reports name the run."""
        return f"{self.env}/{self.algorithm}/seed{self.seed}"


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """What `kfcpo benchmark` runs, where, and with which overrides."""

    algorithms: tuple[str, ...]
    envs: tuple[str, ...]
    seeds: tuple[int, ...]
    total_steps: int
    out: Path
    runs_dir: Path
    steps_per_epoch: int | None = None
    num_envs: int | None = None
    jobs: int | None = None
    config: str | None = None
    report: bool = False
    overrides: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> GridSpec:
        """The spec of a parsed `kfcpo benchmark` command line."""
        return cls(
            algorithms=tuple(args.algorithms), envs=tuple(args.envs), seeds=tuple(args.seeds),
            total_steps=args.total_steps, out=Path(args.out), runs_dir=Path(args.runs_dir),
            steps_per_epoch=args.steps_per_epoch, num_envs=args.num_envs, jobs=args.jobs,
            config=args.config, report=args.report, overrides=tuple(args.overrides),
        )

    def run_overrides(self) -> list[str]:
        """The overrides every run gets, besides its own algorithm, env, seed and folder."""
        budget = [f"total_steps={self.total_steps}"]
        if self.steps_per_epoch is not None:
            budget.append(f"steps_per_epoch={self.steps_per_epoch}")
        if self.num_envs is not None:
            budget.append(f"env.num_envs={self.num_envs}")
        return [*budget, "logger.wandb.mode=disabled", *self.overrides]

    def cell_overrides(self, algorithm: str, env: str) -> list[str]:
        """The overrides of every run of one (algorithm, env) cell."""
        return [f"algorithm={algorithm}", f"env.id={env}", *self.run_overrides()]

    def runs(self) -> list[RunSpec]:
        """Every run of the grid, env by env, then algorithm, then seed."""
        return [
            RunSpec(env, algorithm, seed, self.runs_dir / env / algorithm / f"seed{seed}")
            for env in self.envs for algorithm in self.algorithms for seed in self.seeds
        ]

    def command(self) -> str:
        """The command that makes these runs (without --report, which would only table them)."""
        words = ["kfcpo", "benchmark", "--algorithms", *self.algorithms, "--envs", *self.envs,
                 "--seeds", *map(str, self.seeds), "--total-steps", str(self.total_steps)]
        optional = (("--steps-per-epoch", self.steps_per_epoch), ("--num-envs", self.num_envs),
                    ("--jobs", self.jobs), ("--config", self.config))
        for flag, value in optional:
            if value is not None:
                words += [flag, str(value)]
        return shlex.join([*words, "--out", str(self.out), "--runs-dir", str(self.runs_dir), *self.overrides])


def check(spec: GridSpec) -> list[DictConfig]:
    """Every (algorithm, env) config and both folders, checked before any run starts;
    ConfigError (one line) if one is wrong. Creates nothing."""
    for flag, values in (("--algorithms", spec.algorithms), ("--envs", spec.envs), ("--seeds", spec.seeds)):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:  # two fits would write into one run folder at once
            raise ConfigError(f"{flag}: {', '.join(repeated)} given more than once; name each once")
    for item in spec.overrides:
        key = item.split("=", 1)[0]
        if key in CONTROLLED_KEYS:
            raise ConfigError(f"override '{item}': {PROG} sets {key} itself; use {CONTROLLED_KEYS[key]}")
    configs = [load_config(spec.config, spec.cell_overrides(algorithm, env))[0]
               for algorithm in spec.algorithms for env in spec.envs]
    check_folder_path(spec.out, "--out", "a folder for results.md and curves.png")
    check_folder_path(spec.runs_dir, "--runs-dir", "a folder for the run folders")
    return configs


def cores_per_run(configs: Sequence[DictConfig]) -> int:
    """The most cores one run keeps busy: its env worker processes with `env.vector=async`,
    else one."""
    return max(resolve_workers(cfg.env.num_envs, cfg.env.workers) if cfg.env.vector == "async" else 1
               for cfg in configs)


def default_jobs(per_run: int) -> int:
    """Runs at once by default: as many as the usable cores hold."""
    return max(1, usable_cores() // max(1, per_run))


# -- a run folder's state -----------------------------------------------------------------


def is_complete(run_dir: Path, total_steps: int) -> bool:
    """Whether the run's metrics.csv reached the budget."""
    return reached_steps(run_dir) >= total_steps


def any_complete(spec: GridSpec) -> bool:
    """Whether at least one of the grid's runs reached the budget (something to table)."""
    return any(is_complete(run.dir, spec.total_steps) for run in spec.runs())


def prepare_incomplete(run: RunSpec) -> Path | None:
    """The checkpoint to resume from, or None after clearing the folder of a run that
    never reached a checkpoint. The resumed fit keeps the metrics rows its checkpoint
    covers itself (kfcpo.run.csv_logger), in the same folder."""
    checkpoint = last_checkpoint(run.dir)
    if checkpoint.is_file():
        return checkpoint
    shutil.rmtree(run.dir, ignore_errors=True)
    return None


# -- running ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Failure:
    """A run that exited non-zero, and the end of its log."""

    run: RunSpec
    code: int

    def report(self) -> str:
        """The failure and the end of its log, indented for stderr."""
        log = self.run.dir / LOG_FILE
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:] if log.is_file() else []
        lines = [f"  {self.run.name}: exit code {self.code}; last lines of {log}:"]
        return "\n".join(lines + [f"    | {line}" for line in tail])


def fit_command(spec: GridSpec, run: RunSpec, resume: Path | None) -> list[str]:
    """The `kfcpo fit` process of one run (resumed from `resume` if given)."""
    cmd = [sys.executable, "-m", "kfcpo.cli", "fit"]
    if spec.config:
        cmd += ["--config", spec.config]
    cmd += [*spec.cell_overrides(run.algorithm, run.env), f"seed={run.seed}", f"out_dir={run.dir}"]
    return cmd + ([f"resume={resume}"] if resume else [])


def execute(cmd: list[str], run: RunSpec, resume: Path | None) -> int:
    """Run one fit, its stdout and stderr appended to its log; its exit code."""
    run.dir.mkdir(parents=True, exist_ok=True)
    # Said when the fit starts, not when it is queued: with --jobs 1 a run waits for the
    # ones before it, and a queued run shown as started reads as several running at once.
    print(f"  resume  {run.name} from {resume}" if resume else f"  start   {run.name}", flush=True)
    start = time.monotonic()
    with open(run.dir / LOG_FILE, "a") as log:
        how = f"resume from {resume}" if resume else "fresh start"
        log.write(f"== {datetime.now():%Y-%m-%d %H:%M:%S} {PROG}: {how}\n== {shlex.join(cmd)}\n")
        log.flush()
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    verdict = "done" if code == 0 else f"FAILED (exit code {code})"
    print(f"  {verdict:<7} {run.name} ({time.monotonic() - start:.0f} s)", flush=True)
    return code


def report_missing(spec: GridSpec, runs: Sequence[RunSpec]) -> list[Failure]:
    """--report: name the runs left out of the table (none is started); no failures."""
    for run in runs:
        reached = reached_steps(run.dir)  # one read of metrics.csv per run
        if reached < spec.total_steps:
            print(f"  missing {run.name} ({reached:.0f} of {spec.total_steps} steps)", flush=True)
    return []


def run_grid(spec: GridSpec, runs: Sequence[RunSpec], jobs: int) -> list[Failure]:
    """Skip, resume or start each run, `jobs` at a time (each says so as it starts); the
    runs that failed."""
    todo: list[tuple[RunSpec, Path | None]] = []
    for run in runs:
        merge_prior_metrics(run.dir)  # rows an older kfcpo stashed, interrupted while resuming
        if is_complete(run.dir, spec.total_steps):
            print(f"  skip    {run.name} (complete: {reached_steps(run.dir):.0f} steps)", flush=True)
            continue
        todo.append((run, prepare_incomplete(run)))
    if not todo:
        return []
    with ThreadPoolExecutor(max_workers=min(jobs, len(todo))) as pool:
        codes = list(pool.map(lambda t: execute(fit_command(spec, *t), *t), todo))
    return [Failure(run, code) for (run, _), code in zip(todo, codes, strict=True) if code != 0]

