"""GAE against a hand-computed example with a termination and a truncation inside."""

import torch

from kfcpo.data.gae import gae


def test_gae_matches_hand_computation() -> None:
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    values = torch.tensor([[0.5], [1.0], [1.5], [2.0]])
    # t=0 continues; t=1 terminates; t=2 is truncated (bootstrap from V(final obs) = 10);
    # t=3 is cut by the epoch end (bootstrap from V(next obs) = 3).
    next_values = torch.tensor([[1.0], [1.5], [10.0], [3.0]])
    terminated = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    episode_end = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    adv, ret = gae(rewards, values, next_values, terminated, episode_end, gamma, lam)
    # deltas: 1 + .9*1 - .5 = 1.4 | 2 - 1 = 1 | 3 + .9*10 - 1.5 = 10.5 | 4 + .9*3 - 2 = 4.7
    # adv: t0 = 1.4 + .9*.8*1 = 2.12 (t1's episode continues t0's); t1..t3 stand alone
    expected = torch.tensor([[2.12], [1.0], [10.5], [4.7]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)


def test_gae_columns_are_independent_envs() -> None:
    rewards = torch.tensor([[1.0, 0.0], [1.0, 5.0]])
    values = torch.zeros(2, 2)
    next_values = torch.zeros(2, 2)
    none = torch.zeros(2, 2)
    adv, _ = gae(rewards, values, next_values, none, none, gamma=0.5, lam=1.0)
    torch.testing.assert_close(adv, torch.tensor([[1.5, 2.5], [1.0, 5.0]]))
