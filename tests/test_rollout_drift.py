"""RolloutDrift (kfcpo/guard/base.py): the policy's KL from the rollout policy, measured
once per parameter state; every move or restore through the PolicyMover measures again."""

from __future__ import annotations

import pytest
import torch
from oracles import PlainPrecond
from torch.distributions import kl_divergence

import kfcpo.guard.base as guard_base
from kfcpo.flat import get_flat
from kfcpo.guard.base import PolicyMover, RolloutDrift
from kfcpo.models.actor import GaussianActor

OBS, ACT, N = 5, 2, 64


def kl_from(actor: GaussianActor, obs: torch.Tensor, old: torch.distributions.Normal) -> float:
    """Independent of RolloutDrift: KL summed over actions, mean over states."""
    with torch.no_grad():
        return float(kl_divergence(actor.distribution(obs), old).sum(-1).mean())


def test_drift_follows_every_move_and_restore_and_measures_once_per_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    actor = GaussianActor(OBS, ACT, hidden=(8, 8))
    obs = torch.randn(N, OBS, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        start = actor.distribution(obs)
    mover = PolicyMover(actor, PlainPrecond(actor))
    calls = []
    measure = guard_base.mean_kl
    monkeypatch.setattr(guard_base, "mean_kl", lambda *a: calls.append(a) or measure(*a))
    drift = RolloutDrift(mover, obs)
    assert drift() == 0.0
    snap = mover.snapshot()
    step = 0.1 * torch.randn(get_flat(actor).numel(), generator=torch.Generator().manual_seed(2))
    for _ in range(2):  # each move is measured, at the parameters it reached
        mover.apply(step)
        assert drift() == kl_from(actor, obs, start) > 0.0
    assert drift() == drift() and len(calls) == 3  # asked again unmoved: not measured again
    mover.restore(snap)
    assert drift() == 0.0 and len(calls) == 4
