"""`kfcpo bench throughput`: rollout and training throughput of `kfcpo fit` against the
raw env rate, layout by layout.

One run measures every env x num_envs x layout x algorithm in rounds; each round visits
every row once, its raw rate right before its fits, so a ratio compares figures taken
back to back (on a shared VM absolute rates swing 2x: read the ratios):

  raw      random-action env steps/s of that vector env (no policy, no learning)
  rollout  env steps/s of the training loop's collector inside `kfcpo fit`
  train    env steps/s of whole `kfcpo fit` epochs (rollout, update, logging, checkpoint)
  cores    CPU seconds of this process and its env workers / wall seconds, during each
  x/raw    rollout or train over raw of the same layout in the same round (median)
  x/best   rollout or train over the best raw rate any row of that env reached

Layouts: `sync` | `async:W` (W worker processes) | `async:n` (one worker per env) |
`async:0` (one per core); resolved per env count and deduplicated (`async:2` with one
env is `async:1`). A `+worker` suffix (e.g. `async:2+worker`) runs the fit with the
worker engine (`env.engine=worker`: the policy in the env workers, a whole epoch per
message); its raw rate is that of the same vector env. The first epoch of each fit (env
start-up; with the worker engine also its warm-up on the step engine's loop) is not
timed.

  # the whole table (roughly 45 minutes on 2 cores with the defaults):
  kfcpo bench throughput --out docs/results/throughput.md
  # a quick check:
  kfcpo bench throughput --envs SafetyPointCircle1-v0 --num-envs 2 --layouts sync async:2 \\
      --algorithms kfcpo --steps-per-epoch 400 --epochs 2 --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl

from kfcpo.config import ConfigError, load_config
from kfcpo.config.validate import check_file_path
from kfcpo.data.worker_rollout import WorkerRolloutCollector
from kfcpo.envs import make_vector_env
from kfcpo.envs.layout import resolve_workers
from kfcpo.envs.pool import PoolVectorEnv
from kfcpo.metrics_schema import TIME_CRITIC_S, TIME_ROLLOUT_S, TIME_UPDATE_S
from kfcpo.module import SafeRLModule
from kfcpo.tools.bench.cpu_meter import CpuMeter, Window
from kfcpo.tools.bench.throughput_table import Results, machine, render, write
from kfcpo.train import build_trainer

LAYOUTS_VALID = "sync, async:W, async:n or async:0, each optionally +worker"
WORKER_SUFFIX = "+worker"  # a layout run with env.engine=worker
MIN_EPOCHS = 2  # the first epoch of a fit (env start-up) is not timed


@dataclass(frozen=True)
class Layout:
    """A vector layout, resolved for one env count."""

    vector: str  # sync | async
    workers: int = 0  # async: worker processes (resolved: >= 1)
    engine: str = "step"  # env.engine of the fit: step | worker

    def sort_key(self) -> tuple[bool, int, bool]:
        """sync first, then async by worker count; the step engine before the worker's."""
        return self.vector != "sync", self.workers, self.engine != "step"

    @property
    def label(self) -> str:
        """As the command line writes it: `sync` or `async:W`, `+worker` for that engine."""
        base = "sync" if self.vector == "sync" else f"async:{self.workers}"
        return base + (WORKER_SUFFIX if self.engine == "worker" else "")

    def overrides(self) -> list[str]:
        """The config keys that make `kfcpo fit` run this layout."""
        engine = [f"env.engine={self.engine}"]
        if self.vector == "sync":
            return ["env.vector=sync", *engine]
        return ["env.vector=async", f"env.workers={self.workers}", *engine]


def resolve(spec: str, num_envs: int) -> Layout:
    """`sync`, `async:W`, `async:n` or `async:0` for `num_envs` envs, as the factory
    resolves it (at most one worker per env; 0 = one per usable core), each optionally
    with `+worker` (the worker engine)."""
    worker = spec.endswith(WORKER_SUFFIX)
    engine = "worker" if worker else "step"
    base = spec.removesuffix(WORKER_SUFFIX)
    if base == "sync":
        return Layout("sync", engine=engine)
    vector, _, count = base.partition(":")
    if vector != "async" or not (count == "n" or count.isdigit()):
        raise ConfigError(f"--layouts: '{spec}' is not a layout; expected {LAYOUTS_VALID}")
    return Layout("async", num_envs if count == "n" else resolve_workers(num_envs, int(count)), engine)


def layout_of(venv: object, worker_engine: bool = False) -> str:
    """The layout a built vector env really has (fit builds its own): async envs are a
    worker pool, anything else steps in this process; `+worker` when its collector is the
    worker engine's."""
    inner = getattr(venv, "env", venv)
    base = f"async:{inner.workers}" if isinstance(inner, PoolVectorEnv) else "sync"
    return base + (WORKER_SUFFIX if worker_engine else "")


@dataclass
class Raw:
    """The random-action rate of one vector env."""

    rate: float
    cores: float


@dataclass
class Fit:
    """The rates of one `kfcpo fit`, over its timed epochs."""

    rollout_rate: float
    rollout_cores: float
    train_rate: float
    train_cores: float
    update_s: float
    layout_seen: str
    rollout_s: float  # the collector's own rollout seconds (the window should match it)


def measure_raw(env_id: str, num_envs: int, layout: Layout, steps: int, seed: int) -> Raw:
    """The random-action rate of the vector env `layout` builds, first step untimed."""
    workers = {"workers": layout.workers} if layout.vector == "async" else {}
    venv = make_vector_env(env_id, num_envs, seed=seed, vector=layout.vector, **workers)
    try:
        venv.reset(seed=seed)
        venv.step(venv.action_space.sample())  # first step: lazy initialisations
        n_steps = max(1, steps // num_envs)
        meter = CpuMeter()
        meter.start()
        for _ in range(n_steps):
            venv.step(venv.action_space.sample())
        window = meter.stop()
    finally:
        venv.close()
    return Raw(n_steps * num_envs / window.wall_s, window.cores)


class EpochMeter(pl.Callback):
    """Per epoch: the rollout (from the epoch's start until its one batch, the rollout,
    is fetched), the whole epoch, and the module's own update time."""

    def __init__(self) -> None:
        self.rollout: list[Window] = []
        self.epoch: list[Window] = []
        self.update_s: list[float] = []
        self.rollout_s: list[float] = []  # the module's own figure, to check the window against
        self.layout_seen = "?"
        self._epoch_meter, self._rollout_meter = CpuMeter(), CpuMeter()

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Record the layout the fit really built."""
        collector = getattr(module, "collector", None)
        if collector is not None:
            self.layout_seen = layout_of(collector.envs, isinstance(collector, WorkerRolloutCollector))

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Open the epoch's and the rollout's windows."""
        self._epoch_meter.start()
        self._rollout_meter.start()

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: object,
                             batch_idx: int) -> None:
        """The rollout is fetched: close its window."""
        self.rollout.append(self._rollout_meter.stop())

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Close the epoch's window; keep the module's own update and rollout seconds."""
        self.epoch.append(self._epoch_meter.stop())
        metrics = trainer.callback_metrics
        self.update_s.append(float(metrics[TIME_UPDATE_S]) + float(metrics.get(TIME_CRITIC_S, 0.0)))
        self.rollout_s.append(float(metrics.get(TIME_ROLLOUT_S, float("nan"))))


def fit_overrides(
    args: argparse.Namespace, env_id: str, num_envs: int, layout: Layout, algorithm: str
) -> list[str]:
    """The config of one measured fit: the row, the budget, no wandb, one checkpoint."""
    return [
        f"algorithm={algorithm}", f"env.id={env_id}", f"env.num_envs={num_envs}", *layout.overrides(),
        f"steps_per_epoch={args.steps_per_epoch}", f"total_steps={args.steps_per_epoch * args.epochs}",
        f"seed={args.seed}", "logger.wandb.mode=disabled", f"checkpoint.every_n_epochs={args.epochs}",
        *args.overrides,
    ]


def measure_fit(overrides: list[str]) -> Fit:
    """Run one `kfcpo fit` under an EpochMeter; its rates over the timed epochs."""
    cfg, _ = load_config(None, overrides)
    meter = EpochMeter()
    with tempfile.TemporaryDirectory() as tmp:
        module = SafeRLModule(cfg)
        trainer = build_trainer(cfg, Path(tmp))
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
        trainer.callbacks.append(meter)
        trainer.fit(module)
    # The first epoch pays env start-up and first resets: time the others.
    rollout, epoch = meter.rollout[1:], meter.epoch[1:]
    steps = cfg.steps_per_epoch
    return Fit(
        rollout_rate=steps / statistics.mean(w.wall_s for w in rollout),
        rollout_cores=statistics.mean(w.cores for w in rollout),
        train_rate=steps / statistics.mean(w.wall_s for w in epoch),
        train_cores=statistics.mean(w.cores for w in epoch),
        update_s=statistics.mean(meter.update_s[1:]),
        layout_seen=meter.layout_seen,
        rollout_s=statistics.mean(meter.rollout_s[1:]),
    )


@dataclass
class Cell:
    """Every round's measurements of one (env, num_envs, layout) row."""

    raw: list[Raw] = field(default_factory=list)
    fits: dict[str, list[Fit]] = field(default_factory=lambda: defaultdict(list))


def cells_of(args: argparse.Namespace) -> list[tuple[str, int, Layout]]:
    """Every (env, num_envs, layout) row, layouts resolved and deduplicated per env count."""
    out = []
    for env_id in args.envs:
        for n in args.num_envs:
            layouts = sorted({resolve(spec, n) for spec in args.layouts}, key=Layout.sort_key)
            out += [(env_id, n, layout) for layout in layouts]
    return out


def check(args: argparse.Namespace) -> list[tuple[str, int, Layout]]:
    """The rows to measure, every one's fit config checked first; ConfigError (one line)
    for bad input. Creates nothing."""
    if args.epochs < MIN_EPOCHS:
        raise ConfigError(f"--epochs: got {args.epochs}; expected an integer >= {MIN_EPOCHS} "
                          "(the first epoch is not timed)")
    for n in args.num_envs:
        if args.steps_per_epoch % n:
            raise ConfigError(f"--steps-per-epoch: {args.steps_per_epoch} is not a multiple of "
                              f"--num-envs {n}; "
                              "expected a multiple of every env count")
    cells = cells_of(args)
    for env_id, n, layout in cells:
        for algorithm in args.algorithms:
            load_config(None, fit_overrides(args, env_id, n, layout, algorithm))
    if args.out:
        check_file_path(args.out, "--out", "a markdown file path, e.g. throughput.md")
    return cells


def measure(args: argparse.Namespace, cells: list[tuple[str, int, Layout]]) -> Results:
    """Every row, round after round; the table rewritten after each round with --out."""
    results: Results = defaultdict(Cell)
    for r in range(args.rounds):
        for key in cells:
            env_id, n, layout = key
            raw = measure_raw(env_id, n, layout, args.raw_steps or args.steps_per_epoch, args.seed)
            results[key].raw.append(raw)
            print(f"round {r + 1}/{args.rounds} {env_id} n={n} {layout.label}: raw {raw.rate:,.0f}/s "
                  f"({raw.cores:.2f} cores)", flush=True)
            for algorithm in args.algorithms:
                fit = measure_fit(fit_overrides(args, env_id, n, layout, algorithm))
                results[key].fits[algorithm].append(fit)
                print(f"    {algorithm}: rollout {fit.rollout_rate:,.0f}/s ({fit.rollout_cores:.2f} cores), "
                      f"train {fit.train_rate:,.0f}/s ({fit.train_cores:.2f} cores), "
                      f"update {fit.update_s:.2f} s, fit ran {fit.layout_seen} "
                      f"(rollout window {args.steps_per_epoch / fit.rollout_rate:.2f} s, collector's own "
                      f"{fit.rollout_s:.2f} s)", flush=True)
        if args.out:
            write(args, results, partial=r + 1 < args.rounds)
    return results


def run(args: argparse.Namespace) -> int:
    """`kfcpo bench throughput`: check, measure, print the table (and write it with --out)."""
    cells = check(args)
    print(f"{len(cells)} rows x {len(args.algorithms)} algorithm(s) x {args.rounds} round(s); {machine()}",
          flush=True)
    start = time.perf_counter()
    results = measure(args, cells)
    print("\n" + render(args, results))
    print(f"done in {time.perf_counter() - start:.0f} s" + (f"; wrote {args.out}" if args.out else ""))
    return 0
