"""Plain helpers and constants several test files import: the repository's paths, the
tiny training config, the CLI's one-line error, vector-env replays. Fixtures built on
them live in conftest.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GOAL = str(ROOT / "conf" / "goal.yaml")  # SafetyPointGoal1-v0
# One tiny epoch on one sync env: enough for a real checkpoint and a real rollout.
TINY_FIT = [
    "steps_per_epoch=200",
    "total_steps=200",
    "env.num_envs=1",
    "env.vector=sync",
    "update_iters=1",
    "model.critic_iters=1",
]
ERROR_PREFIX = "kfcpo: error: "


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The CLI's stderr, asserted to be one `kfcpo: error: ...` line."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(ERROR_PREFIX)
    return lines[0]


def vector_replay(venv, actions: np.ndarray) -> list[bytes]:
    """Every step's observations, rewards, episode flags and costs, as bytes."""
    out = []
    for a in actions:
        obs, reward, terminated, truncated, info = venv.step(a)
        out += [obs.tobytes(), reward.tobytes(), terminated.tobytes(), truncated.tobytes(),
                info["cost"].tobytes()]
    return out
