"""The identity preconditioner (F = I, first-order presets): its step is, bit for bit, the
rule it stands for: the negated ascent step as the gradients, torch's clip_grad_norm_,
then Adam (kfcpo/preconditioner/identity.py, whose clip skips torch's when it is exactly 1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kfcpo.adam import adam
from kfcpo.clip import CLIP_SLACK
from kfcpo.flat import get_flat
from kfcpo.models.actor import GaussianActor
from kfcpo.preconditioner.identity import Identity

OBS, ACT, MAX_NORM, LR = 5, 2, 0.5, 1e-2
STEPS = 6  # several Adam steps, so its moments carry the earlier steps


def reference_step(params: list[nn.Parameter], optimizer: torch.optim.Optimizer, step: torch.Tensor) -> None:
    """What Identity.apply_step stands for, written the plain way: a negated copy of each
    parameter's slice, torch's clip of their norm, Adam's step, gradients cleared."""
    offset = 0
    for p in params:
        p.grad = -step[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    nn.utils.clip_grad_norm_(params, MAX_NORM)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    "norm_ratio",
    [
        0.5,  # far below the limit: the shortcut, no clip
        1.0 - CLIP_SLACK / 2,  # below but within the slack: torch's rule (coefficient 1)
        1.0 + CLIP_SLACK / 2,  # just above: clipped by a hair
        3.0,  # far above: clipped to a third
    ],
)
def test_apply_step_is_the_negated_step_clipped_then_adam_bit_for_bit(norm_ratio: float) -> None:
    torch.manual_seed(0)
    actor = GaussianActor(OBS, ACT, hidden=(8, 8))
    ref_actor = GaussianActor(OBS, ACT, hidden=(8, 8))
    ref_actor.load_state_dict(actor.state_dict())
    precond = Identity(actor, lr=LR, max_grad_norm=MAX_NORM)
    ref_params = list(ref_actor.parameters())
    ref_opt = adam(ref_params, lr=LR)
    gen = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        step = torch.randn(get_flat(actor).numel(), generator=gen)
        step *= norm_ratio * MAX_NORM / torch.linalg.vector_norm(step)
        precond.apply_step(step)
        reference_step(ref_params, ref_opt, step)
        assert torch.equal(get_flat(actor), get_flat(ref_actor))
        assert all(p.grad is None for p in actor.parameters())  # nothing left for a later reader
    for p, q in zip(precond.optimizer.state.values(), ref_opt.state.values(), strict=True):
        assert all(torch.equal(p[k], q[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_solve_is_the_gradient_itself() -> None:
    actor = GaussianActor(OBS, ACT, hidden=(8,))
    g = torch.randn(get_flat(actor).numel())
    assert Identity(actor).solve(g) is g
