"""LineSearch guard with a real GaussianActor: the first admissible fraction is the one
committed (by KL, by the cost slack, by the reward rule), and a search with no admissible
fraction leaves the parameters bit for bit as they were."""

from __future__ import annotations

import copy

import pytest
import torch
from oracles import PlainPrecond
from torch.distributions import kl_divergence

from kfcpo.data.batch import Batch
from kfcpo.flat import get_flat, set_flat
from kfcpo.guard.base import PolicyMover, Proposal
from kfcpo.guard.line_search import LineSearch
from kfcpo.models.actor import GaussianActor

OBS, ACT, N = 5, 2, 64
DELTA, DECAY, STEPS = 0.01, 0.8, 15



def setup(seed: int = 0) -> tuple[GaussianActor, PolicyMover, Batch]:
    torch.manual_seed(seed)
    actor = GaussianActor(OBS, ACT, hidden=(16, 16))
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(N, OBS, generator=gen)
    z = torch.zeros(N)
    mb = Batch(obs, torch.randn(N, ACT, generator=gen), z, z, z, z, z)
    return actor, PolicyMover(actor, PlainPrecond(actor)), mb


def direction(actor: GaussianActor, size: float, seed: int = 1) -> torch.Tensor:
    v = torch.randn(get_flat(actor).numel(), generator=torch.Generator().manual_seed(seed))
    return size * v / v.norm()


def kl_at(actor: GaussianActor, theta: torch.Tensor, obs: torch.Tensor) -> float:
    """KL(pi_theta || pi_actor) on obs, computed on a copy: independent of the guard."""
    probe = copy.deepcopy(actor)
    set_flat(probe, theta)
    with torch.no_grad():
        return float(kl_divergence(probe.distribution(obs), actor.distribution(obs)).sum(-1).mean())


def linear_proposal(
    actor: GaussianActor, step: torch.Tensor, reward, cost, constraint: float | None
) -> Proposal:
    """Surrogates as functions of the step fraction f (recovered from the parameters), so the
    admissible fractions are known in closed form."""
    theta0 = get_flat(actor)
    norm2 = float(step @ step)

    def fraction() -> float:
        return float((get_flat(actor) - theta0) @ step) / norm2

    def evaluate() -> tuple[torch.Tensor, torch.Tensor | None]:
        f = fraction()
        return torch.tensor(reward(f)), (None if cost is None else torch.tensor(cost(f)))

    before = (torch.tensor(reward(0.0)), None if cost is None else torch.tensor(cost(0.0)))
    return Proposal(step, torch.ones_like(step), evaluate, before, constraint)


FRACTIONS = [DECAY**k for k in range(STEPS)]


def test_fractions_are_the_backtracking_schedule() -> None:
    assert LineSearch(DELTA, DECAY, STEPS).fractions() == pytest.approx(FRACTIONS)


def test_kl_alone_commits_the_first_fraction_within_delta() -> None:
    actor, mover, mb = setup()
    theta0, step = get_flat(actor), direction(actor, 1.5)
    kls = [kl_at(actor, theta0 + f * step, mb.obs) for f in FRACTIONS]
    first = next(k for k, kl in enumerate(kls) if kl <= DELTA)
    assert first >= 2  # a real backtrack: the full step and the next one are too far
    guard = LineSearch(DELTA, DECAY, STEPS)
    assert guard.commit(mover, step, mb) is True
    assert torch.equal(get_flat(actor), theta0 + FRACTIONS[first] * step)
    m = guard.metrics()
    assert m["ls_backtracks"] == first and m["ls_step_frac"] == pytest.approx(FRACTIONS[first])
    assert m["kl_step"] == pytest.approx(kls[first], rel=1e-5) and m["rollback_frac"] == 0.0


@pytest.mark.parametrize(
    ("constraint", "reward", "cost", "expected"),
    [
        # slack 0.05, cost rises 0.2 f: admissible for f <= 0.25 -> 0.8^7 = 0.2097
        (-0.05, lambda f: f, lambda f: 0.2 * f, 7),
        # feasible, reward f - 2 f^2 falls below its start for f > 0.5 -> 0.8^4 = 0.4096
        (-1.0, lambda f: f - 2 * f * f, lambda f: -f, 4),
        # violated (c > 0): the reward may fall; the cost must not rise: it falls -> full step
        (0.5, lambda f: f - 2 * f * f, lambda f: -f, 0),
        # no constraint (one objective): only the reward rule -> 0.8^4
        (None, lambda f: f - 2 * f * f, None, 4),
    ],
    ids=["cost_slack", "reward_must_improve", "violated_reward_may_fall", "unconstrained"],
)
def test_proposal_commits_the_first_admissible_fraction(constraint, reward, cost, expected: int) -> None:
    actor, mover, mb = setup()
    theta0, step = get_flat(actor), direction(actor, 1e-3)  # tiny: the KL never binds
    guard = LineSearch(DELTA, DECAY, STEPS)
    assert guard.propose(mover, linear_proposal(actor, step, reward, cost, constraint), mb) is True
    assert torch.equal(get_flat(actor), theta0 + FRACTIONS[expected] * step)
    m = guard.metrics()
    assert m["ls_backtracks"] == expected
    # (the fraction is read back from float32 parameters: about 4 significant digits)
    assert m["ls_improve"] == pytest.approx(reward(FRACTIONS[expected]), rel=1e-3)
    # expected improvement g_r . (f step) with g_r = ones
    assert m["ls_expected_improve"] == pytest.approx(FRACTIONS[expected] * float(step.sum()), rel=1e-5)


def test_nothing_admissible_restores_bit_for_bit() -> None:
    actor, mover, mb = setup()
    before = [p.detach().clone() for p in actor.parameters()]
    theta0 = get_flat(actor)
    step = direction(actor, 200.0)  # even 0.8^14 of it is far outside delta
    assert kl_at(actor, theta0 + FRACTIONS[-1] * step, mb.obs) > DELTA
    guard = LineSearch(DELTA, DECAY, STEPS)
    assert guard.commit(mover, step, mb) is False
    for p, q in zip(actor.parameters(), before, strict=True):
        assert torch.equal(p.detach(), q)
    # and by the surrogate rules: a violated constraint whose cost rises at every fraction
    small = direction(actor, 1e-3)
    assert guard.propose(mover, linear_proposal(actor, small, lambda f: f, lambda f: f, 0.5), mb) is False
    for p, q in zip(actor.parameters(), before, strict=True):
        assert torch.equal(p.detach(), q)
    assert guard.metrics()["rollback_frac"] == 1.0


def test_nonfinite_step_or_surrogate_is_refused() -> None:
    actor, mover, mb = setup()
    theta0 = get_flat(actor)
    bad = direction(actor, 1e-3)
    bad[0] = float("nan")
    guard = LineSearch(DELTA, DECAY, STEPS)
    assert guard.commit(mover, bad, mb) is False
    step = direction(actor, 1e-3)
    nan_reward = linear_proposal(actor, step, lambda f: float("nan") if f else 0.0, None, None)
    assert guard.propose(mover, nan_reward, mb) is False
    assert torch.equal(get_flat(actor), theta0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"target_kl": 0.0}, "target_kl"), ({"decay": 1.0}, "decay"), ({"steps": 0}, "steps")],
)
def test_bad_parameters_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LineSearch(**kwargs)


# -- several ranks ----------------------------------------------------------------------
DDP_N, DDP_OBS = 256, 6


def ddp_batch() -> Batch:
    g = torch.Generator().manual_seed(0)
    obs, act = torch.randn(DDP_N, DDP_OBS, generator=g), torch.randn(DDP_N, ACT, generator=g)
    z = torch.zeros(DDP_N)
    return Batch(obs, act, z, torch.randn(DDP_N, generator=g), torch.randn(DDP_N, generator=g), z, z)


def cpo_update(batch: Batch, ep_cost: float) -> torch.Tensor:
    """One CPO epoch (cg x cpo x line_search, one full-batch step); the final parameters."""
    from kfcpo.algorithm import Algorithm
    from kfcpo.update import UpdateConfig, policy_update

    torch.manual_seed(1)
    actor = GaussianActor(DDP_OBS, ACT, [8, 8])
    with torch.no_grad():
        batch.logp_old = actor.log_prob(batch.obs, batch.act)
    algorithm = Algorithm.from_sections(
        actor, {"name": "cg"},
        {"name": "cpo", "target_kl": 0.05},  # large: the search backtracks
        {"name": "line_search", "target_kl": 0.01},
    )
    cfg = UpdateConfig(update_iters=1, minibatch_size=0, critic_iters=0, critic_minibatch_size=1,
                       cost_limit=25.0)
    policy_update(actor, batch, algorithm, ep_cost, cfg, torch.Generator().manual_seed(0))
    return get_flat(actor)


def _cpo_rank_main(rank: int, world: int, port: int, ep_cost: float, out: str) -> None:
    import os

    import torch.distributed as torch_dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch_dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    half = DDP_N // world
    flat = cpo_update(ddp_batch().select(torch.arange(rank * half, (rank + 1) * half)), ep_cost)
    torch.save(flat, f"{out}.{rank}")
    torch_dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("ep_cost", [20.0, 40.0], ids=["feasible", "violated"])
def test_two_ranks_search_alike_and_equal_one_rank_over_the_union(ep_cost: float, tmp_path) -> None:
    """Every decision (CPO case, accepted fraction) is made from rank-averaged values: both
    ranks end bit-identical, and equal (to round-off) the one-process update of the union."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "flat")
    mp.start_processes(_cpo_rank_main, args=(2, port, ep_cost, out), nprocs=2, start_method="spawn")
    rank0, rank1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert torch.equal(rank0, rank1)
    single = cpo_update(ddp_batch(), ep_cost)
    torch.testing.assert_close(rank0, single, rtol=1e-4, atol=1e-5)
