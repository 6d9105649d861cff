"""Generalized advantage estimation (Schulman et al. 2016) over a (T, N) rollout grid."""

from __future__ import annotations

import numpy as np
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
    deltas = (rewards + gamma * next_values * not_terminal - values).cpu().numpy()
    decay = (gamma * lam * continues).cpu().numpy()  # per step: what `running` carries over
    # The recursion runs in numpy: one row per step, thousands of steps, where each torch
    # call costs several times a numpy one (measured 3.4 ms vs 0.4 ms for 500 x 8). The
    # same float32 multiply and add per element, in the same order, so the same bits.
    adv = np.zeros_like(deltas)
    running = np.zeros_like(deltas[0])
    for t in reversed(range(len(deltas))):
        running = deltas[t] + decay[t] * running
        adv[t] = running
    adv_t = torch.from_numpy(adv).to(values.device)
    return adv_t, adv_t + values
