"""The hand-written gradient of the critics' summed MSE (kfcpo.models.critic_grad) and the
regression built on it: bit for bit what torch.autograd.grad and Adam.step give.

Equality is torch.equal throughout: the hand-written path makes the same kernel calls as
autograd's derivative formulas and Adam.step, so any difference is a bug, not rounding."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from kfcpo.adam import AdamStep, adam
from kfcpo.models import Critics
from kfcpo.models.critic_grad import SummedMSEGrad
from kfcpo.models.mlp import ACTIVATIONS
from kfcpo.update import UpdateConfig, _clip_each_critic, critic_update

ROWS = 1_000  # a rollout's rows; not a multiple of the minibatch: the last one is ragged
HIDDEN = (64, 64)
L2, MAX_NORM = 1e-3, 40.0  # the kfcpo preset's critic_l2 and critic_max_grad_norm
BITING_NORM = 1e-2  # small enough that the clip scales nearly every step
TARGET_SCALE = 10.0  # returns of tens, as a real rollout's reward returns
LR = 1e-3


def reference_critic_update(
    critics: Critics,
    targets: torch.Tensor,
    obs: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    cfg: UpdateConfig,
    generator: torch.Generator,
) -> float:
    """The regression as it was before the hand-written gradient (torch.autograd.grad,
    Adam.step): the oracle `critic_update` must match bit for bit."""
    params = list(critics.parameters())
    mse = torch.tensor(float("nan"))
    for _ in range(cfg.critic_iters):
        for idx in torch.randperm(obs.shape[0], generator=generator).split(cfg.critic_minibatch_size):
            mse = (critics(obs[idx]) - targets[:, idx]).pow(2).mean(1).sum()
            grads = list(torch.autograd.grad(mse, params))  # one process: no rank to average
            if cfg.critic_l2:
                with torch.no_grad():  # in place: the gradients are this step's own tensors
                    torch._foreach_add_(grads, params, alpha=2.0 * cfg.critic_l2)
            if cfg.critic_max_grad_norm:
                grads = _clip_each_critic(grads, cfg.critic_max_grad_norm)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(mse.detach())


def data(obs_dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    obs = 3 * torch.randn(ROWS, obs_dim, generator=gen)
    targets = TARGET_SCALE * torch.randn(2, ROWS, generator=gen)
    return obs, targets


def critics_of(obs_dim: int, activation: str, hidden: tuple[int, ...] = HIDDEN) -> Critics:
    torch.manual_seed(obs_dim)
    return Critics(obs_dim, hidden, activation)


def autograd_grads(critics: Critics, obs: torch.Tensor, targets: torch.Tensor) -> tuple[list, torch.Tensor]:
    """The loss and gradients as the autograd regression takes them."""
    mse = (critics(obs) - targets).pow(2).mean(1).sum()
    return list(torch.autograd.grad(mse, list(critics.parameters()))), mse.detach()


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("obs_dim", [12, 28, 60])
@pytest.mark.parametrize("rows", [64, 128, ROWS % 128, 1])
def test_grads_are_autograds(activation: str, obs_dim: int, rows: int) -> None:
    critics = critics_of(obs_dim, activation)
    analytic = SummedMSEGrad.of(critics)
    assert analytic is not None
    obs, targets = data(obs_dim)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):  # several random minibatches
        idx = torch.randperm(ROWS, generator=gen)[:rows]
        want, mse = autograd_grads(critics, obs[idx], targets[:, idx])
        got, diff = analytic.grads(obs[idx], targets[:, idx])
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape and torch.equal(g, w)
        assert torch.equal(diff.pow(2).mean(1).sum(), mse)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("hidden", [(32,), (64, 64, 64)])
def test_grads_of_other_depths_are_autograds(activation: str, hidden: tuple[int, ...]) -> None:
    critics = critics_of(28, activation, hidden)
    obs, targets = data(28)
    want, _ = autograd_grads(critics, obs[:128], targets[:, :128])
    got, _ = SummedMSEGrad.of(critics).grads(obs[:128], targets[:, :128])
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_grads_follow_the_parameters_in_place() -> None:
    """Built once per regression: the optimizer's in-place steps must show."""
    critics = critics_of(12, "tanh")
    analytic = SummedMSEGrad.of(critics)
    obs, targets = data(12)
    with torch.no_grad():
        for p in critics.parameters():
            p.mul_(0.5)
    want, _ = autograd_grads(critics, obs[:64], targets[:, :64])
    got, _ = analytic.grads(obs[:64], targets[:, :64])
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def test_unsupported_activation_has_no_analytic_grad() -> None:
    critics = critics_of(12, "tanh")
    critics.activation = nn.Sigmoid()
    assert SummedMSEGrad.of(critics) is None
    critics.activation = nn.ReLU(inplace=True)
    assert SummedMSEGrad.of(critics) is None


def regress(path, critics: Critics, optimizer: torch.optim.Optimizer, obs: torch.Tensor,
            targets: torch.Tensor, l2: float, max_norm: float, iters: int = 3, minibatch: int = 128) -> float:
    cfg = UpdateConfig(1, 0, critic_iters=iters, critic_minibatch_size=minibatch, cost_limit=25.0,
                       critic_l2=l2, critic_max_grad_norm=max_norm)
    return path(critics, targets, obs, optimizer, cfg, torch.Generator().manual_seed(7))


def assert_same(a: tuple[Critics, torch.optim.Optimizer], b: tuple[Critics, torch.optim.Optimizer]) -> None:
    """The same parameters and the same optimizer state_dict (the checkpoint), bit for bit."""
    for p, q in zip(a[0].parameters(), b[0].parameters(), strict=True):
        assert torch.equal(p, q) and p.grad is None and q.grad is None
    sa, sb = a[1].state_dict(), b[1].state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for key, state in sa["state"].items():
        assert state.keys() == sb["state"][key].keys()
        for name, value in state.items():
            other = sb["state"][key][name]
            assert type(value) is type(other) and value.dtype == other.dtype and torch.equal(value, other)


OPTIMIZERS = {
    "kfcpo_adam": lambda params: adam(params, LR),
    "sgd": lambda params: torch.optim.SGD(params, lr=LR),
}


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize(("l2", "max_norm"), [(L2, MAX_NORM), (L2, BITING_NORM), (0.0, 0.0)])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_critic_update_is_the_autograd_regression(activation: str, l2: float, max_norm: float,
                                                  optimizer: str) -> None:
    """Several passes, a ragged last minibatch, twice in a row (the second regression starts
    from Adam's existing state): the same losses, parameters and optimizer state."""
    obs, targets = data(28)
    runs = []
    for path in (critic_update, reference_critic_update):
        critics = critics_of(28, activation)
        opt = OPTIMIZERS[optimizer](critics.parameters())
        losses = [regress(path, critics, opt, obs, targets, l2, max_norm) for _ in range(2)]
        runs.append((losses, critics, opt))
    (new_losses, *new), (old_losses, *old) = runs
    assert new_losses == old_losses
    assert_same(tuple(new), tuple(old))
    moved = critics_of(28, activation)
    assert not all(torch.equal(p, q) for p, q in zip(new[0].parameters(), moved.parameters(), strict=True))


@pytest.mark.parametrize("minibatch", [64, 128])
def test_critic_update_is_the_autograd_regression_at_preset_sizes(minibatch: int) -> None:
    """PointCircle1's 28 observations, ppo_lag's minibatch 64 and kfcpo's 128."""
    obs, targets = data(28, seed=3)
    runs = []
    for path in (critic_update, reference_critic_update):
        critics = critics_of(28, "tanh")
        opt = adam(critics.parameters(), LR)
        loss = regress(path, critics, opt, obs, targets, L2, MAX_NORM, iters=2, minibatch=minibatch)
        runs.append((loss, critics, opt))
    assert runs[0][0] == runs[1][0]
    assert_same(runs[0][1:], runs[1][1:])


def test_critic_update_without_steps_returns_nan() -> None:
    obs, targets = data(12)
    critics = critics_of(12, "tanh")
    optimizer = adam(critics.parameters(), LR)
    assert math.isnan(regress(critic_update, critics, optimizer, obs, targets, L2, MAX_NORM, iters=0))


def test_other_dtypes_and_activations_take_autograd() -> None:
    """Float64 targets (autograd casts their gradient back) and an activation without a
    hand-written backward: critic_update is the autograd regression."""
    obs, targets = data(12)
    for activation, tgt in (("tanh", targets.double()), ("sigmoid", targets)):
        runs = []
        for path in (critic_update, reference_critic_update):
            critics = critics_of(12, "tanh")
            if activation == "sigmoid":
                critics.activation = nn.Sigmoid()
            opt = adam(critics.parameters(), LR)
            runs.append((regress(path, critics, opt, obs, tgt, L2, MAX_NORM), critics, opt))
        assert runs[0][0] == runs[1][0]
        assert_same(runs[0][1:], runs[1][1:])


ADAM_OPTIONS = [
    {},
    {"amsgrad": True},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "decoupled_weight_decay": True},
    {"maximize": True, "betas": (0.8, 0.9), "eps": 1e-6},
]


@pytest.mark.parametrize("options", ADAM_OPTIONS)
def test_fused_adam_kernel_is_adam_step(options: dict) -> None:
    """The direct kernel call is used (after the step that creates the state) and leaves
    the parameters and state_dict exactly as Adam.step does."""
    gen = torch.Generator().manual_seed(0)
    pairs = []
    for direct in (True, False):
        critics = critics_of(12, "tanh")
        params = list(critics.parameters())
        opt = torch.optim.Adam(params, lr=LR, fused=True, **options)
        step = AdamStep(opt, params)
        pairs.append((critics, opt, step, direct))
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen) for p in pairs[0][0].parameters()]
        for critics, opt, step, direct in pairs:
            if direct:
                step([g.clone() for g in grads])
            else:
                for p, g in zip(critics.parameters(), grads, strict=True):
                    p.grad = g.clone()
                opt.step()
    assert pairs[0][2]._kernel is not None
    for _, opt, *_ in pairs:
        opt.zero_grad(set_to_none=True)
    assert_same(pairs[0][:2], pairs[1][:2])


def test_adam_kfcpo_builds_takes_the_kernel_from_existing_state() -> None:
    critics = critics_of(12, "tanh")
    params = list(critics.parameters())
    opt = adam(params, LR)
    assert AdamStep(opt, params)._kernel is None  # no state yet: Adam.step creates it
    obs, targets = data(12)
    regress(critic_update, critics, opt, obs, targets, L2, MAX_NORM, iters=1)
    assert AdamStep(opt, params)._kernel is not None


def test_optimizer_hooks_and_patched_step_keep_adam_step() -> None:
    """Whatever Adam.step would run besides its kernels (hooks, an LR scheduler's patched
    step) is not skipped: such optimizers keep Adam.step."""
    obs, targets = data(12)
    critics = critics_of(12, "tanh")
    params = list(critics.parameters())
    opt = adam(params, LR)
    regress(critic_update, critics, opt, obs, targets, L2, MAX_NORM, iters=1)  # state exists
    calls = []
    handle = opt.register_step_post_hook(lambda *_: calls.append(1))
    assert AdamStep(opt, params)._kernel is None
    regress(critic_update, critics, opt, obs, targets, L2, MAX_NORM, iters=1)
    assert len(calls) == -(-ROWS // 128)  # every minibatch's step ran the hook
    handle.remove()
    handle = register_optimizer_step_pre_hook(lambda *_: None)
    try:
        assert AdamStep(opt, params)._kernel is None
    finally:
        handle.remove()
    torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    assert AdamStep(opt, params)._kernel is None
    assert AdamStep(torch.optim.Adam(params, lr=LR), params)._kernel is None  # not fused
