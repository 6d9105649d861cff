"""The epoch's data as an IterableDataset: each pass collects one fresh rollout.

It yields exactly one item per Lightning epoch, the whole rollout, and then stops.
Lightning's fetcher asks for the next item before running the training step (to know
whether the epoch is over); because the generator ends right after its single yield,
that look-ahead cannot collect a second rollout with the not-yet-updated policy. The
minibatch loop lives inside the update (measured: a Lightning step per minibatch costs
more than the minibatch math itself, by the plain-loop column of an earlier version of
`kfcpo bench throughput`, then the script tools/bench_throughput.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch.utils.data import IterableDataset

from kfcpo.data.batch import Rollout


class RolloutDataset(IterableDataset):
    """One item per epoch: the rollout `collect()` returns, collected when Lightning asks
    (in this process, with the live policy)."""

    def __init__(self, collect: Callable[[], Rollout]) -> None:
        super().__init__()
        self.collect = collect

    def __iter__(self) -> Iterator[Rollout]:
        yield self.collect()
