"""Generalized advantage estimation (Schulman et al. 2016) over a (T, N) rollout grid."""

from __future__ import annotations

import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    episode_end: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and value targets, both (T, N).

    `next_values[t]` is V of the state after step t: the next observation, or the final
    observation when the episode was truncated at t, or (at the last row, the epoch cut)
    the observation the next epoch starts from. Termination zeroes the bootstrap;
    truncation keeps it. `episode_end` (terminated or truncated) stops the advantage
    recursion so it never crosses into the next episode.
    """
    not_terminal = 1.0 - terminated.float()
    continues = 1.0 - episode_end.float()
    deltas = rewards + gamma * next_values * not_terminal - values
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * continues[t] * running
        adv[t] = running
    return adv, adv + values
