"""The one Adam the framework builds (critics, and the policy under the identity preconditioner)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adam(params: Iterable[torch.Tensor], lr: float) -> torch.optim.Adam:
    """torch's fused Adam: one kernel over all parameters instead of a Python loop per
    tensor. Measured on the PPO-Lag critic regression (two [64, 64] critics, minibatch 64,
    CPU): 3.3-3.6 ms per step versus 5.0-5.2 ms for the default implementation."""
    return torch.optim.Adam(params, lr=lr, fused=True)
