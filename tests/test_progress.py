"""The progress bar: its metric cells (a value, or "-" before it exists), and, in a real
`kfcpo fit`, every epoch's env steps counted as they are stepped, the first epoch's too
(Lightning collects it before ``on_train_start``)."""

import math
from pathlib import Path

import pytest
import torch
from test_fit import GOAL, TINY

from kfcpo.cli import main
from kfcpo.progress import EnvStepProgressBar, _shown

STEPS_PER_EPOCH = 500  # TINY's


@pytest.mark.parametrize("missing", [None, math.nan, torch.tensor(math.nan)])
def test_missing_metric_shows_a_dash(missing) -> None:
    assert _shown(missing, ".2f") == "-"


def test_present_metric_is_formatted() -> None:
    assert _shown(torch.tensor(-1.234), ".2f") == "-1.23"
    assert _shown(12345.6, ",.0f") == "12,346"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["step", "worker"])
def test_bar_counts_each_epochs_steps_before_its_update(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        engine: str) -> None:
    counted: list[int] = [0]  # steps passed to the bar since the last update
    advance, batch_end = EnvStepProgressBar._advance, EnvStepProgressBar.on_train_batch_end

    def count(self, steps: int) -> None:
        counted[-1] += steps
        advance(self, steps)

    def update_done(self, *args) -> None:
        counted.append(0)
        batch_end(self, *args)

    monkeypatch.setattr(EnvStepProgressBar, "_advance", count)
    monkeypatch.setattr(EnvStepProgressBar, "on_train_batch_end", update_done)
    args = ["fit", "--config", GOAL, *TINY, f"env.engine={engine}", "total_steps=1000", f"out_dir={tmp_path}"]
    assert main(args) == 0
    assert counted == [STEPS_PER_EPOCH, STEPS_PER_EPOCH, 0]
