"""Ablations: named variants (an algorithm preset plus overrides) x seeds on one task, run
through tools/benchmark.py (so they skip complete runs and resume interrupted ones), then
one table per study with final return and cost, rollback rate and w_c, and curves.

Usage: python tools/ablations.py STUDY.yaml [--out DIR] [--runs-dir DIR] [--report] [--only NAME ...]

STUDY.yaml:
    env: SafetyPointCircle1-v0
    total_steps: 200000
    steps_per_epoch: 20000
    num_envs: 4
    seeds: [0, 1, 2]
    variants:                       # name -> preset and overrides
      kfcpo: {algorithm: kfcpo}
      kfcpo_mb128: {algorithm: kfcpo, overrides: [minibatch_size=128], why: "..."}
    studies:                        # title -> the variants compared in one table
      "Whole-rollout directions": [kfcpo, kfcpo_mb128]

Writes OUT/ablations.md (every study's table, the command, the code commit) and
OUT/<study>.png (return and cost curves, mean and std band over seeds).
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark
from plot import Run, load_runs, plot_runs

PROG = "tools/ablations.py"
# Per-epoch diagnostics reported beside return and cost: mean over all epochs of a run.
DIAGNOSTICS = ("rollback_frac", "w_c")
HEADER = ("variant", "what changes", "final return", "final cost", "return, 2nd half", "cost, 2nd half",
          "seeds", "rollback rate", "w_c")
# Per-epoch costs swing by tens between epochs, and "final" at 200k steps is one epoch: the
# mean over the second half of the epochs is reported beside it as the steadier measure.
HALF = 0.5


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", help="the ablation spec (YAML)")
    parser.add_argument("--out", help="folder for ablations.md and curves (default: the spec's folder)")
    parser.add_argument("--runs-dir", default="runs/ablations", help="folder of the run folders")
    parser.add_argument("--report", action="store_true", help="start no run; tables from complete runs")
    parser.add_argument("--only", nargs="+", help="run only these variants (tables use all complete runs)")
    return parser.parse_args(argv)


def run_variant(spec: dict, name: str, runs_dir: Path, report: bool) -> int:
    variant = spec["variants"][name]
    argv = [
        "--algorithms", variant["algorithm"], "--envs", spec["env"],
        "--seeds", *map(str, spec["seeds"]), "--total-steps", str(spec["total_steps"]),
        "--steps-per-epoch", str(spec["steps_per_epoch"]), "--num-envs", str(spec["num_envs"]),
        "--jobs", "1", "--runs-dir", str(runs_dir / name), "--out", str(runs_dir / name / "report"),
        *(["--report"] if report else []), *variant.get("overrides", []),
    ]
    print(f"{PROG}: variant {name}", flush=True)
    return benchmark.main(argv)


def variant_runs(spec: dict, name: str, runs_dir: Path) -> list[Run]:
    root = runs_dir / name / spec["env"] / spec["variants"][name]["algorithm"]
    total = int(spec["total_steps"])
    dirs = [root / f"seed{s}" for s in spec["seeds"] if benchmark.is_complete(root / f"seed{s}", total)]
    runs = [benchmark.clip_to_budget(r, total) for r in load_runs(dirs)] if dirs else []
    for run in runs:
        run.config["variant"] = name
    return runs


def mean_over_epochs(run: Run, metric: str) -> float:
    values = run.metrics.get(metric)
    if values is None:
        return math.nan
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else math.nan


def second_half(run: Run, metric: str) -> float:
    values = run.metrics[metric][len(run.steps) - max(1, math.ceil(HALF * len(run.steps))):]
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else math.nan


def row(spec: dict, name: str, runs: list[Run]) -> tuple[str, ...]:
    what = spec["variants"][name].get("why") or " ".join(spec["variants"][name].get("overrides", [])) or "–"
    if not runs:
        return (name, what, "–", "–", "–", "–", "0", "–", "–")
    returns = [benchmark.final_value(r, "ep_ret") for r in runs]
    costs = [benchmark.final_value(r, "ep_cost") for r in runs]
    halves = [benchmark.mean_std([second_half(r, m) for r in runs]) for m in ("ep_ret", "ep_cost")]
    diags = []
    for metric in DIAGNOSTICS:
        values = [mean_over_epochs(r, metric) for r in runs]
        diags.append("–" if all(math.isnan(v) for v in values) else f"{np.nanmean(values):.2f}")
    finals = (benchmark.mean_std(returns), benchmark.mean_std(costs))
    return (name, what, *finals, *halves, str(len(runs)), *diags)


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def write_report(spec: dict, runs_dir: Path, out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    by_variant = {name: variant_runs(spec, name, runs_dir) for name in spec["variants"]}
    lines = [
        "# Ablations",
        "",
        f"{spec['env']}, {int(spec['total_steps']):,} env steps per run, {spec['steps_per_epoch']:,} "
        f"per epoch, {spec['num_envs']} envs, seeds {', '.join(map(str, spec['seeds']))}. Final = a "
        f"run's mean over its last {benchmark.FINAL_FRACTION:.0%} of epochs, 2nd half over the last "
        f"{HALF:.0%}; mean ± std over seeds. "
        "Rollback rate and w_c: mean over all epochs and seeds.",
    ]
    for title, names in spec["studies"].items():
        lines += ["", f"## {title}", "", "| " + " | ".join(HEADER) + " |",
                  "|" + "|".join(["---"] * 2 + ["---:"] * (len(HEADER) - 2)) + "|"]
        lines += ["| " + " | ".join(row(spec, n, by_variant[n])) + " |" for n in names]
        runs = [r for n in names for r in by_variant[n]]
        if runs:
            figure = plot_runs(runs, out / f"{slug(title)}.png", band="std", group_by=("variant",),
                               title=f"{title}: mean over seeds, band ± std")
            lines += ["", f"![{title}]({figure.name})"]
    lines += ["", f"Command: `{command}`", "", f"Code: {benchmark.code_version()}", "",
              f"Date: {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"]
    report = out / "ablations.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    spec = yaml.safe_load(Path(args.spec).read_text())
    unknown = [n for names in spec["studies"].values() for n in names if n not in spec["variants"]]
    unknown += [n for n in args.only or [] if n not in spec["variants"]]
    if unknown:
        print(f"{PROG}: error: unknown variant(s) {', '.join(sorted(set(unknown)))}; "
              f"valid: {', '.join(spec['variants'])}", file=sys.stderr)
        return benchmark.EXIT_CONFIG
    runs_dir = Path(args.runs_dir)
    codes = [run_variant(spec, n, runs_dir, args.report) for n in (args.only or spec["variants"])]
    command = shlex.join(["python", PROG, *(a for a in argv if a != "--report")])
    report = write_report(spec, runs_dir, Path(args.out or Path(args.spec).parent), command)
    print(f"wrote {report}")
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main())
