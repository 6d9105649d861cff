"""Rollouts as data: GAE, the collector, the per-epoch IterableDataset."""

from kfcpo.data.batch import Batch, EpochStats, Rollout
from kfcpo.data.dataset import RolloutDataset
from kfcpo.data.gae import gae

__all__ = ["Batch", "EpochStats", "Rollout", "RolloutDataset", "gae"]
