"""Rollout and training throughput of `kfcpo fit` against the raw env rate, layout by layout.

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
env is `async:1`). The first epoch of each fit (env start-up) is not timed.

  # the whole table (roughly 45 minutes on 2 cores with the defaults):
  .venv/bin/python tools/bench_throughput.py --out docs/results/throughput.md
  # a quick check:
  .venv/bin/python tools/bench_throughput.py --envs SafetyPointCircle1-v0 --num-envs 2 \\
      --layouts sync async:2 --algorithms kfcpo --steps-per-epoch 400 --epochs 2 --rounds 1

It also runs on a checkout from before the worker pool (no `workers` argument): there
every async layout is gymnasium's AsyncVectorEnv, one process per env, labelled `async:n`.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import lightning.pytorch as pl
import torch
from gymnasium.vector import SyncVectorEnv

from kfcpo.config import load_config
from kfcpo.envs import make_vector_env
from kfcpo.module import SafeRLModule
from kfcpo.train import build_trainer

sys.path.insert(0, str(Path(__file__).parent))
from cpu_meter import CpuMeter, Window, can_see_children

ROOT = Path(__file__).resolve().parents[1]
ENVS = ["SafetyPointGoal1-v0", "SafetyPointButton1-v0", "SafetyPointCircle1-v0"]
# A checkout from before the worker pool has no `workers`: async is one process per env.
HAS_POOL = "workers" in inspect.signature(make_vector_env).parameters


# ------------------------------------------------------------------ layouts
@dataclass(frozen=True)
class Layout:
    vector: str  # sync | async
    workers: int = 0  # async: worker processes (resolved: >= 1)

    def sort_key(self) -> tuple[bool, int]:
        return self.vector != "sync", self.workers

    @property
    def label(self) -> str:
        return "sync" if self.vector == "sync" else f"async:{self.workers}"


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve(spec: str, num_envs: int) -> Layout:
    """`sync`, `async:W`, `async:n` or `async:0` for `num_envs` envs, as the factory
    resolves it (at most one worker per env; 0 = one per usable core)."""
    if spec == "sync":
        return Layout("sync")
    vector, _, count = spec.partition(":")
    if vector != "async" or not (count == "n" or count.isdigit()):
        raise argparse.ArgumentTypeError(f"layout {spec!r}: expected sync, async:W, async:n or async:0")
    if not HAS_POOL or count == "n":
        return Layout("async", num_envs)
    wanted = int(count) or usable_cores()
    return Layout("async", max(1, min(wanted, num_envs)))


def layout_of(venv) -> str:
    """The layout a built vector env really has (fit builds its own)."""
    inner = getattr(venv, "env", venv)
    if isinstance(inner, SyncVectorEnv):
        return "sync"
    return f"async:{getattr(inner, 'workers', inner.num_envs)}"


def vector_kwargs(layout: Layout) -> dict:
    kwargs: dict = {"vector": layout.vector}
    if HAS_POOL and layout.vector == "async":
        kwargs["workers"] = layout.workers
    return kwargs


def layout_overrides(layout: Layout) -> list[str]:
    out = [f"env.vector={layout.vector}"]
    if HAS_POOL and layout.vector == "async":
        out.append(f"env.workers={layout.workers}")
    return out


# ------------------------------------------------------------------ measurements
@dataclass
class Raw:
    rate: float
    cores: float


@dataclass
class Fit:
    rollout_rate: float
    rollout_cores: float
    train_rate: float
    train_cores: float
    update_s: float
    layout_seen: str
    rollout_s: float  # the collector's own rollout seconds (the window should match it)


def measure_raw(env_id: str, num_envs: int, layout: Layout, steps: int, seed: int) -> Raw:
    venv = make_vector_env(env_id, num_envs, seed=seed, **vector_kwargs(layout))
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

    def on_train_start(self, trainer, module) -> None:
        collector = getattr(module, "collector", None)
        if collector is not None:
            self.layout_seen = layout_of(collector.envs)

    def on_train_epoch_start(self, trainer, module) -> None:
        self._epoch_meter.start()
        self._rollout_meter.start()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.rollout.append(self._rollout_meter.stop())

    def on_train_epoch_end(self, trainer, module) -> None:
        self.epoch.append(self._epoch_meter.stop())
        metrics = trainer.callback_metrics
        self.update_s.append(float(metrics["update_s"]) + float(metrics.get("critic_s", 0.0)))
        self.rollout_s.append(float(metrics.get("rollout_s", float("nan"))))


def measure_fit(env_id: str, num_envs: int, layout: Layout, algorithm: str, steps_per_epoch: int,
                epochs: int, seed: int, extra: list[str]) -> Fit:
    overrides = [
        f"algorithm={algorithm}", f"env.id={env_id}", f"env.num_envs={num_envs}",
        *layout_overrides(layout), f"steps_per_epoch={steps_per_epoch}",
        f"total_steps={steps_per_epoch * epochs}", f"seed={seed}", "logger.wandb.mode=disabled",
        f"checkpoint.every_n_epochs={epochs}", *extra,
    ]
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
    return Fit(
        rollout_rate=steps_per_epoch / statistics.mean(w.wall_s for w in rollout),
        rollout_cores=statistics.mean(w.cores for w in rollout),
        train_rate=steps_per_epoch / statistics.mean(w.wall_s for w in epoch),
        train_cores=statistics.mean(w.cores for w in epoch),
        update_s=statistics.mean(meter.update_s[1:]),
        layout_seen=meter.layout_seen,
        rollout_s=statistics.mean(meter.rollout_s[1:]),
    )


# ------------------------------------------------------------------ the run
@dataclass
class Cell:
    raw: list[Raw] = field(default_factory=list)
    fits: dict[str, list[Fit]] = field(default_factory=lambda: defaultdict(list))


def cells_of(args: argparse.Namespace) -> list[tuple[str, int, Layout]]:
    out = []
    for env_id in args.envs:
        for n in args.num_envs:
            layouts = sorted({resolve(spec, n) for spec in args.layouts}, key=Layout.sort_key)
            out += [(env_id, n, layout) for layout in layouts]
    return out


def run(args: argparse.Namespace, extra: list[str]) -> dict[tuple[str, int, Layout], Cell]:
    results: dict[tuple[str, int, Layout], Cell] = defaultdict(Cell)
    cells = cells_of(args)
    for r in range(args.rounds):
        for key in cells:
            env_id, n, layout = key
            raw = measure_raw(env_id, n, layout, args.raw_steps or args.steps_per_epoch, args.seed)
            results[key].raw.append(raw)
            print(f"round {r + 1}/{args.rounds} {env_id} n={n} {layout.label}: raw {raw.rate:,.0f}/s "
                  f"({raw.cores:.2f} cores)", flush=True)
            for algorithm in args.algorithms:
                fit = measure_fit(env_id, n, layout, algorithm, args.steps_per_epoch, args.epochs,
                                  args.seed, extra)
                results[key].fits[algorithm].append(fit)
                print(f"    {algorithm}: rollout {fit.rollout_rate:,.0f}/s ({fit.rollout_cores:.2f} cores), "
                      f"train {fit.train_rate:,.0f}/s ({fit.train_cores:.2f} cores), "
                      f"update {fit.update_s:.2f} s, fit ran {fit.layout_seen} "
                      f"(rollout window {args.steps_per_epoch / fit.rollout_rate:.2f} s, collector's own "
                      f"{fit.rollout_s:.2f} s)", flush=True)
        if args.out:
            write(args, results, partial=r + 1 < args.rounds)
    return results


# ------------------------------------------------------------------ the table
def _median(xs) -> float:
    return statistics.median(list(xs))


def table(results: dict[tuple[str, int, Layout], Cell], algorithms: list[str]) -> tuple[list[str], list[str]]:
    best_raw: dict[str, float] = defaultdict(float)
    for (env_id, _, _), cell in results.items():
        best_raw[env_id] = max(best_raw[env_id], _median(r.rate for r in cell.raw))
    rows = [
        "| env | envs | layout | algorithm | raw steps/s | rollout steps/s | train steps/s "
        "| rollout/raw | train/raw | rollout/best | train/best | cores raw | cores rollout | cores train "
        "| update s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    mismatches = []
    def order(item: tuple) -> tuple:
        (env_id, n, layout), _ = item
        return env_id, n, layout.sort_key()

    for (env_id, n, layout), cell in sorted(results.items(), key=order):
        raw = _median(r.rate for r in cell.raw)
        raw_cores = _median(r.cores for r in cell.raw)
        for algorithm in algorithms:
            fits = cell.fits.get(algorithm, [])
            if not fits:
                continue
            pairs = list(zip(cell.raw, fits, strict=False))  # same round
            rollout, train = _median(f.rollout_rate for f in fits), _median(f.train_rate for f in fits)
            seen = {f.layout_seen for f in fits}
            mark = "" if seen == {layout.label} else " †"
            if mark:
                mismatches.append(f"{env_id} n={n} {layout.label}: fit ran {', '.join(sorted(seen))}")
            rows.append(
                f"| {env_id.removeprefix('Safety')} | {n} | {layout.label}{mark} | {algorithm} | {raw:,.0f} "
                f"| {rollout:,.0f} | {train:,.0f} "
                f"| {_median(f.rollout_rate / r.rate for r, f in pairs):.2f} "
                f"| {_median(f.train_rate / r.rate for r, f in pairs):.2f} "
                f"| {rollout / best_raw[env_id]:.2f} | {train / best_raw[env_id]:.2f} "
                f"| {raw_cores:.2f} | {_median(f.rollout_cores for f in fits):.2f} "
                f"| {_median(f.train_cores for f in fits):.2f} | {_median(f.update_s for f in fits):.2f} |"
            )
    return rows, mismatches


def summary(results: dict[tuple[str, int, Layout], Cell], algorithms: list[str]) -> list[str]:
    """Per env: the best raw, rollout and train rates and the rows that reached them."""
    lines = ["| env | best raw steps/s | best rollout (/best raw) | "
             + " | ".join(f"best train {a} (/best raw)" for a in algorithms) + " |",
             "|---|---|---|" + "---|" * len(algorithms)]
    for env_id in sorted({k[0] for k in results}):
        mine = {k: c for k, c in results.items() if k[0] == env_id}

        def best(values: dict) -> tuple[float, str]:
            key = max(values, key=values.get)
            return values[key], f"{key[1]} envs {key[2].label}"

        raw, raw_at = best({k: _median(r.rate for r in c.raw) for k, c in mine.items()})
        first = algorithms[0]
        roll, roll_at = best({k: _median(f.rollout_rate for f in c.fits[first]) for k, c in mine.items()
                              if c.fits.get(first)})
        cols = [f"{raw:,.0f} ({raw_at})", f"{roll:,.0f} ({roll_at}, {roll / raw:.2f})"]
        for a in algorithms:
            tr, tr_at = best({k: _median(f.train_rate for f in c.fits[a]) for k, c in mine.items()
                              if c.fits.get(a)})
            cols.append(f"{tr:,.0f} ({tr_at}, {tr / raw:.2f})")
        lines.append(f"| {env_id.removeprefix('Safety')} | " + " | ".join(cols) + " |")
    return lines


def _machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{usable_cores()} usable cores ({model or platform.processor() or '?'}), load average {load}"


def _commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + (" + uncommitted changes" if dirty else "")


def render(args: argparse.Namespace, results: dict, partial: bool = False) -> str:
    rows, mismatches = table(results, args.algorithms)
    lines = [
        "# Rollout and training throughput" + (" (partial: rounds still running)" if partial else ""),
        "",
        f"Command: `python tools/bench_throughput.py {' '.join(sys.argv[1:])}`  ",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; commit {_commit()}; "
        f"{'worker pool' if HAS_POOL else 'no worker pool (async = one process per env)'}  ",
        f"Machine: {_machine()}  ",
        f"torch {torch.__version__}, {args.rounds} round(s), {args.steps_per_epoch} steps per epoch, "
        f"{args.epochs - 1} timed epoch(s) per fit, raw over {args.raw_steps or args.steps_per_epoch} steps",
        "",
        "## Best per env",
        "",
        *summary(results, args.algorithms),
        "",
        "## Every row",
        "",
        *rows,
        "",
        "raw: random actions on that vector env. rollout: the collector inside `kfcpo fit`. "
        "train: whole fit epochs. x/raw: over raw of the same row and round (median over "
        "rounds); x/best: over the best raw of that env in this run. cores: CPU seconds of the "
        "process and its env workers per wall second"
        + ("." if can_see_children() else " (live workers unseen on this OS: a lower bound)."),
    ]
    if mismatches:
        lines += ["", "† fit did not run the layout asked for (it builds its envs from the config): "
                  + "; ".join(mismatches)]
    return "\n".join(lines) + "\n"


def write(args: argparse.Namespace, results: dict, partial: bool = False) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(args, results, partial))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--envs", nargs="+", default=ENVS)
    parser.add_argument("--num-envs", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--layouts", nargs="+", default=["sync", "async:2", "async:n"],
                        help="sync | async:W | async:n (one worker per env) | async:0 (one per core)")
    parser.add_argument("--algorithms", nargs="+", default=["kfcpo", "cpo"])
    parser.add_argument("--steps-per-epoch", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per fit; the first is not timed")
    parser.add_argument("--raw-steps", type=int, default=0, help="env steps per raw measurement "
                        "(0: steps-per-epoch)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over every row, interleaved")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="markdown file to write (also after each round)")
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides for every fit")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not timed)")
    for n in args.num_envs:
        if args.steps_per_epoch % n:
            parser.error(f"--steps-per-epoch {args.steps_per_epoch} is not a multiple of {n} envs")
        for spec in args.layouts:
            try:
                resolve(spec, n)  # a bad layout fails before anything runs
            except argparse.ArgumentTypeError as err:
                parser.error(str(err))
    print(f"{len(cells_of(args))} rows x {len(args.algorithms)} algorithm(s) x {args.rounds} round(s); "
          f"{_machine()}", flush=True)
    start = time.perf_counter()
    results = run(args, args.overrides)
    print("\n" + render(args, results))
    print(f"done in {time.perf_counter() - start:.0f} s" + (f"; wrote {args.out}" if args.out else ""))


if __name__ == "__main__":
    main()
