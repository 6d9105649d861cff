"""The Jc window and the cost-advantage scalings against hand-computed values."""

import math

import pytest
import torch

from kfcpo.data.cost_window import EpisodeCostWindow
from kfcpo.data.rollout import COST_ADV_SCALINGS


def test_window_is_the_mean_of_the_last_episodes() -> None:
    w = EpisodeCostWindow(3)
    assert math.isnan(w.mean()) and len(w) == 0
    w.extend([10.0])
    assert w.mean() == 10.0
    w.extend([20.0, 30.0, 40.0])  # 10 falls out: (20 + 30 + 40) / 3
    assert w.mean() == pytest.approx(30.0) and len(w) == 3
    w.extend([])  # an epoch without a finished episode keeps the estimate
    assert w.mean() == pytest.approx(30.0)
    w.extend([0.0, 0.0])
    assert w.mean() == pytest.approx(40.0 / 3)


def test_window_state_round_trips_and_keeps_its_size() -> None:
    w = EpisodeCostWindow(2)
    w.extend([1.0, 2.0, 3.0])
    restored = EpisodeCostWindow(2)
    restored.load_state_dict(w.state_dict())
    assert restored.mean() == w.mean() == 2.5
    restored.extend([7.0])
    assert restored.mean() == 5.0


@pytest.mark.parametrize("size", [0, -1, 2.5, None])
def test_window_size_must_be_a_positive_integer(size) -> None:
    with pytest.raises(ValueError, match="cost_window"):
        EpisodeCostWindow(size)


def test_cost_advantage_scalings() -> None:
    adv = torch.tensor([1.0, 2.0, 3.0, 6.0])  # mean 3, population std sqrt(3.5)
    torch.testing.assert_close(COST_ADV_SCALINGS["center"](adv), torch.tensor([-2.0, -1.0, 0.0, 3.0]))
    expected = torch.tensor([-2.0, -1.0, 0.0, 3.0]) / math.sqrt(3.5)
    torch.testing.assert_close(COST_ADV_SCALINGS["standardize"](adv), expected)
    torch.testing.assert_close(COST_ADV_SCALINGS["none"](adv), adv)
