"""`kfcpo plot` on real (tiny) training runs: grouping, aggregation, the PNG."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import yaml
from helpers import GOAL

from kfcpo.cli import main as kfcpo
from kfcpo.run.history import Run, group_runs, load_runs
from kfcpo.tools import plot

# Hopper's episodes end within tens of steps under a fresh policy, so every epoch has a
# finished episode (PointGoal1's last 1000 steps: its return would be NaN until then).
TASK = "SafetyHopperVelocity-v1"
TINY = [
    f"env.id={TASK}",
    "steps_per_epoch=250",
    "total_steps=500",  # two epochs: a line, not a point
    "env.num_envs=1",
    "env.vector=sync",
    "update_iters=1",
    "model.critic_iters=1",
    "logger.wandb.mode=disabled",
]



@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real seeds of one algorithm, and copies posing as another algorithm and env."""
    root = tmp_path_factory.mktemp("plot")
    for seed in (0, 1):
        assert kfcpo(["fit", "--config", GOAL, *TINY, f"seed={seed}", f"out_dir={root / f's{seed}'}"]) == 0
    for name, key, value in (("other_algo", "algorithm", "kfcpo"), ("other_env", "env", None)):
        shutil.copytree(root / "s0", root / name, ignore=shutil.ignore_patterns("checkpoints"))
        cfg = yaml.safe_load((root / name / "config.yaml").read_text())
        if key == "env":
            cfg["env"]["id"] = "SafetyPointButton1-v0"
        else:
            cfg[key] = value
        (root / name / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root


def metric_at(run: Path, step: float, key: str) -> float:
    with open(run / "metrics.csv") as f:
        return next(float(r[key]) for r in csv.DictReader(f) if float(r["time/env_steps"]) == step)


@pytest.mark.slow
def test_two_seeds_of_one_algorithm_are_one_group(runs: Path) -> None:
    loaded = load_runs([runs / "s0", runs / "s1"])
    groups = group_runs(loaded)
    assert list(groups) == [TASK]
    assert list(groups[TASK]) == ["ppo_lag"]
    assert [r.seed for r in groups[TASK]["ppo_lag"]] == [0, 1]
    assert loaded[0].steps.tolist() == [250.0, 500.0]

    everything = group_runs(load_runs([runs]))  # a parent folder finds all four
    assert {env: sorted(g) for env, g in everything.items()} == {
        "SafetyPointButton1-v0": ["ppo_lag"],
        TASK: ["kfcpo", "ppo_lag"],
    }
    by_key = group_runs(loaded, group_by=["algorithm", "seed"])
    assert sorted(by_key[TASK]) == ["ppo_lag/0", "ppo_lag/1"]


@pytest.mark.slow
def test_group_curve_is_the_mean_of_the_seeds(runs: Path) -> None:
    members = load_runs([runs / "s0", runs / "s1"])
    grid, mean, low, high = plot.aggregate(members, "episode/return")
    assert grid[0] == 250.0 and grid[-1] == 500.0 and len(grid) == plot.GRID_POINTS
    values = [metric_at(runs / s, 500.0, "episode/return") for s in ("s0", "s1")]
    assert mean[-1] == pytest.approx(np.mean(values))
    assert low[-1] == pytest.approx(min(values)) and high[-1] == pytest.approx(max(values))


@pytest.mark.slow
def test_cli_writes_a_png_of_the_expected_size(runs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "figs" / "curves.png"
    args = [str(runs / "s0"), str(runs / "s1"), str(runs / "other_env"), "-o", str(out)]
    assert kfcpo(["plot", *args, "--cost-limit", "10"]) == 0
    assert "3 runs ->" in capsys.readouterr().out
    assert out.stat().st_size > 10_000
    image = mpimg.imread(out)
    width, height = plot.PANEL_SIZE
    rows = 2  # one per env
    assert image.shape[:2] == (round(height * rows * plot.DPI), round(width * 2 * plot.DPI))
    assert image[..., :3].std() > 0.05  # something drawn, not a blank canvas


def test_aggregate_interpolates_on_the_shared_steps() -> None:
    def run(steps: list[float], ret: list[float], seed: int):
        cfg = {"algorithm": "a", "env": {"id": "E"}, "seed": seed, "cost_limit": 5.0}
        metrics = {"episode/return": np.array(ret), "episode/cost": np.array(ret) * 0}
        return Run(Path("."), cfg, np.array(steps), metrics)

    a = run([0, 100, 200], [0.0, 10.0, 20.0], 0)
    b = run([50, 150, 250], [5.0, 5.0, np.nan], 1)  # a NaN row is skipped, not spread
    grid, mean, low, high = plot.aggregate([a, b], "episode/return")
    assert grid[0] == 50 and grid[-1] == 150  # only the steps both runs cover
    assert mean[0] == pytest.approx((5.0 + 5.0) / 2) and mean[-1] == pytest.approx((15.0 + 5.0) / 2)
    _, _, lo_std, hi_std = plot.aggregate([a, b], "episode/return", band="std")
    assert hi_std[-1] - lo_std[-1] == pytest.approx(2 * np.std([15.0, 5.0], ddof=1))  # sample std
    assert low[-1] == 5.0 and high[-1] == 15.0


def test_not_a_run_folder_is_one_line_error(tmp_path: Path, capsys) -> None:
    assert kfcpo(["plot", str(tmp_path / "nope"), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kfcpo: error: ")
    assert not (tmp_path / "x.png").exists()


def test_trailing_mean_by_hand() -> None:
    values = np.array([1.0, 3.0, np.nan, 8.0, 2.0])
    # window 2: [1], [1, 3], [3, nan], [nan, 8], [8, 2]
    np.testing.assert_allclose(plot.trailing_mean(values, 2), [1.0, 2.0, 3.0, 8.0, 5.0])
    np.testing.assert_allclose(plot.trailing_mean(values, 3), [1.0, 2.0, 2.0, 5.5, 5.0])
    assert plot.trailing_mean(values, 1) is values  # 1 = raw
    assert np.isnan(plot.trailing_mean(np.array([np.nan, np.nan]), 2)).all()


def test_smoothed_aggregate_averages_each_run_before_the_seeds() -> None:
    cfg = {"algorithm": "a", "env": {"id": "E"}, "seed": 0, "cost_limit": 5.0}
    steps = np.array([100.0, 200.0, 300.0])
    a = Run(Path("."), cfg, steps, {"episode/return": np.array([0.0, 10.0, 20.0])})
    b = Run(Path("."), {**cfg, "seed": 1}, steps, {"episode/return": np.array([4.0, 4.0, 10.0])})
    _, mean, low, high = plot.aggregate([a, b], "episode/return", smooth=2)
    # a: 0, 5, 15; b: 4, 4, 7 -> means 2, 4.5, 11 at the grid's ends
    assert mean[0] == pytest.approx(2.0) and mean[-1] == pytest.approx(11.0)
    assert (low[-1], high[-1]) == (7.0, 15.0)


@pytest.mark.parametrize("bad", ["0", "-3", "x"])
def test_bad_smooth_is_one_line_error(tmp_path: Path, capsys, bad: str) -> None:
    code = None
    try:
        code = kfcpo(["plot", str(tmp_path), "-o", str(tmp_path / "x.png"), "--smooth", bad])
    except SystemExit as exit_:  # argparse rejects a non-integer itself
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("kfcpo: error: ") and "smooth" in err[-1]
    assert not (tmp_path / "x.png").exists()
