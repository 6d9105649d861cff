"""The update of one epoch, top to bottom: the critical path of docs/algorithm.md section 1.

rollout (done) -> advantages (done, in the batch) -> for each minibatch:
gradients -> precondition -> blend and scale -> guard; then the critics.
Every preconditioner x blender x guard composition (an `Algorithm`, kfcpo.algorithm)
runs through this one loop; natural-gradient methods (CPO, PCPO, TRPO-Lag) are the case
of one full-batch minibatch (`minibatch_size` 0) and one pass.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from kfcpo.adam import AdamStep
from kfcpo.algorithm import Algorithm
from kfcpo.blender.base import Directions
from kfcpo.clip import CLIP_EPS, clip_is_identity
from kfcpo.data.batch import Batch
from kfcpo.dist import all_mean, all_mean_each
from kfcpo.flat import flat_grad, params_of
from kfcpo.guard.base import PolicyMover, Proposal, RolloutDrift
from kfcpo.metrics_schema import (
    GUARD_COMMITTED_FRAC,
    POLICY_KL,
    TIME_UPDATE_S,
    UPDATE_NONFINITE_STEPS,
    UPDATE_POLICY_STEPS,
    UPDATE_STOPPED_EARLY,
)
from kfcpo.models import Critics, GaussianActor
from kfcpo.models.critic_grad import SummedMSEGrad

# minibatch_size 0: the whole rollout (each rank's share of it) is one minibatch.
FULL_BATCH = 0


@dataclass
class UpdateConfig:
    """The settings of one epoch's update: the policy's passes and minibatches, the cost
    limit d, and the critics' regression."""

    update_iters: int
    minibatch_size: int  # FULL_BATCH (0) = the whole rollout
    critic_iters: int
    critic_minibatch_size: int
    cost_limit: float  # d, the episode-cost limit
    critic_l2: float = 0.0  # coefficient of the sum of squared critic parameters (0 = off)
    critic_max_grad_norm: float = 0.0  # clip each critic's gradient norm (0 = off)

    @classmethod
    def from_config(cls, cfg: Any) -> UpdateConfig:
        """The update settings of a validated run config."""
        m = cfg.model
        return cls(
            update_iters=cfg.update_iters, minibatch_size=cfg.minibatch_size,
            critic_iters=m.critic_iters, critic_minibatch_size=m.critic_minibatch_size,
            cost_limit=float(cfg.cost_limit), critic_l2=m.critic_l2,
            critic_max_grad_norm=m.critic_max_grad_norm,
        )


def minibatches(batch: Batch, size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index sets of a fresh shuffle per pass; the same count on every rank (ranks hold
    equal sizes)."""
    size = len(batch) if size == FULL_BATCH else size
    yield from torch.randperm(len(batch), generator=generator).split(size)


def policy_update(
    actor: GaussianActor,
    batch: Batch,
    algorithm: Algorithm,
    ep_cost: float,
    cfg: UpdateConfig,
    generator: torch.Generator,
) -> dict[str, float]:
    """One epoch's policy update of `actor` on the rollout `batch`: for each pass and
    minibatch, gradients -> precondition -> blend and scale -> guard (module docstring).

    Args:
        algorithm: the composition; its components keep their state across epochs.
        ep_cost: Jc, the episode-cost estimate this update acts on (NaN before any
            episode has finished: see below).
        generator: draws the minibatch shuffles (the critics' regression shares it).

    Returns the epoch's metrics under kfcpo.metrics_schema's keys: `policy/kl` (the
    policy's drift from the rollout policy), step counts, the components' own metrics
    (read and reset) and `time/update_s`.
    """
    start = time.perf_counter()
    precond, blender, guard = algorithm.precond, algorithm.blender, algorithm.guard
    cost_limit = cfg.cost_limit
    params = params_of(actor)
    mover = PolicyMover(actor, precond)
    drift = RolloutDrift(mover, batch.obs)
    # Before any episode has finished there is no Jc (NaN). The step then acts as if Jc = 0
    # (feasible), the start a multiplier or margin weight has anyway, but the blender's
    # controllers (multiplier, PID, trend) observe nothing: a made-up 0 in their memory
    # would read as a jump once the first episode ends.
    if math.isnan(ep_cost):
        ep_cost = 0.0
    else:
        blender.observe_cost(ep_cost, cost_limit)
    guard.begin_epoch()
    steps = committed = nonfinite = 0
    stopped = done = False
    passes = cfg.update_iters
    for pass_index in range(passes):
        chunks = list(minibatches(batch, cfg.minibatch_size, generator))
        for i, idx in enumerate(chunks):
            left = (passes - 1 - pass_index) * len(chunks) + len(chunks) - 1 - i  # minibatches after this
            mb = batch.select(idx)
            precond.update(mb.obs)
            loss_r, loss_c = blender.surrogates(actor, mb)
            want_cost = blender.needs_cost_direction and loss_c is not None
            g_r = all_mean(flat_grad(loss_r, params, retain_graph=want_cost))
            g_c = all_mean(flat_grad(loss_c, params)) if want_cost else None
            x_r = precond.solve(g_r)
            x_c = precond.solve(g_c) if g_c is not None else None
            step = blender.blend(Directions(g_r, x_r, g_c, x_c, ep_cost, cost_limit), precond)
            steps += 1
            if not torch.isfinite(step).all():
                nonfinite += 1  # never write NaN into the policy: skip this minibatch
                continue
            # What a line search checks besides the KL: the surrogates before and at each
            # candidate, and the constraint c = Jc - d when the blender keeps one.
            proposal = Proposal(
                step, g_r, evaluate=partial(blender.surrogates, actor, mb),
                before=(loss_r, loss_c if want_cost else None),
                constraint=ep_cost - cost_limit if want_cost else None,
            )
            moved = guard.propose(mover, proposal, mb)
            committed += moved
            # The drift stop is measured on the whole rollout (a minibatch's own KL
            # understates it ~4x, docs/algorithm.md), after each step that moved the policy
            # and after each pass (`drift` measures each parameter state once).
            done = bool(moved and guard.check_every_step and guard.stop(drift()))
            # A refused step of the whole rollout ends the update too: the policy, and with
            # it the gradients, curvature and w_c, are as they were, so each later pass would
            # propose the same step again (docs/algorithm.md 3.3).
            done = done or (not moved and len(idx) == len(batch))
            if done:
                stopped = left > 0
                break
        if done:
            break
        if pass_index < passes - 1 and guard.stop(drift()):
            stopped = True
            break
    metrics = {
        POLICY_KL: drift(),
        UPDATE_POLICY_STEPS: float(steps),
        GUARD_COMMITTED_FRAC: committed / max(steps, 1),
        UPDATE_NONFINITE_STEPS: float(nonfinite),
        UPDATE_STOPPED_EARLY: float(stopped),
        **algorithm.metrics(),
    }
    metrics[TIME_UPDATE_S] = time.perf_counter() - start
    return metrics


def _clip_each_critic(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """Each critic's gradient (row k of every stacked tensor) scaled to a total norm <=
    max_norm, as torch's clip_grad_norm_ would for that critic alone."""
    with torch.no_grad():
        # Usually nothing is clipped (0 of 1,570 minibatch steps in a fresh PointCircle1
        # epoch, 9 of 12,520 for PPO-Lag's): when the norm of both critics' gradients
        # together is below max_norm by far more than rounding, every coefficient below
        # is exactly 1 and the clip is the identity, found in 2 operations instead of ~30
        # (the kfcpo critic regression of a PointCircle1 epoch: 0.79 -> 0.73 s). Anything
        # else, NaN included, takes the exact rule. One norm of the concatenation costs
        # about half of a norm per tensor and a norm of the norms (17 -> 10 us per step).
        total = float(torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads])))
        if clip_is_identity(total, max_norm):
            return grads
        squares = torch.stack([g.reshape(g.shape[0], -1).pow(2).sum(1) for g in grads]).sum(0)
        coef = torch.clamp(max_norm / (squares.sqrt() + CLIP_EPS), max=1.0)
        return [g * coef.view(-1, *([1] * (g.dim() - 1))) for g in grads]


def critic_update(
    critics: Critics,
    targets: torch.Tensor,
    obs: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    cfg: UpdateConfig,
    generator: torch.Generator,
) -> float:
    """MSE regression of the critics (values (2, N)) on their targets (2, N); returns the
    last minibatch's summed MSE.

    With `critic_l2`, each critic's loss adds that coefficient times its squared parameters
    (added to the gradient as 2 l2 p: the same step without a second graph over every
    parameter); with `critic_max_grad_norm`, each critic's averaged gradient is clipped to
    that norm before the step (OmniSafe's critic_norm_coef, max_grad_norm).
    Gradients are averaged over ranks explicitly: `backward()` would fire DDP's reducer
    hooks outside the forward they belong to. They are written out by hand
    (kfcpo.models.critic_grad), bit-identical to torch.autograd.grad at a fraction of its
    per-step overhead (docs/algorithm.md 4.4); an activation without a hand-written
    backward takes autograd (`_autograd_grads`)."""
    params = list(critics.parameters())
    analytic = SummedMSEGrad.of(critics)
    # Autograd casts each gradient back to its input's dtype; the hand-written backward
    # assumes there is nothing to cast.
    if analytic is None or targets.dtype != critics.weights[0].dtype:
        grads_of = partial(_autograd_grads, critics, params)
    else:
        grads_of = analytic.grads
    # Detached views of the same storage: the in-place L2 add records no graph on them.
    values = [p.detach() for p in params]
    step = AdamStep(optimizer, params)
    l2_slope = 2.0 * cfg.critic_l2  # d/dp of l2 |p|^2
    max_norm = cfg.critic_max_grad_norm
    diff: torch.Tensor | None = None
    for _ in range(cfg.critic_iters):
        for idx in torch.randperm(obs.shape[0], generator=generator).split(cfg.critic_minibatch_size):
            # index_select copies the same rows as obs[idx] with less dispatch overhead.
            grads, diff = grads_of(obs.index_select(0, idx), targets.index_select(1, idx))
            grads = all_mean_each(grads)
            if l2_slope:  # in place: the gradients are this step's own tensors
                torch._foreach_add_(grads, values, alpha=l2_slope)
            if max_norm:
                grads = _clip_each_critic(grads, max_norm)
            step(grads)
    optimizer.zero_grad(set_to_none=True)
    # The MSE of the last minibatch only: no other step's loss is read.
    return float("nan") if diff is None else float(diff.pow(2).mean(1).sum())


def _autograd_grads(
    critics: Critics, params: list[torch.Tensor], obs: torch.Tensor, targets: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """`SummedMSEGrad.grads` by torch.autograd.grad, for critics without a hand-written
    backward: the gradients and the residual critics(obs) - targets."""
    diff = critics(obs) - targets
    grads = torch.autograd.grad(diff.pow(2).mean(1).sum(), params)
    return list(grads), diff.detach()
