"""The stacked critics against two independent plain MLPs: the same initial functions, the
same values, and critic_update's step equal to a hand-written reference step on the two
MLPs (MSE + L2 on the parameters, each critic's gradient clipped to a norm, then the
optimizer's step: plain SGD here, whose step is proportional to the gradient, so a
dropped L2 term or clip, or a clip shared between the critics, shows)."""

import pytest
import torch
from torch import nn

from kfcpo.clip import CLIP_EPS
from kfcpo.models import COST, REWARD, Critics
from kfcpo.models.mlp import mlp
from kfcpo.update import UpdateConfig, _clip_each_critic, critic_update

LR = 0.1
OBS_DIM, HIDDEN = 3, [8, 8]


def pair() -> tuple[Critics, list[nn.Sequential]]:
    """Critics and two plain MLPs drawn from the same seed in the same order."""
    torch.manual_seed(1)
    critics = Critics(OBS_DIM, HIDDEN, "tanh")
    torch.manual_seed(1)
    return critics, [mlp(OBS_DIM, HIDDEN, 1, "tanh") for _ in range(2)]


def test_stacked_critics_are_the_two_mlps() -> None:
    critics, (v_r, v_c) = pair()
    obs = torch.randn(50, OBS_DIM)
    values = critics(obs)
    assert values.shape == (2, 50)
    torch.testing.assert_close(values[REWARD], v_r(obs).squeeze(-1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(values[COST], v_c(obs).squeeze(-1), rtol=1e-6, atol=1e-7)


def reference_step(nets: list[nn.Sequential], targets, obs, l2: float, clip: float) -> torch.Tensor:
    """One SGD step of each MLP on its own loss (MSE + l2 |p|^2), its gradient clipped to
    `clip`; the new values on `obs`, (2, N)."""
    out = []
    for net, target in zip(nets, targets, strict=True):
        params = list(net.parameters())
        loss = nn.functional.mse_loss(net(obs).squeeze(-1), target) + l2 * sum((p**2).sum() for p in params)
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        scale = min(1.0, clip / (float(norm) + 1e-6))
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= LR * scale * g
            out.append(net(obs).squeeze(-1))
    return torch.stack(out)


def stacked_step(targets, obs, l2: float, clip: float) -> torch.Tensor:
    critics, _ = pair()
    cfg = UpdateConfig(1, 0, critic_iters=1, critic_minibatch_size=len(obs), cost_limit=25.0, critic_l2=l2,
                       critic_max_grad_norm=clip)
    optimizer = torch.optim.SGD(critics.parameters(), lr=LR)
    critic_update(critics, targets, obs, optimizer, cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        return critics(obs)


@pytest.mark.parametrize(("l2", "clip"), [(1e-2, 0.5), (0.5, 0.0), (0.0, 0.5), (0.0, 0.0)])
def test_critic_step_matches_reference(l2: float, clip: float) -> None:
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(32, OBS_DIM, generator=gen)
    targets = torch.stack([10 * torch.randn(32, generator=gen), torch.randn(32, generator=gen)])
    _, nets = pair()
    expected = reference_step(nets, targets, obs, l2, clip if clip else float("inf"))
    torch.testing.assert_close(stacked_step(targets, obs, l2, clip), expected, rtol=1e-5, atol=1e-6)
    if l2 or clip:  # the options change the step: the comparison above can fail
        assert not torch.allclose(stacked_step(targets, obs, 0.0, 0.0), expected, rtol=1e-5, atol=1e-6)


def _clip_exact(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """The clip's rule with no shortcut."""
    squares = torch.stack([g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads]).sum(0)
    coef = torch.clamp(max_norm / (squares.sqrt() + CLIP_EPS), max=1.0)
    return [g * coef.view(-1, *([1] * (g.dim() - 1))) for g in grads]


@pytest.mark.parametrize("scale", [0.0, 0.5, 0.998, 0.9995, 1.0, 1.0005, 3.0, float("nan")])
@pytest.mark.parametrize("max_norm", [40.0, 1e-7])
def test_clip_shortcut_is_the_exact_rule(scale: float, max_norm: float) -> None:
    """Near, below, above the bound, at a bound under the rule's epsilon and with NaN
    gradients: the clip's values are the exact rule's, bit for bit."""
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(shape, generator=gen) for shape in [(2, 3, 8), (2, 1, 8), (2, 8, 1), (2, 1, 1)]]
    total = float(torch.sqrt(sum((g**2).sum() for g in grads)))
    grads = [g * (scale * max_norm / total) for g in grads]
    for got, want in zip(_clip_each_critic(grads, max_norm), _clip_exact(grads, max_norm), strict=True):
        assert torch.equal(got, want) or (torch.isnan(want).all() and torch.isnan(got).all())
