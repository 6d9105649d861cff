"""The gradient of the critics' summed MSE, written out by hand instead of taken by autograd.

The critics' regression is thousands of minibatch steps per epoch (1,570 for `kfcpo`,
12,520 for `ppo_lag` on a 20,000-step epoch) on two small MLPs, where per-operation
overhead costs as much as the arithmetic. Measured on one autograd step (kfcpo's minibatch
of 128, 28 observations, one thread, loaded 2-core CPU, ~0.5 ms): forward 33%,
torch.autograd.grad 36%, the loss 4%, Adam.step 14%, the rest indexing, clip and L2; the
kernels that carry arithmetic (matmuls, tanh and its backward) are about half of it, the
rest is recording the graph, the autograd engine's scheduling and the loss's own backward
nodes (Sum, Mean, Pow, Sub, Squeeze), and Adam.step's Python (docs/algorithm.md 4.4). Here
the forward runs on detached parameters and the backward is the few kernels that carry
arithmetic: ~0.3 ms per step, 83% of it the forward and backward kernels. Each is the
very call autograd's derivative formula makes, on a tensor of the same shape and layout,
so the gradients are bit-identical to `torch.autograd.grad` (tested on every supported
activation in tests/test_critic_grad.py):

- pow(2).mean(1).sum(): d/d diff = (1/N) * (2 diff), as one multiplication by 2/N
  (doubling is exact, so both round the same real number);
- baddbmm(b, h, w): d/dw = bmm(h^T, g), d/db = g summed over the rows (autograd's sum_to),
  d/dh = bmm(g, w^T);
- the activations: autograd's own backward kernels (tanh_backward on the output,
  threshold_backward for ReLU, elu_backward on the input).

An activation without a backward here has no `SummedMSEGrad` (`SummedMSEGrad.of` returns
None) and the caller keeps autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kfcpo.models.critic import NUM_CRITICS, Critics

# Forward: z -> a. Backward: (grad of a, z, a) -> grad of z.
Forward = Callable[[torch.Tensor], torch.Tensor]
Backward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# d/d diff of mean(diff^2) is (2 / N) diff: the derivative of the square.
SQUARE_SLOPE = 2.0
# ReLU's backward: the gradient passes where the output is above this threshold.
RELU_THRESHOLD = 0
# nn.ELU has no scale parameters; F.elu passes these to the kernel. Its backward is
# taken from the input, not from the output (is_result False), as autograd's is.
ELU_SCALE = ELU_INPUT_SCALE = 1
ELU_IS_RESULT = False

_tanh_backward = torch.ops.aten.tanh_backward.default
_threshold_backward = torch.ops.aten.threshold_backward.default
_elu_backward = torch.ops.aten.elu_backward.default


@dataclass(frozen=True)
class _Activation:
    forward: Forward
    backward: Backward


def _activation(module: nn.Module) -> _Activation | None:
    """The functional forward and the backward autograd would run for `module`; None
    when it is not one written out here (or is configured in place)."""
    kind = type(module)
    if kind is nn.Tanh:
        return _Activation(torch.tanh, lambda g, z, a: _tanh_backward(g, a))
    if kind is nn.ReLU and not module.inplace:
        return _Activation(torch.relu, lambda g, z, a: _threshold_backward(g, a, RELU_THRESHOLD))
    if kind is nn.ELU and not module.inplace:
        alpha = module.alpha
        return _Activation(
            lambda z: F.elu(z, alpha),
            lambda g, z, a: _elu_backward(g, alpha, ELU_SCALE, ELU_INPUT_SCALE, ELU_IS_RESULT, z),
        )
    return None


class SummedMSEGrad:
    """grads(obs (N, obs_dim), targets (2, N)) -> the gradients of
    sum over critics of mean over rows of (critics(obs) - targets)^2, in
    `critics.parameters()` order, and the residual critics(obs) - targets (2, N).

    Holds the critics' parameters detached (views of the same storage: the optimizer's
    in-place steps show), so build it once per regression, not per step."""

    def __init__(self, critics: Critics, activation: _Activation) -> None:
        self._weights = [w.detach() for w in critics.weights]
        self._layers = list(zip(self._weights, [b.detach() for b in critics.biases], strict=True))
        self._act = activation
        names = [name for name, _ in critics.named_parameters()]
        # Critics registers the weights' ParameterList before the biases'.
        depth = len(self._layers)
        expected = [f"weights.{i}" for i in range(depth)] + [f"biases.{i}" for i in range(depth)]
        if names != expected:
            raise ValueError(f"unexpected critic parameter order {names}")

    @classmethod
    def of(cls, critics: Critics) -> SummedMSEGrad | None:
        """The analytic gradient of `critics`, or None when its activation has none here."""
        act = _activation(critics.activation)
        return None if act is None else cls(critics, act)

    def grads(self, obs: torch.Tensor, targets: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The gradients (each the step's own new tensor) and the residual; the summed MSE
        is `diff.pow(2).mean(1).sum()`, as the autograd loss computes it."""
        act = self._act
        last = len(self._weights) - 1
        # Forward, as stacked_forward computes it, keeping each layer's input and the
        # pre-activations the backward needs.
        h = obs.expand(NUM_CRITICS, *obs.shape)
        inputs: list[torch.Tensor] = []
        pre: list[torch.Tensor] = []
        for i, (w, b) in enumerate(self._layers):
            inputs.append(h)
            z = torch.baddbmm(b, h, w)
            pre.append(z)
            h = act.forward(z) if i < last else z
        diff = h.squeeze(-1) - targets
        # autograd: fl(1/N) * (2 diff). Doubling is exact in floating point (2 diff, and
        # fl(2/N) = 2 fl(1/N)), so diff * fl(2/N) is the same real number, rounded the same
        # way, in one operation (only where 2 diff overflows would the two differ).
        g = diff.mul(SQUARE_SLOPE / diff.shape[1]).unsqueeze(-1)
        w_grads: list[torch.Tensor] = []  # last layer first
        b_grads: list[torch.Tensor] = []
        for i in range(last, -1, -1):
            h_in = inputs[i]
            w_grads.append(h_in.transpose(1, 2).bmm(g))
            b_grads.append(g.sum(1, keepdim=True))
            if i:
                g = act.backward(g.bmm(self._weights[i].transpose(1, 2)), pre[i - 1], h_in)
        return w_grads[::-1] + b_grads[::-1], diff
