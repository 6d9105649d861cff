"""Every baseline preset trains end to end through `kfcpo fit` on a real Safety Gymnasium
task (tiny budget), components swap by name, and nonsense compositions are refused at
validation with one line naming the key."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import yaml

from kfcpo.cli import EXIT_CONFIG, main
from kfcpo.metrics_schema import EPOCH_COLUMN, LIGHTNING_STEP_COLUMN, SCHEMA

ROOT = Path(__file__).resolve().parents[1]
GOAL = str(ROOT / "conf" / "goal.yaml")
TINY = [
    "steps_per_epoch=200",
    "total_steps=400",
    "env.num_envs=1",
    "env.vector=sync",
    "model.critic_iters=1",
    "logger.wandb.mode=disabled",
]
# Presets whose guard bounds the measured KL of the (one, full-batch) step.
LINE_SEARCH_KL = 0.01


def fit(tmp_path: Path, *overrides: str) -> tuple[list[dict[str, str]], dict]:
    out = tmp_path / "run"
    assert main(["fit", "--config", GOAL, *TINY, *overrides, f"out_dir={out}"]) == 0
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # Every column is a key of the metrics schema (or one Lightning's CSV logger adds).
    assert set(rows[0]) - {EPOCH_COLUMN, LIGHTNING_STEP_COLUMN} <= set(SCHEMA), set(rows[0]) - set(SCHEMA)
    return rows, yaml.safe_load((out / "config.yaml").read_text())


@pytest.mark.parametrize(
    ("algorithm", "parts"),
    [
        ("cpo", ("cg", "cpo", "line_search")),
        ("pcpo", ("cg", "pcpo", "line_search")),
        ("p3o", ("identity", "penalty", "early_stop")),
        ("trpo_lag", ("cg", "lagrangian", "line_search")),
        ("cppo_pid", ("identity", "lagrangian", "early_stop")),
        # ppo_lag: conf/goal.yaml's own preset, trained end to end by tests/test_fit.py
    ],
)
def test_preset_trains_end_to_end(tmp_path: Path, algorithm: str, parts: tuple[str, str, str]) -> None:
    # The PID multiplier acts only on a Jc, which needs a finished episode: PointGoal1's
    # last 1,000 steps, so its epochs here are one episode long.
    episodes = ["steps_per_epoch=1000", "total_steps=2000"] if algorithm == "cppo_pid" else []
    rows, cfg = fit(tmp_path, f"algorithm={algorithm}", *episodes)
    assert (cfg["preconditioner"]["name"], cfg["blender"]["name"], cfg["guard"]["name"]) == parts
    assert [r["epoch"] for r in rows] == ["0", "1"]
    kls = [float(r["policy/kl"]) for r in rows]
    assert all(math.isfinite(k) for k in kls) and max(kls) > 0  # the policy moved, finitely
    if parts[2] == "line_search":
        assert max(kls) <= LINE_SEARCH_KL  # one full-batch step, its KL checked on that batch
        assert all(float(r["update/policy_steps"]) == 1.0 for r in rows)
    if cfg["blender"].get("multiplier") == "pid":  # lambda = max(0, P + I + D), its terms logged
        jcs = [float(r["episode/jc"]) for r in rows]
        assert all(math.isfinite(jc) for jc in jcs)
        kp, limit = cfg["blender"]["pid_kp"], cfg["cost_limit"]
        assert [float(r["blender/pid_p"]) for r in rows] == pytest.approx([kp * (jc - limit) for jc in jcs])
        terms = [sum(float(r[f"blender/pid_{t}"]) for t in "pid") for r in rows]
        assert [float(r["blender/lagrange"]) for r in rows] == pytest.approx([max(0.0, t) for t in terms])


def test_cpo_with_kfac_curvature(tmp_path: Path) -> None:
    rows, cfg = fit(tmp_path, "algorithm=cpo", "preconditioner.name=kfac")
    assert cfg["preconditioner"]["name"] == "kfac" and cfg["blender"]["name"] == "cpo"
    assert "preconditioner/kfac_refreshes" in rows[0] and "blender/cpo_case" in rows[0]
    assert all(float(r["policy/kl"]) <= LINE_SEARCH_KL for r in rows)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["algorithm=cpo", "guard.name=early_stop"],
         "guard.name: guard 'early_stop' cannot run with one full-batch step per epoch"),
        (["algorithm=ppo_lag", "update_iters=1", "minibatch_size=0"],
         "guard.name: guard 'early_stop' cannot run with one full-batch step per epoch"),
        (["algorithm=cpo", "preconditioner.name=identity"],
         "blender.name: blender 'cpo' cannot run with preconditioner 'identity'"),
        (["algorithm=pcpo", "preconditioner.name=identity"],
         "blender.name: blender 'pcpo' cannot run with preconditioner 'identity'"),
        (["algorithm=trpo_lag", "preconditioner.name=identity"],
         "guard.name: guard 'line_search' cannot run with preconditioner 'identity'"),
        (["algorithm=cpo", "minibatch_size=-1"], "minibatch_size: got -1; expected an integer >= 0"),
        (["algorithm=cpo", "guard.decay=1.5"], "guard 'line_search': decay must be in (0, 1)"),
        (["algorithm=pcpo", "blender.projection=l1"], "blender 'pcpo': projection must be one of kl, l2"),
    ],
)
def test_nonsense_compositions_are_refused_in_one_line(overrides, expected, capsys) -> None:
    assert main(["fit", "--config", GOAL, *overrides]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err


@pytest.mark.parametrize(
    "overrides",
    [
        ["algorithm=cpo", "preconditioner.name=kfac"],
        ["algorithm=cpo", "guard.name=kl_rollback"],  # a guard that checks the one step
        ["algorithm=p3o", "preconditioner.name=cg", "blender.scale=trust_region", "guard.name=line_search"],
        ["algorithm=kfcpo", "preconditioner.name=cg"],  # the paper's third experiment
        ["algorithm=ppo_lag", "minibatch_size=0", "update_iters=4"],  # full batch, several passes
    ],
)
def test_sensible_swaps_are_accepted(overrides: list[str], capsys) -> None:
    assert main(["fit", "--config", GOAL, *overrides, "--print-config"]) == 0


def test_ppo_lag_learning_rate_decays_linearly_over_the_budget(tmp_path: Path) -> None:
    """lr = 3e-4 (1 - updates * steps_per_epoch / total_steps): epoch k of 4 logs the rate
    its update used, from the checkpointed update count alone."""
    rows, cfg = fit(tmp_path, "algorithm=ppo_lag", "total_steps=800")
    assert cfg["preconditioner"]["lr_decay"] == "linear"
    lr0 = cfg["preconditioner"]["lr"]
    decayed = [lr0 * (1 - k / 4) for k in range(4)]
    assert [float(r["preconditioner/lr"]) for r in rows] == pytest.approx(decayed, rel=1e-6)


def test_kfcpo_paper_preset_is_the_literal_reading(tmp_path: Path) -> None:
    """Minibatches of 128 with the rollback guard and the paper's K-FAC settings; it runs
    end to end and logs its rollback rate (docs/algorithm.md 3)."""
    rows, cfg = fit(tmp_path, "algorithm=kfcpo_paper")
    assert cfg["minibatch_size"] == 128
    assert cfg["guard"] == {"name": "kl_rollback", "target_kl": 0.01, "epoch_kl": 0.0}
    assert cfg["preconditioner"]["quad_mode"] == "kfac" and cfg["blender"]["to_boundary"] is False
    assert all(0.0 <= float(r["guard/rollback_frac"]) <= 1.0 for r in rows)
    assert all(float(r["update/policy_steps"]) > 1 for r in rows)
