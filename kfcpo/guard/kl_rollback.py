"""KL rollback guard (docs/algorithm.md 2.3, 3.3).

Each proposed step is applied, KL(pi_new || pi_old) is measured on the minibatch's states,
and the step is undone exactly (parameters and optimizer state, via the PolicyMover) when
that KL exceeds eps_KL or anything turned non-finite. Invariant: no committed step has a
measured KL above eps_KL.
"""

from __future__ import annotations

import math

import torch

from kfcpo.data.batch import Batch
from kfcpo.flat import params_of
from kfcpo.guard.base import Guard, PolicyMover, any_nonfinite, mean_kl, nan_tolerant_distributions


class KLRollback(Guard):
    """Commit a step only if its measured minibatch KL is <= target_kl (eps_KL); with
    `epoch_kl` > 0, also end the epoch's updates once the policy has drifted more than
    that from the rollout policy (a kfcpo addition to the paper's guard; 0 turns it off).

    Metrics (per epoch): `rollback_frac` = proposed steps not committed / proposed steps
    (KL rollbacks and non-finite refusals alike); `kl_step` = mean measured KL over the
    committed steps (0.0 when none was committed: the policy did not move);
    `nonfinite_skips` = how many steps were refused for a non-finite step, KL or
    parameter. Counters are reset by `begin_epoch` and also by reading `metrics()`
    (which returns them first): kfcpo.algorithm's read-and-reset contract;
    `metrics()` is {} when no step was proposed since the last reset.
    """

    def __init__(self, target_kl: float = 0.01, epoch_kl: float = 0.0) -> None:
        if not (isinstance(target_kl, int | float) and math.isfinite(target_kl) and target_kl > 0):
            raise ValueError(f"target_kl must be a finite number > 0, got {target_kl!r}")
        if not (isinstance(epoch_kl, int | float) and math.isfinite(epoch_kl) and epoch_kl >= 0):
            raise ValueError(f"epoch_kl must be a finite number >= 0 (0 = off), got {epoch_kl!r}")
        self.target_kl = float(target_kl)
        self.epoch_kl = float(epoch_kl)
        self.begin_epoch()

    def stop(self, kl_from_rollout: float) -> bool:
        # Each committed step is bounded, but dozens of them per epoch compound: without
        # a stop on the drift from the rollout policy (measured: KL 1-2 after 10 passes)
        # the surrogate is evaluated far outside where it means anything. The crossing step
        # is kept, so the drift ends past epoch_kl (docs/algorithm.md 3.3). 0 = paper-pure.
        return self.epoch_kl > 0 and kl_from_rollout > self.epoch_kl

    def begin_epoch(self) -> None:
        self._proposed = 0
        self._committed = 0
        self._kl_sum = 0.0
        self._nonfinite = 0

    def commit(self, mover: PolicyMover, step: torch.Tensor, mb: Batch) -> bool:
        self._proposed += 1
        # A non-finite step is refused before it touches anything: nothing to restore.
        if any_nonfinite([step]):
            self._nonfinite += 1
            return False
        snap = mover.snapshot()
        old = mover.old_distribution(mb.obs)
        mover.apply(step)
        with nan_tolerant_distributions():
            kl = mean_kl(mover.actor, mb.obs, old)  # already averaged over ranks
        nonfinite = not math.isfinite(kl) or any_nonfinite(params_of(mover.actor))
        if nonfinite or kl > self.target_kl:
            mover.restore(snap)
            self._nonfinite += int(nonfinite)
            return False
        self._committed += 1
        self._kl_sum += kl
        return True

    def metrics(self) -> dict[str, float]:
        if self._proposed == 0:
            out: dict[str, float] = {}
        else:
            out = {
                "rollback_frac": (self._proposed - self._committed) / self._proposed,
                "kl_step": self._kl_sum / self._committed if self._committed else 0.0,
                "nonfinite_skips": float(self._nonfinite),
            }
        self.begin_epoch()
        return out
