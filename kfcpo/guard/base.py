"""The guard contract: whether a proposed step is committed, and when to stop updating."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributions import Distribution, Normal, kl_divergence

from kfcpo.data.batch import Batch
from kfcpo.dist import all_mean, all_sum
from kfcpo.flat import get_flat, set_flat
from kfcpo.models.actor import GaussianActor
from kfcpo.preconditioner.base import Preconditioner


def mean_kl(actor: GaussianActor, obs: torch.Tensor, old: Normal) -> float:
    """E_s[KL(pi_theta(.|s) || old(.|s))], averaged over ranks so all ranks agree."""
    with torch.no_grad():
        kl = kl_divergence(actor.distribution(obs), old).sum(-1).mean()
    return float(all_mean(kl))


def any_nonfinite(tensors: list[torch.Tensor]) -> bool:
    """True when any tensor on *any* rank holds inf/NaN, so all ranks decide alike."""
    bad = torch.stack([~torch.isfinite(t).all() for t in tensors]).any().float()
    return bool(all_sum(bad) > 0)


@contextmanager
def nan_tolerant_distributions() -> Iterator[None]:
    """Let a NaN policy output give a NaN KL instead of raising.

    torch validates distribution arguments by default, so Normal(NaN, ...) raises
    ValueError. Raised on one rank only, that would skip the all-reduce inside mean_kl and
    hang the others; a NaN KL is instead reduced and rolled back on every rank alike.
    """
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


class PolicyMover:
    """Moves the policy and can put it back exactly (parameters and optimizer state).
    `moves` counts the calls that changed (or may have changed) the parameters."""

    def __init__(self, actor: GaussianActor, precond: Preconditioner) -> None:
        self.actor, self.precond = actor, precond
        self.moves = 0

    def snapshot(self) -> tuple[torch.Tensor, Any]:
        """The policy's flat parameters and the preconditioner's optimizer state."""
        return get_flat(self.actor), self.precond.step_state()

    def restore(self, snap: tuple[torch.Tensor, Any]) -> None:
        """Put back exactly what `snapshot` returned."""
        flat, opt_state = snap
        set_flat(self.actor, flat)
        if opt_state is not None:
            self.precond.load_step_state(opt_state)
        self.moves += 1

    def apply(self, step: torch.Tensor) -> None:
        """Move the policy by `step` (through the preconditioner's optimizer, if any)."""
        self.precond.apply_step(step)
        self.moves += 1

    def old_distribution(self, obs: torch.Tensor) -> Normal:
        """The policy's current distribution on `obs`, without a graph (the reference a
        KL is measured from)."""
        with torch.no_grad():
            return self.actor.distribution(obs)


class RolloutDrift:
    """The policy's drift from the rollout policy: `mean_kl` on the whole rollout's states,
    measured once per parameter state. The update asks for it after a step, after the pass
    and for the epoch's metric, often with no move in between (KL rollback's full-batch
    step: after the step and again after its pass); a forward pass over every state of
    the rollout each time. Asked again before the `mover` moved the policy, it returns the
    measurement it has (the same number: the same parameters, the same computation)."""

    def __init__(self, mover: PolicyMover, obs: torch.Tensor) -> None:
        self.mover, self.obs = mover, obs
        self.rollout_policy = mover.old_distribution(obs)  # the policy now: KL 0
        self._kl: float | None = None
        self._at_moves = mover.moves  # the mover's count when `_kl` was measured

    def __call__(self) -> float:
        """KL(pi_theta || rollout policy) averaged over the rollout's states and ranks."""
        if self._kl is None or self._at_moves != self.mover.moves:
            self._kl = mean_kl(self.mover.actor, self.obs, self.rollout_policy)
            self._at_moves = self.mover.moves
        return self._kl


Objectives = tuple[torch.Tensor, torch.Tensor | None]


def rank_means(values: Objectives) -> tuple[float, float | None]:
    """(L_r, L_c) averaged over ranks in one all-reduce, as Python floats."""
    loss_r, loss_c = values
    parts = [loss_r.detach().reshape(())] + ([] if loss_c is None else [loss_c.detach().reshape(())])
    means = all_mean(torch.stack(parts).double()).tolist()
    return means[0], (means[1] if loss_c is not None else None)


@dataclass
class Proposal:
    """A step and what a guard may check it against besides the KL (a line search does).

    Everything is lazy, so guards that look only at the step pay nothing, and every value
    is averaged over ranks, so decisions made from them agree on all ranks.

    step: the blended ascent step (identical on all ranks).
    g_r: the rank-averaged reward gradient at the parameters the step starts from.
    evaluate: the blender's surrogates (L_r, L_c or None) at the policy's *current*
        parameters on the minibatch (as tensors, not yet reduced).
    before: the same surrogates at the starting parameters (already computed by the loop).
    constraint: c = Jc - d when the blender keeps the cost as a constraint (it asked for
        g_c); None when the cost is folded into the one objective (Lagrangian, penalty).
    """

    step: torch.Tensor
    g_r: torch.Tensor
    evaluate: Callable[[], Objectives]
    before: Objectives
    constraint: float | None

    def objectives(self) -> tuple[float, float | None]:
        """(L_r, L_c) at the current parameters, rank-averaged (no graph is built)."""
        with torch.no_grad():
            return rank_means(self.evaluate())

    def objectives_before(self) -> tuple[float, float | None]:
        """(L_r, L_c) at the starting parameters, rank-averaged."""
        return rank_means(self.before)

    def expected_gain(self, fraction: float = 1.0) -> float:
        """First-order predicted rise of L_r for `fraction * step`: fraction * g_r . step."""
        return fraction * float(torch.dot(self.g_r.double(), self.step.double()))


class Guard(ABC):
    """Decides whether each proposed step is committed (`commit` / `propose`) and when the
    epoch's policy updates end (`stop`, given the KL of the policy from the rollout policy
    over the whole rollout). The update loop asks `stop` after every pass, and also after
    every step that moved the policy when `check_every_step` is True.

    A guard holds nothing across epochs (`begin_epoch` resets it), so it has no checkpoint
    state; `metrics()` follows the contract of kfcpo.algorithm."""

    #: ask `stop` after every committed step (True) or only after every pass (False)
    check_every_step: bool = True

    def begin_epoch(self) -> None:  # noqa: B027 - optional hook
        """Called once per epoch before the policy update: reset per-epoch counters."""

    @abstractmethod
    def commit(self, mover: PolicyMover, step: torch.Tensor, mb: Batch) -> bool:
        """Apply `step` (or a part of it); return whether the policy moved."""

    def propose(self, mover: PolicyMover, proposal: Proposal, mb: Batch) -> bool:
        """What the update loop calls. Guards that judge a step by itself and its KL need
        only `commit`; a guard that also checks the surrogates (line search) overrides this."""
        return self.commit(mover, proposal.step, mb)

    def stop(self, kl_from_rollout: float) -> bool:
        """Given the KL of the policy from the rollout policy on the whole rollout (the
        same on all ranks): True ends the epoch's policy updates."""
        return False

    def metrics(self) -> dict[str, float]:
        """Diagnostics since the previous call, then reset; the contract is
        kfcpo.algorithm's."""
        return {}
