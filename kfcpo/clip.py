"""When a gradient-norm clip can be skipped: both of the framework's clips (the critics'
per-critic clip and the `identity` preconditioner's torch clip_grad_norm_) scale by
clamp(max_norm / (norm + CLIP_EPS), max=1), which is exactly 1, the identity, whenever the
norm is below max_norm by more than rounding. Usually it is (PPO-Lag's policy steps have
norms 0.3-1.2 against 40; 0 of 1,570 critic steps of a fresh PointCircle1 epoch clip), so
one norm decides and the per-tensor rule runs only near or above the bound (docs/algorithm.md 4.4)."""

from __future__ import annotations

# torch's clip_grad_norm_ divides by (norm + 1e-6); the critics' clip keeps its rule.
CLIP_EPS = 1e-6
# Relative margin: a thousand times the ~1e-6 by which float32 norms summed in different
# orders can differ.
CLIP_SLACK = 1e-3


def clip_is_identity(norm: float, max_norm: float) -> bool:
    """Whether clipping to `max_norm` leaves gradients of total norm `norm` exactly as
    they are (False for NaN: the exact rule decides)."""
    return (norm + CLIP_EPS) * (1.0 + CLIP_SLACK) < max_norm
