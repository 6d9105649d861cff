"""`kfcpo ablate` on real (tiny) runs: every variant through the benchmark grid, one table
per study with the command that reproduces it, and a second invocation that starts none."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
import yaml

from kfcpo.cli import main as kfcpo
from kfcpo.tools.ablate import HEADER, REPORT_FILE, slug

ENV = "SafetyPointGoal1-v0"
EPOCH = 200  # env steps per epoch; the budget is two epochs
TINY = ["env.vector=sync", "update_iters=1", "model.critic_iters=1"]
STUDY = "Critic passes"
SPEC = {
    "env": ENV, "total_steps": 2 * EPOCH, "steps_per_epoch": EPOCH, "num_envs": 1, "seeds": [0],
    "variants": {
        "one": {"algorithm": "ppo_lag", "overrides": TINY, "why": "one critic pass"},
        "two": {"algorithm": "ppo_lag", "overrides": [*TINY[:-1], "model.critic_iters=2"]},
    },
    "studies": {STUDY: ["one", "two"]},
}


def ablate(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = kfcpo(["ablate", *args])
    return code, out.getvalue()


@pytest.mark.slow
def test_variants_run_and_are_tabled_by_study(tmp_path: Path) -> None:
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    args = [str(spec), "--runs-dir", str(tmp_path / "runs")]
    code, log = ablate(args)
    assert code == 0, log
    report = (tmp_path / REPORT_FILE).read_text()  # --out defaults to the spec's folder
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert rows[0] == "| " + " | ".join(HEADER) + " |"
    cells = {r.split(" | ")[0].removeprefix("| "): r.split(" | ") for r in rows[1:]}
    assert set(cells) == {"one", "two"}
    assert cells["one"][1] == "one critic pass"  # `why` over the overrides
    assert cells["two"][1] == "env.vector=sync update_iters=1 model.critic_iters=2"
    assert cells["one"][6] == cells["two"][6] == "1"  # seeds
    assert f"Command: `kfcpo ablate {spec} --runs-dir {tmp_path / 'runs'}`" in report
    assert (tmp_path / f"{slug(STUDY)}.png").stat().st_size > 0

    code, log = ablate([*args, "--only", "two"])  # complete runs are skipped, not rerun
    assert code == 0, log
    assert f"skip    {ENV}/ppo_lag/seed0" in log and "start " not in log
