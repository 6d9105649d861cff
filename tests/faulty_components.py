"""Broken registry components for negative controls (loaded through an extra registry
folder, the way users add their own components): one that fails on one rank (the DDP
failure test), one that moves rank 1's policy a little further (the sync check's control),
one whose cost direction is reversed (the learning test)."""

import torch

from kfcpo.blender.base import Directions
from kfcpo.blender.margin import MarginBlender
from kfcpo.dist import world_size
from kfcpo.preconditioner.base import Preconditioner
from kfcpo.preconditioner.identity import Identity


class FailsOnRank1(Identity):
    def update(self, obs: torch.Tensor) -> None:
        if world_size() > 1 and torch.distributed.get_rank() == 1:
            raise RuntimeError("injected failure on rank 1")


class SkewedOnRank1(MarginBlender):
    """KFCPO's blender with rank 1's step 0.1% longer: the ranks' policies drift apart,
    which the sync check must catch."""

    def blend(self, d: Directions, precond: Preconditioner) -> torch.Tensor:
        step = super().blend(d, precond)
        return step * 1.001 if world_size() > 1 and torch.distributed.get_rank() == 1 else step


class CostAscendingMargin(MarginBlender):
    """KFCPO's blender with the cost direction negated: it ascends the cost wherever the
    real one descends it. The learning test's negative control."""

    def blend(self, d: Directions, precond: Preconditioner) -> torch.Tensor:
        flipped = Directions(d.g_r, d.x_r, -d.g_c, -d.x_c, d.ep_cost, d.cost_limit)
        return super().blend(flipped, precond)


class RewardDescendingMargin(MarginBlender):
    """KFCPO's blender with the reward direction negated (a negative control)."""

    def blend(self, d: Directions, precond: Preconditioner) -> torch.Tensor:
        flipped = Directions(-d.g_r, -d.x_r, d.g_c, d.x_c, d.ep_cost, d.cost_limit)
        return super().blend(flipped, precond)
