"""Running observation statistics and the normalizer the rollout applies.

Not a gymnasium wrapper: the rollout code owns the statistics, so they are
explicit, checkpointable and can be merged across DDP ranks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

DEFAULT_CLIP = 10.0
# Keeps constant features (var 0) finite instead of dividing by zero.
DEFAULT_EPSILON = 1e-8


class RunningMeanStd:
    """Mean and population variance (ddof 0) of a stream of batches, in float64.

    Batches are combined with Chan et al.'s parallel formula, which stays
    accurate for long streams and equals the statistics of the concatenated data;
    ``merge`` applies the same formula to statistics from another rank.
    Before any data: mean 0, var 1, count 0.
    """

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.shape = tuple(shape)
        self.mean = np.zeros(self.shape, dtype=np.float64)
        self.var = np.ones(self.shape, dtype=np.float64)
        self.count = 0.0

    def update(self, batch: ArrayLike) -> None:
        """Add a batch of shape ``(n, *shape)``."""
        self.merge(*batch_moments(batch, self.shape))

    def merge(self, other_count: float, other_mean: ArrayLike, other_var: ArrayLike) -> None:
        """Fold in the (count, mean, population var) of data not seen here."""
        if other_count <= 0:
            return
        other_mean = np.asarray(other_mean, dtype=np.float64)
        other_var = np.asarray(other_var, dtype=np.float64)
        total = self.count + other_count
        delta = other_mean - self.mean
        # Sum of squared deviations of the union, from both parts' own sums.
        m2 = self.var * self.count + other_var * other_count + delta**2 * self.count * other_count / total
        self.mean = self.mean + delta * (other_count / total)
        self.var = m2 / total
        self.count = float(total)

    def state_dict(self) -> dict[str, Any]:
        """Mean, variance and count, for exact resume."""
        # Plain lists and floats: exact for float64 and loadable by
        # torch.load(weights_only=True), unlike numpy arrays.
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; ValueError if the shape differs."""
        mean = np.asarray(state["mean"], dtype=np.float64)
        if mean.shape != self.shape:
            raise ValueError(f"state has shape {mean.shape}, expected {self.shape}")
        self.mean = mean
        self.var = np.asarray(state["var"], dtype=np.float64).reshape(self.shape)
        self.count = float(state["count"])


def batch_moments(batch: ArrayLike, shape: tuple[int, ...]) -> tuple[int, np.ndarray, np.ndarray]:
    """``(count, mean, population var)`` of a batch of shape ``(n, *shape)`` in float64:
    what ``RunningMeanStd.merge`` takes, computed once when several statistics take the
    same batch (the rollout: its normalizer and, under DDP, its epoch statistics)."""
    batch = np.asarray(batch, dtype=np.float64).reshape(-1, *shape)
    count = len(batch)
    if not count:
        return 0, np.zeros(shape), np.ones(shape)
    # The steps np.mean and np.var take (a sum divided by the count; the squared
    # deviations from that mean, summed, divided), so the same numbers, with the mean
    # computed once instead of twice and without their wrappers: a rollout step calls
    # this on a few rows, where the wrappers cost more than the arithmetic.
    mean = np.add.reduce(batch, axis=0) / count
    deviation = batch - mean
    return count, mean, np.add.reduce(deviation * deviation, axis=0) / count


class ObsNormalizer:
    """``clip((obs - mean) / std, -clip, clip)`` over running statistics."""

    def __init__(
        self,
        shape: tuple[int, ...],
        enabled: bool = True,
        clip: float | None = DEFAULT_CLIP,
        epsilon: float = DEFAULT_EPSILON,
    ) -> None:
        self.rms = RunningMeanStd(shape)
        self.enabled = enabled
        self.clip = clip
        self.epsilon = epsilon

    def update(self, batch: ArrayLike) -> None:
        """Add a batch of observations to the statistics (no-op when disabled)."""
        if self.enabled:
            self.rms.update(batch)

    def merge(self, count: float, mean: ArrayLike, var: ArrayLike) -> None:
        """Add a batch's ``batch_moments`` to the statistics (no-op when disabled)."""
        if self.enabled:
            self.rms.merge(count, mean, var)

    def normalize(
        self, obs: ArrayLike, clip: float | None = None, dtype: DTypeLike = np.float32
    ) -> np.ndarray:
        """Normalized ``obs`` (unchanged values when disabled), as ``dtype``.

        ``clip`` defaults to the normalizer's own; pass ``float("inf")`` for none.
        """
        obs = np.asarray(obs, dtype=np.float64)
        if not self.enabled:
            return obs.astype(dtype)
        clip = self.clip if clip is None else clip
        out = (obs - self.rms.mean) / np.sqrt(self.rms.var + self.epsilon)
        if clip is not None:
            out = np.clip(out, -clip, clip)
        return out.astype(dtype)

    def state_dict(self) -> dict[str, Any]:
        """Whether it normalizes, its clip and its running statistics."""
        return {"enabled": self.enabled, "clip": self.clip, "rms": self.rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        self.enabled = bool(state["enabled"])
        self.clip = state["clip"]
        self.rms.load_state_dict(state["rms"])
