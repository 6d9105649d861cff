"""`kfcpo benchmark` on real (tiny) runs: the table, the curves, skipping, resuming, failures."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from helpers import ROOT

from kfcpo.cli import EXIT_CONFIG, parse_args
from kfcpo.cli import main as kfcpo
from kfcpo.run.history import Run
from kfcpo.run.layout import METRICS_FILE
from kfcpo.run.metrics import PRIOR_METRICS_FILE, merge_prior_metrics, reached_steps
from kfcpo.tools.benchmark import EXIT_FAILED
from kfcpo.tools.grid import LOG_FILE
from kfcpo.tools.results import TABLE_HEADER, clip_to_budget, final_value, mean_std, second_half

ENV = "SafetyPointGoal1-v0"
TINY = ["env.num_envs=1", "env.vector=sync", "update_iters=1", "model.critic_iters=1"]
EPOCH = 500  # env steps per epoch; the benchmark's budget is two epochs



@dataclass
class Invocation:
    code: int
    out: str
    err: str


def invoke(args: list[str]) -> Invocation:
    """`kfcpo benchmark` in this process, its stdout and stderr captured (its threads' too)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = kfcpo(["benchmark", *args])
    return Invocation(code, out.getvalue(), err.getvalue())


def bench_args(root: Path, seeds: list[str]) -> list[str]:
    return [
        "--algorithms", "ppo_lag", "--envs", ENV, "--seeds", *seeds, "--total-steps", str(2 * EPOCH),
        "--steps-per-epoch", str(EPOCH), "--jobs", "2", "--runs-dir", str(root / "runs"),
        "--out", str(root / "out"), *TINY,
    ]


def run_dir(root: Path, seed: int) -> Path:
    return root / "runs" / ENV / "ppo_lag" / f"seed{seed}"


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (root / "runs").rglob("*") if p.is_file()}


@dataclass
class Bench:
    root: Path
    interrupted_rows: list[dict[str, str]]  # seed 1's metrics before the benchmark
    first: Invocation
    second: Invocation
    mtimes_before_second: dict[Path, int]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    """Seed 1 stopped after one epoch of two (as if killed), then the benchmark twice."""
    root = tmp_path_factory.mktemp("bench")
    interrupted = run_dir(root, 1)
    assert kfcpo([
        "fit", "algorithm=ppo_lag", f"env.id={ENV}", "seed=1", f"total_steps={EPOCH}",
        f"steps_per_epoch={EPOCH}", *TINY, "logger.wandb.mode=disabled", f"out_dir={interrupted}",
    ]) == 0
    rows = read_metrics(interrupted)
    first = invoke(bench_args(root, ["0", "1"]))
    before = mtimes(root)
    second = invoke(bench_args(root, ["0", "1"]))
    return Bench(root, rows, first, second, before)


SEEDS_COLUMN = TABLE_HEADER.index("seeds")


def table_rows(results: Path) -> list[list[str]]:
    lines = [line for line in results.read_text().splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


@pytest.mark.slow
def test_results_table_and_curves(bench: Bench) -> None:
    assert bench.first.code == 0, bench.first.err
    header, rule, *rows = table_rows(bench.root / "out" / "results.md")
    assert tuple(header) == TABLE_HEADER
    assert len(rule) == len(header)
    assert len(rows) == 1
    env, algorithm, ret, cost, half_ret, half_cost, seeds, met = rows[0]
    assert (env, algorithm, seeds) == (ENV, "ppo_lag", "2")
    # final = the last 10% of two epochs = the last epoch; mean ± sample std over the two seeds
    finals = {k: [float(read_metrics(run_dir(bench.root, s))[-1][k]) for s in (0, 1)]
              for k in ("episode/return", "episode/cost")}
    assert ret == f"{np.mean(finals['episode/return']):.2f} ± {np.std(finals['episode/return'], ddof=1):.2f}"
    assert cost == f"{np.mean(finals['episode/cost']):.2f} ± {np.std(finals['episode/cost'], ddof=1):.2f}"
    # the 2nd half of two epochs is the last one too: the same values as the final ones
    assert (half_ret, half_cost) == (ret, cost)
    assert met == ("yes (≤ 25)" if np.mean(finals["episode/cost"]) <= 25 else "no (> 25)")
    text = (bench.root / "out" / "results.md").read_text()
    assert "Command: `kfcpo benchmark --algorithms ppo_lag --envs SafetyPointGoal1-v0" in text
    assert "Date: " in text
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False)
    # the commit the runs recorded in their config.yaml (this checkout's), then the report's
    short = head.stdout.strip()
    expected = f"Code: runs made at git commit {short}" if head.returncode == 0 else "(not a git checkout)"
    assert expected in text

    curves = bench.root / "out" / "curves.png"
    assert curves.stat().st_size > 10_000
    assert mpimg.imread(curves)[..., :3].std() > 0.05  # something drawn


@pytest.mark.slow
def test_second_invocation_skips_complete_runs(bench: Bench) -> None:
    assert bench.second.code == 0, bench.second.err
    for seed in (0, 1):
        assert f"skip    {ENV}/ppo_lag/seed{seed} (complete: 1000 steps)" in bench.second.out
    assert "start " not in bench.second.out and "resume " not in bench.second.out
    assert mtimes(bench.root) == bench.mtimes_before_second  # no run folder touched
    assert table_rows(bench.root / "out" / "results.md")[2][SEEDS_COLUMN] == "2"


@pytest.mark.slow
def test_incomplete_run_is_resumed_not_restarted(bench: Bench) -> None:
    resumed = run_dir(bench.root, 1)
    assert f"resume  {ENV}/ppo_lag/seed1 from {resumed / 'checkpoints' / 'last.ckpt'}" in bench.first.out
    assert f"start   {ENV}/ppo_lag/seed0" in bench.first.out
    rows = read_metrics(resumed)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert [float(r["time/env_steps"]) for r in rows] == [500.0, 1000.0]
    # Epoch 0 is the interrupted attempt's own row (timings included), not a re-run of it.
    def filled(row: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in row.items() if v}

    assert filled(rows[0]) == filled(bench.interrupted_rows[0])
    log = (resumed / LOG_FILE).read_text()
    assert "kfcpo benchmark: resume from" in log and "fresh start" not in log
    assert "Restoring states from the checkpoint" in log
    assert not (resumed / PRIOR_METRICS_FILE).exists()
    assert "fresh start" in (run_dir(bench.root, 0) / LOG_FILE).read_text()


@pytest.mark.slow
def test_failed_run_is_reported_and_the_rest_tabled(bench: Bench, tmp_path: Path) -> None:
    shutil.copytree(bench.root / "runs", tmp_path / "runs")
    broken = run_dir(tmp_path, 2) / "checkpoints" / "last.ckpt"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"PK\x03\x04 not really a checkpoint")
    result = invoke(bench_args(tmp_path, ["0", "1", "2"]))
    assert result.code == EXIT_FAILED
    assert f"{ENV}/ppo_lag/seed2: exit code 2" in result.err
    assert "is not a readable checkpoint" in result.err  # the end of its log
    assert table_rows(tmp_path / "out" / "results.md")[2][SEEDS_COLUMN] == "2"  # seeds 0 and 1
    assert (tmp_path / "out" / "curves.png").is_file()


@pytest.mark.slow
def test_report_tables_complete_runs_and_starts_none(bench: Bench, tmp_path: Path) -> None:
    shutil.copytree(bench.root / "runs", tmp_path / "runs")
    before = mtimes(tmp_path)
    args = bench_args(tmp_path, ["0", "1", "2"])
    args[1:2] = ["ppo_lag", "kfcpo"]
    result = invoke([*args, "--report"])
    assert result.code == 0, result.err
    assert "start " not in result.out and "resume " not in result.out
    assert f"missing {ENV}/ppo_lag/seed2 (0 of 1000 steps)" in result.out
    assert f"missing {ENV}/kfcpo/seed0 (0 of 1000 steps)" in result.out
    assert mtimes(tmp_path) == before and not (tmp_path / "runs" / ENV / "kfcpo").exists()
    rows = table_rows(tmp_path / "out" / "results.md")[2:]
    assert [(r[1], r[SEEDS_COLUMN]) for r in rows] == [("ppo_lag", "2"), ("kfcpo", "0")]
    text = (tmp_path / "out" / "results.md").read_text()
    assert "Command: `kfcpo benchmark --algorithms ppo_lag kfcpo " in text
    assert "--report" not in text
    assert (tmp_path / "out" / "curves.png").is_file()


def test_a_key_the_tool_sets_is_refused(tmp_path: Path) -> None:
    result = invoke([*bench_args(tmp_path, ["0"]), "seed=3"])
    assert result.code == EXIT_CONFIG
    err = result.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kfcpo: error: override 'seed=3': ")
    assert not (tmp_path / "runs").exists()


def test_overrides_may_stand_anywhere() -> None:
    args = parse_args(["benchmark", "update_iters=1", "--algorithms", "a", "b", "--seeds", "0", "1",
                       "model.critic_iters=1", "--total-steps", "10"])
    assert args.algorithms == ["a", "b"] and args.seeds == [0, 1] and args.total_steps == 10
    assert args.overrides == ["update_iters=1", "model.critic_iters=1"]


def test_a_flag_value_with_an_equals_sign_is_the_flags() -> None:
    args = parse_args(["benchmark", "--algorithms", "a", "--out", "out=1", "seed_like=2", "--runs-dir", "r=2",
                       "--total-steps", "10", "--report"])
    assert args.out == "out=1" and args.runs_dir == "r=2" and args.report
    assert args.overrides == ["seed_like=2"]


def synthetic_run(ret: list[float], steps: list[float] | None = None):
    steps = steps or [100.0 * (i + 1) for i in range(len(ret))]
    metrics = {"episode/return": np.array(ret), "episode/cost": np.zeros(len(ret))}
    cfg = {"algorithm": "a", "env": {"id": "E"}, "seed": 0, "cost_limit": 5.0}
    return Run(Path("."), cfg, np.array(steps), metrics)


def test_final_value_is_the_mean_of_the_last_tenth_of_epochs() -> None:
    ret = [float(i) for i in range(20)]
    assert final_value(synthetic_run(ret), "episode/return") == pytest.approx((18 + 19) / 2)
    assert final_value(synthetic_run(ret[:15]), "episode/return") == pytest.approx((13 + 14) / 2)  # ceil
    assert final_value(synthetic_run([1.0, 2.0, 3.0]), "episode/return") == 3.0  # at least one epoch
    assert final_value(synthetic_run([*ret[:18], 7.0, math.nan]), "episode/return") == 7.0
    assert math.isnan(final_value(synthetic_run([1.0, math.nan]), "episode/return"))


def test_second_half_is_the_mean_of_the_last_half_of_epochs() -> None:
    ret = [float(i) for i in range(20)]
    assert second_half(synthetic_run(ret), "episode/return") == pytest.approx(sum(range(10, 20)) / 10)
    assert second_half(synthetic_run(ret[:5]), "episode/return") == pytest.approx((2 + 3 + 4) / 3)  # ceil
    assert second_half(synthetic_run([*ret[:19], math.nan]), "episode/return") == pytest.approx(
        sum(range(10, 19)) / 9)


def test_seed_spread_is_the_sample_std() -> None:
    assert mean_std([1.0, 2.0, 6.0]) == f"3.00 ± {np.std([1.0, 2.0, 6.0], ddof=1):.2f}"
    assert mean_std([4.0]) == "4.00"  # one seed: no spread


def test_a_longer_run_is_cut_at_the_budget() -> None:
    run = clip_to_budget(synthetic_run([1.0, 2.0, 3.0, 4.0]), 250)
    assert run.steps.tolist() == [100.0, 200.0, 300.0]  # the epoch that reached 250 ends it
    assert run.metrics["episode/return"].tolist() == [1.0, 2.0, 3.0]


def test_stashed_rows_are_merged_by_epoch(tmp_path: Path) -> None:
    def write(name: str, rows: list[dict[str, str]]) -> None:
        with open(tmp_path / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    write(PRIOR_METRICS_FILE, [{"epoch": "0", "env_steps": "5", "x": "a"},
                               {"epoch": "1", "env_steps": "10", "x": "stale"}])
    write(METRICS_FILE, [{"epoch": "1", "env_steps": "10", "x": "b"},
                         {"epoch": "2", "env_steps": "15", "x": "c"}])
    merge_prior_metrics(tmp_path)
    assert [r["x"] for r in read_metrics(tmp_path)] == ["a", "b", "c"]
    assert not (tmp_path / PRIOR_METRICS_FILE).exists()
    assert reached_steps(tmp_path) == 15.0


def test_a_bad_override_stops_before_any_run(tmp_path: Path) -> None:
    result = invoke([*bench_args(tmp_path, ["0"]), "no_such_key=1"])
    assert result.code == EXIT_CONFIG
    err = result.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kfcpo: error: ") and "no_such_key" in err[0]
    assert not (tmp_path / "runs").exists()


def test_a_queued_run_says_start_when_it_starts(tmp_path: Path, monkeypatch, capsys) -> None:
    """With one job the second run starts after the first is done, and its progress line
    says so then, not when it is queued (the fit processes are stood in for: no env here)."""
    from kfcpo.tools import grid

    spec = grid.GridSpec(algorithms=("ppo_lag",), envs=(ENV,), seeds=(0, 1), total_steps=1000,
                         out=tmp_path / "out", runs_dir=tmp_path / "runs")
    started: list[str] = []

    def fake_fit(cmd, **kwargs):
        started.append(next(a for a in cmd if a.startswith("seed=")))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(grid.subprocess, "run", fake_fit)
    assert grid.run_grid(spec, spec.runs(), jobs=1) == []
    assert started == ["seed=0", "seed=1"]
    lines = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    names = [f"{ENV}/ppo_lag/seed{s}" for s in (0, 1)]
    assert lines == [["start", names[0]], ["done", names[0]], ["start", names[1]], ["done", names[1]]]
