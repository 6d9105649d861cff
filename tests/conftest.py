"""Fixtures shared by the test files: the CLI's one-line error and a small real run.

The repository's paths (ROOT, GOAL), the tiny training config (TINY_FIT) and plain
functions live in helpers.py, since test modules need them at import time (module-level
configs, parametrize), where fixtures cannot reach."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import GOAL, TINY_FIT, one_error_line


@pytest.fixture
def cli_error(capsys: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """Call after a failing CLI command: its stderr, asserted to be one `kfcpo: error:` line."""
    return lambda: one_error_line(capsys)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run folder of conf/goal.yaml (its preset, ppo_lag): one tiny epoch,
    config.yaml, metrics.csv and checkpoints/last.ckpt. Shared by the session: read it,
    never modify it."""
    from kfcpo.cli import main  # torch and the envs load only when a test asks for a run

    out = tmp_path_factory.mktemp("tiny_run") / "run"
    assert main(["fit", "--config", GOAL, *TINY_FIT, "logger.wandb.mode=disabled", f"out_dir={out}"]) == 0
    return out
