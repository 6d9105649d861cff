"""KFCPO learns: on a real Safety Gymnasium task, within a CI budget, return rises over
the first epochs and the episode cost stays within a bounded factor of the limit.

Task and budget chosen by measurement: PointCircle1 gives a reward signal within a few
thousand steps (PointGoal1 and PointButton1 need far more than a CI budget). Measured
with seed 0 (24k steps): return -0.4 -> 4.4, cost 42 -> 66-69 against a limit of 25; a
negated reward direction or a preconditioner that returns noise fails the return test.
"""

import csv
from pathlib import Path

import pytest

from kfcpo.cli import main

ROOT = Path(__file__).resolve().parents[1]
COST_LIMIT = 25.0
RUN = [
    "algorithm=kfcpo", "env.id=SafetyPointCircle1-v0", "steps_per_epoch=4000", "total_steps=24000",
    "env.num_envs=2", "env.vector=sync", "seed=0", f"cost_limit={COST_LIMIT}", "logger.wandb.mode=disabled",
]
MIN_RETURN_GAIN = 2.0  # last two epochs over the first two, in episode return
MAX_COST_FACTOR = 4.0  # cost of the last three epochs at most this many limits


def learn(out_dir: Path) -> list[dict[str, float]]:
    assert main(["fit", "--config", str(ROOT / "conf" / "goal.yaml"), *RUN, f"out_dir={out_dir}"]) == 0
    with open(out_dir / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


@pytest.mark.slow
def test_kfcpo_raises_return_and_keeps_cost_near_the_limit(tmp_path) -> None:
    rows = learn(tmp_path)
    ret = [r["ep_ret"] for r in rows]
    cost = [r["ep_cost"] for r in rows]
    assert len(rows) == 6
    assert mean(ret[-2:]) - mean(ret[:2]) >= MIN_RETURN_GAIN, ret
    assert mean(cost[-3:]) <= MAX_COST_FACTOR * COST_LIMIT, cost
    assert all(r["rollback_frac"] < 1.0 for r in rows), "every step rolled back: the policy never moved"
