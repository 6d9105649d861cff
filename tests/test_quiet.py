"""A plain `kfcpo fit` prints its progress, run folder and summary, not library noise:
Lightning's advertisement and its warnings about folders kfcpo manages on purpose, or
deprecations inside Lightning that a user cannot act on. Real warnings stay."""

import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pytest
from helpers import GOAL, ROOT

from kfcpo.train import quiet_lightning

TINY = [
    "steps_per_epoch=200",
    "env.num_envs=1",
    "env.vector=sync",
    "update_iters=1",
    "model.critic_iters=1",
]
# Substrings of each message a run must not print (stdout or stderr).
NOISE = {
    "Lightning's litlogger advertisement": "litlogger",
    "the CSV logger's warning about the run folder (a fresh run holds config.yaml; a "
    "resumed one keeps its rows)": "Experiment logs directory",
    "ModelCheckpoint's warning about the run's own checkpoints on resume": "Checkpoint directory",
    "torch's LeafSpec deprecation, raised inside Lightning": "isinstance(treespec, LeafSpec)",
    "wandb's warning about the `anonymous` argument Lightning passes": "The anonymous setting has no effect",
}


def fit(*overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run(
        [sys.executable, "-m", "kfcpo.cli", "fit", "--config", GOAL, *TINY, *overrides],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def assert_quiet(proc: subprocess.CompletedProcess[str]) -> None:
    printed = proc.stdout + proc.stderr
    heard = [what for what, text in NOISE.items() if text in printed]
    assert not heard, f"noise: {heard}\n--- stderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_fit_and_its_resume_print_no_library_noise(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = fit("total_steps=200", "logger.wandb.mode=disabled", f"out_dir={run}")
    assert_quiet(first)
    assert f"run folder: {run}" in first.stdout
    resumed = fit("total_steps=400", "logger.wandb.mode=disabled", f"resume={run}")
    assert_quiet(resumed)
    assert "Restored all states" in resumed.stderr  # Lightning's own information stays
    with open(run / "metrics.csv") as f:
        assert len(f.read().splitlines()) == 3  # header + the first run's epoch + the resumed one


@pytest.mark.slow
def test_offline_wandb_run_prints_no_library_noise(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = fit("total_steps=200", "logger.wandb.mode=offline", f"out_dir={run}")
    assert_quiet(proc)
    assert list((run / "wandb").glob("offline-run-*"))


def recorded(make_noise: Callable[[], object], quiet_in: Path | None = None) -> list[str]:
    """The warnings `make_noise` raises, within `quiet_lightning(quiet_in)` if given."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_lightning(quiet_in) if quiet_in else nullcontext():
            make_noise()
    return [str(w.message) for w in seen]


def test_filters_match_lightnings_own_warnings_and_nothing_else(tmp_path: Path) -> None:
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter
    from lightning.pytorch.utilities._pytree import _tree_flatten

    run, other = tmp_path / "run", tmp_path / "other"
    for folder in (run, other):
        folder.mkdir()
        (folder / "config.yaml").write_text("seed: 0\n")

    def lightning_noise() -> None:
        ExperimentWriter(str(run))
        _tree_flatten([1.0])

    heard = recorded(lightning_noise)
    assert any(m.startswith("Experiment logs directory") for m in heard), heard
    assert any("isinstance(treespec, LeafSpec)" in m for m in heard), heard
    assert recorded(lightning_noise, quiet_in=run) == []

    def other_noise() -> None:
        ExperimentWriter(str(other))  # not the run's folder
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
        warnings.warn("Checkpoint directory /elsewhere exists and is not empty.", stacklevel=1)

    assert len(recorded(other_noise, quiet_in=run)) == 3
