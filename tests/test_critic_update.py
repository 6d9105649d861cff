"""critic_update against a hand-written reference step: MSE + L2 on the parameters, each
critic's gradient clipped to a norm, then the optimizer's step (plain SGD here, whose step
is proportional to the gradient, so a dropped L2 term or clip shows)."""

import pytest
import torch
from torch import nn

from kfcpo.models import Critic
from kfcpo.update import UpdateConfig, critic_update

LR = 0.1


def reference_step(critics, targets, obs, l2: float, clip: float) -> list[torch.Tensor]:
    params = [p for c in critics for p in c.parameters()]
    loss = sum(nn.functional.mse_loss(c(obs), t) for c, t in zip(critics, targets, strict=True))
    loss = loss + l2 * sum((p**2).sum() for p in params)
    grads = dict(zip(params, torch.autograd.grad(loss, params), strict=True))
    for c in critics:
        norm = torch.sqrt(sum((grads[p] ** 2).sum() for p in c.parameters()))
        if norm > clip:
            for p in c.parameters():
                grads[p] = grads[p] * clip / (norm + 1e-6)
    return [(p - LR * grads[p]).detach() for p in params]


def critics_pair() -> list[Critic]:
    torch.manual_seed(1)
    return [Critic(3, [8], "tanh"), Critic(3, [8], "tanh")]


def ours_step(obs, targets, l2: float, clip: float) -> list[torch.Tensor]:
    critics = critics_pair()
    params = [p for c in critics for p in c.parameters()]
    cfg = UpdateConfig(1, 0, critic_iters=1, critic_minibatch_size=len(obs), critic_l2=l2,
                       critic_max_grad_norm=clip)
    pairs = list(zip(critics, targets, strict=True))
    critic_update(pairs, obs, torch.optim.SGD(params, lr=LR), cfg, torch.Generator().manual_seed(0))
    return [p.detach() for p in params]


@pytest.mark.parametrize(("l2", "clip"), [(1e-2, 0.5), (0.5, 0.0), (0.0, 0.5), (0.0, 0.0)])
def test_critic_step_matches_reference(l2: float, clip: float) -> None:
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(32, 3, generator=gen)
    targets = [10 * torch.randn(32, generator=gen), torch.randn(32, generator=gen)]
    expected = reference_step(critics_pair(), targets, obs, l2, clip if clip else float("inf"))
    for a, e in zip(ours_step(obs, targets, l2, clip), expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-7)
    if l2 or clip:  # the options change the step: the comparison above can fail
        plain = ours_step(obs, targets, 0.0, 0.0)
        assert any(not torch.allclose(a, b) for a, b in zip(plain, expected, strict=True))
