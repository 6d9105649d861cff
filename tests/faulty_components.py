"""A registry component that fails on one rank, for the DDP failure test (it is loaded
through an extra catalogue folder, the way users add their own components)."""

import torch

from kfcpo.dist import world_size
from kfcpo.precond.identity import Identity


class FailsOnRank1(Identity):
    def update(self, obs: torch.Tensor) -> None:
        if world_size() > 1 and torch.distributed.get_rank() == 1:
            raise RuntimeError("injected failure on rank 1")
