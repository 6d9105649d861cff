"""KFCPO learns, as a statistical claim over seeds: on a real Safety Gymnasium task within
a CI budget, return rises and the episode cost of the last epochs is held near the limit;
a reversed cost direction (negative control, a test double registered the way a user
adds a component) fails the cost check.

Task and budget: PointCircle1, 10 epochs of 4,000 steps (2 sync envs, 8 episodes per
epoch, the step engine), the Jc window scaled to 20 episodes (2.5 epochs, as the preset's
100 episodes are at 20,000 steps per epoch). Measured per seed 0-9 with the preset's trend lead
(docs/algorithm.md section 6): return gain (last 5 epochs over the first) 6.0 4.0 5.2
-0.2 7.9 16.6 8.9 2.8 4.9 2.2 (mean 5.8, sd 4.6); cost of the last 4 epochs 40 72 90 55
47 113 14 64 60 42 (mean 60, sd 28). Control, seeds 0-2: a reversed cost direction's
last-4 cost 219 185 255. Over 6 seeds the thresholds sit ~2.7-2.9 standard deviations of
the 6-seed mean beyond the measured means (6.6 and 70 for seeds 0-5) and far from the
control, so another machine's differently-rounded trajectories pass.
"""

import csv
from pathlib import Path

import pytest

from kfcpo.cli import main

ROOT = Path(__file__).resolve().parents[1]
COST_LIMIT = 25.0
SEEDS = (0, 1, 2, 3, 4, 5)
RUN = [
    "algorithm=kfcpo", "env.id=SafetyPointCircle1-v0", "steps_per_epoch=4000", "total_steps=40000",
    "env.num_envs=2", "env.vector=sync", "cost_window=20", f"cost_limit={COST_LIMIT}",
    "logger.wandb.mode=disabled",
    # The figures above were measured with the step engine; conf/goal.yaml now picks the
    # worker engine, whose action noise differs from epoch 2 on (docs/algorithm.md 4.5.1).
    "env.engine=step",
]
MIN_RETURN_GAIN = 1.0  # mean over seeds of (mean return of the last 5 epochs - epoch 0's)
MAX_COST_FACTOR = 4.0  # mean over seeds of the last 4 epochs' cost, in cost limits
CONTROL = """description: test double, the cost direction reversed
target: faulty_components.CostAscendingMargin
params: {k: 10.0, margin: 0.7, normalize: true, project: adaptive, target_kl: 0.005, inner: fisher,
         unit_directions: true, trend: 2.0}
"""


def learn(out_dir: Path, seed: int, *extra: str) -> dict[str, list[float]]:
    args = ["fit", "--config", str(ROOT / "conf" / "goal.yaml"), *RUN, f"seed={seed}", *extra]
    assert main([*args, f"out_dir={out_dir}"]) == 0
    with open(out_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10
    return {k: [float(r[k]) for r in rows] for k in ("episode/return", "episode/cost", "guard/rollback_frac")}


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def return_gain(run: dict[str, list[float]]) -> float:
    return mean(run["episode/return"][-5:]) - run["episode/return"][0]


def late_cost(run: dict[str, list[float]]) -> float:
    return mean(run["episode/cost"][-4:])


@pytest.mark.slow
def test_kfcpo_raises_return_and_holds_cost_near_the_limit(tmp_path: Path) -> None:
    runs = [learn(tmp_path / f"seed{s}", s) for s in SEEDS]
    gains, costs = [return_gain(r) for r in runs], [late_cost(r) for r in runs]
    assert mean(gains) >= MIN_RETURN_GAIN, f"return gain per seed {gains}"
    assert mean(costs) <= MAX_COST_FACTOR * COST_LIMIT, f"last-epoch cost per seed {costs}"
    assert all(max(r["guard/rollback_frac"]) < 1.0 for r in runs), \
        "every step rolled back: the policy never moved"


@pytest.mark.slow
def test_a_reversed_cost_direction_fails_the_cost_check(tmp_path: Path, monkeypatch) -> None:
    """The negative control: the cost check above can fail, and does when the cost
    direction is wrong (one seed; measured 185-255 against the bound of 100)."""
    catalogue = tmp_path / "catalogue" / "blender"
    catalogue.mkdir(parents=True)
    (catalogue / "cost_ascending.yaml").write_text(CONTROL)
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    run = learn(tmp_path / "run", SEEDS[0], f"registry_paths=[{tmp_path / 'catalogue'}]",
                "blender.name=cost_ascending")
    assert late_cost(run) > MAX_COST_FACTOR * COST_LIMIT, run["episode/cost"]
