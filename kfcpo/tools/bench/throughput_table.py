"""The markdown table of `kfcpo bench throughput`: every row, the best per env, and the
machine, code and command that measured them."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from kfcpo.envs.layout import usable_cores
from kfcpo.tools.bench.cpu_meter import can_see_children
from kfcpo.tools.provenance import code_version

if TYPE_CHECKING:  # the measurement module imports this one
    from kfcpo.tools.bench.throughput import Cell, Layout

Results = dict[tuple[str, int, "Layout"], "Cell"]
ROW_HEADER = (
    "| env | envs | layout | algorithm | raw steps/s | rollout steps/s | train steps/s "
    "| rollout/raw | train/raw | rollout/best | train/best | cores raw | cores rollout | cores train "
    "| update s/epoch |"
)
ROW_COLUMNS = 15


def _median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


def _order(item: tuple) -> tuple:
    (env_id, n, layout), _ = item
    return env_id, n, layout.sort_key()


def table(results: Results, algorithms: list[str]) -> tuple[list[str], list[str]]:
    """Every row's markdown line, and the rows whose fit ran another layout than asked."""
    best_raw: dict[str, float] = defaultdict(float)
    for (env_id, _, _), cell in results.items():
        best_raw[env_id] = max(best_raw[env_id], _median(r.rate for r in cell.raw))
    rows = [ROW_HEADER, "|" + "---|" * ROW_COLUMNS]
    mismatches = []
    for (env_id, n, layout), cell in sorted(results.items(), key=_order):
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


def _best(values: dict) -> tuple[float, str]:
    key = max(values, key=values.get)
    return values[key], f"{key[1]} envs {key[2].label}"


def summary(results: Results, algorithms: list[str]) -> list[str]:
    """Per env: the best raw, rollout and train rates and the rows that reached them."""
    lines = ["| env | best raw steps/s | best rollout (/best raw) | "
             + " | ".join(f"best train {a} (/best raw)" for a in algorithms) + " |",
             "|---|---|---|" + "---|" * len(algorithms)]
    for env_id in sorted({k[0] for k in results}):
        mine = {k: c for k, c in results.items() if k[0] == env_id}
        raw, raw_at = _best({k: _median(r.rate for r in c.raw) for k, c in mine.items()})
        first = algorithms[0]
        roll, roll_at = _best({k: _median(f.rollout_rate for f in c.fits[first]) for k, c in mine.items()
                               if c.fits.get(first)})
        cols = [f"{raw:,.0f} ({raw_at})", f"{roll:,.0f} ({roll_at}, {roll / raw:.2f})"]
        for a in algorithms:
            tr, tr_at = _best({k: _median(f.train_rate for f in c.fits[a]) for k, c in mine.items()
                               if c.fits.get(a)})
            cols.append(f"{tr:,.0f} ({tr_at}, {tr / raw:.2f})")
        lines.append(f"| {env_id.removeprefix('Safety')} | " + " | ".join(cols) + " |")
    return lines


def machine() -> str:
    """Cores, CPU model and load: what the rates depend on besides the code."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{usable_cores()} usable cores ({model or platform.processor() or '?'}), load average {load}"


def command(args: argparse.Namespace) -> str:
    """The command that measures this table again (every option, defaults included)."""
    words = ["kfcpo", "bench", "throughput", "--envs", *args.envs, "--num-envs", *map(str, args.num_envs),
             "--layouts", *args.layouts, "--algorithms", *args.algorithms,
             "--steps-per-epoch", str(args.steps_per_epoch), "--epochs", str(args.epochs),
             "--raw-steps", str(args.raw_steps), "--rounds", str(args.rounds), "--seed", str(args.seed)]
    return shlex.join([*words, *(["--out", args.out] if args.out else []), *args.overrides])


def render(args: argparse.Namespace, results: Results, partial: bool = False) -> str:
    """The whole markdown file: header, best per env, every row, notes."""
    rows, mismatches = table(results, args.algorithms)
    lines = [
        "# Rollout and training throughput" + (" (partial: rounds still running)" if partial else ""),
        "",
        f"Command: `{command(args)}`  ",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; code: {code_version()}  ",
        f"Machine: {machine()}  ",
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


def write(args: argparse.Namespace, results: Results, partial: bool = False) -> None:
    """Write the markdown to --out (its folder made if needed)."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(args, results, partial))
