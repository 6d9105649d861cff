"""The progress bar's metric cells: a value, or "-" before it exists."""

import math

import pytest
import torch

from kfcpo.progress import _shown


@pytest.mark.parametrize("missing", [None, math.nan, torch.tensor(math.nan)])
def test_missing_metric_shows_a_dash(missing) -> None:
    assert _shown(missing, ".2f") == "-"


def test_present_metric_is_formatted() -> None:
    assert _shown(torch.tensor(-1.234), ".2f") == "-1.23"
    assert _shown(12345.6, ",.0f") == "12,346"
