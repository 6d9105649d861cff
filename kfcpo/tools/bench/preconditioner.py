"""`kfcpo bench preconditioner`: cost of the curvature work per policy update, relative to the two
surrogate gradients.

One "update" of a preconditioner here is what an update rule spends on curvature:
`update(obs)` + `solve(g_r)` + `solve(g_c)` + one `quad`. It is reported as a multiple of
the cost of g_r and g_c themselves (one forward, two backward passes of E[ratio * A]),
median over repeats, for SafetyPointButton1-sized policies on random states. A second
table compares the K-FAC G estimators ("expected" vs "sampled") in accuracy and time.

    kfcpo bench preconditioner [--repeats 5] [--sizes 128 2000 20000] [--stat median|min]
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from functools import partial

import torch

from kfcpo.flat import flat_grad, params_of
from kfcpo.models.actor import GaussianActor
from kfcpo.preconditioner.base import Preconditioner
from kfcpo.preconditioner.cg import ConjugateGradient
from kfcpo.preconditioner.kfac import KFAC
from kfcpo.tools.commands import PRECOND_STATS

# SafetyPointButton1: 60-dimensional observation (lidar), 2 actions.
OBS_DIM, ACT_DIM = 60, 2
HIDDENS = ((64, 64), (256, 256))
# The project's targets for curvature cost: K-FAC within 1.5x of the two gradients' time,
# and CG at least 20x slower than K-FAC (the speed K-FAC exists for).
KFAC_BUDGET, CG_SLOWDOWN = 1.5, 20.0
# Output-layer gain standing in for a trained policy in the estimator comparison.
TRAINED_OUT_GAIN = 1.0
# Summary over repeats: the median (default) or the best, which shared-machine noise
# can only make worse, never better.
Stat = Callable[[list[float]], float]
STATS: dict[str, Stat] = dict(zip(PRECOND_STATS, (statistics.median, min), strict=True))
# Batches below this many states are timed over several calls per repeat.
SMALL_BATCH_STATES = 2000
# Amortized cost with the eigendecomposition every T_f = 10 updates (ACKTR's value).
SPARSE_INVERT = 10


class Problem:
    """A policy, a batch of states and the two surrogate gradients at that policy."""

    def __init__(self, hidden: tuple[int, ...], n: int, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.actor = GaussianActor(OBS_DIM, ACT_DIM, hidden)
        self.obs = torch.randn(n, OBS_DIM)
        with torch.no_grad():
            dist = self.actor.distribution(self.obs)
            self.act = dist.sample()
            self.logp_old = dist.log_prob(self.act).sum(-1)
        self.adv_r, self.adv_c = torch.randn(n), torch.randn(n)

    def gradients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """g_r and g_c, the gradients of the two surrogates at the current policy."""
        params = params_of(self.actor)
        ratio = torch.exp(self.actor.log_prob(self.obs, self.act) - self.logp_old)
        g_r = flat_grad((ratio * self.adv_r).mean(), params, retain_graph=True)
        g_c = flat_grad((ratio * self.adv_c).mean(), params)
        return g_r, g_c


def seconds(fn: Callable[[], object], calls: int = 1) -> float:
    """Mean wall time of `calls` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def curvature_step(pre: Preconditioner, obs: torch.Tensor, g_r: torch.Tensor, g_c: torch.Tensor) -> None:
    """What an update rule spends on curvature: an update, two solves and one quad."""
    pre.update(obs)
    x_r, x_c = pre.solve(g_r), pre.solve(g_c)
    pre.quad(x_r - x_c)


def identity_factory() -> Callable[[GaussianActor], Preconditioner] | None:
    """The project's identity preconditioner, if it exists and takes just the actor."""
    try:
        module = importlib.import_module("kfcpo.preconditioner.identity")
    except ImportError:
        return None
    for obj in vars(module).values():
        if isinstance(obj, type) and issubclass(obj, Preconditioner) and obj is not Preconditioner:
            return obj
    return None


def cost_table(repeats: int, sizes: tuple[int, ...], stat: Stat) -> Iterator[str]:
    """Each repeat times the gradients and then every preconditioner back to back, and the
    ratios are taken within the repeat: on a shared machine the load drifts, and adjacent
    timings drift together."""
    factories: dict[str, Callable[[GaussianActor], Preconditioner]] = {
        "kfac": lambda a: KFAC(a),
        "kfac sampled": lambda a: KFAC(a, estimator="sampled"),
        f"kfac T_f={SPARSE_INVERT}": lambda a: KFAC(a, invert_every=SPARSE_INVERT),
        "cg": lambda a: ConjugateGradient(a),
    }
    identity = identity_factory()
    if identity is not None:
        factories = {"identity": identity, **factories}
    head = "| policy | N | 2 grads ms | " + " | ".join(f"{n} ms (x grads)" for n in factories)
    yield head + " | cg / kfac |"
    yield "|" + "---|" * (len(factories) + 4)
    for hidden in HIDDENS:
        for n in sizes:
            prob = Problem(hidden, n)
            g_r, g_c = prob.gradients()
            # Small batches take ~ms: time several calls so timer and scheduler noise average
            # out; the T_f column spans whole inversion periods so its cost is amortized.
            calls = dict.fromkeys(factories, max(1, SMALL_BATCH_STATES // n))
            sparse = f"kfac T_f={SPARSE_INVERT}"
            calls[sparse] = SPARSE_INVERT * math.ceil(calls[sparse] / SPARSE_INVERT)
            pres = {name: make(prob.actor) for name, make in factories.items()}
            steps = {name: partial(curvature_step, pre, prob.obs, g_r, g_c) for name, pre in pres.items()}
            for fn in (prob.gradients, *steps.values()):  # warm-up: allocator, threads, lazy init
                fn()
            t_grad, t, ratio = [], {k: [] for k in steps}, {k: [] for k in [*steps, "cg/kfac"]}
            for _ in range(repeats):
                t_grad.append(seconds(prob.gradients, max(1, SMALL_BATCH_STATES // n)))
                for name, fn in steps.items():
                    t[name].append(seconds(fn, calls[name]))
                    ratio[name].append(t[name][-1] / t_grad[-1])
                ratio["cg/kfac"].append(t["cg"][-1] / t["kfac"][-1])
            if stat is min:  # best cost over best cost; a min of ratios would pair unlike repeats
                ratio = {k: [min(t[k]) / min(t_grad)] for k in steps}
                ratio["cg/kfac"] = [min(t["cg"]) / min(t["kfac"])]
            cells = [f"{1e3 * stat(t[k]):.1f} ({stat(ratio[k]):.2f}x)" for k in steps]
            yield (
                f"| {list(hidden)} | {n} | {1e3 * stat(t_grad):.1f} | "
                + " | ".join(cells)
                + f" | {stat(ratio['cg/kfac']):.0f}x |"
            )


def estimator_table(repeats: int, sizes: tuple[int, ...], stat: Stat) -> Iterator[str]:
    """ "sampled" (one action per state) against the exact "expected" factors it estimates,
    on a policy whose output layer has gain 1 (as after some training; at the 0.01 init gain
    the hidden-layer G are ~1e-4 and damping hides any estimator difference): relative
    Frobenius error of each G (first hidden layer ... output layer) and the cosine of the
    two natural-gradient directions; times are for one `update` (median)."""
    yield "| policy | N | expected ms | sampled ms | G rel. error per layer | cos(x_sampled, x_expected) |"
    yield "|---|---|---|---|---|---|"
    for hidden in HIDDENS:
        for n in sizes:
            prob = Problem(hidden, n)
            torch.nn.init.orthogonal_(prob.actor.mean_net[-1].weight, TRAINED_OUT_GAIN)
            g_r, _ = prob.gradients()
            exp_, smp = KFAC(prob.actor, decay=0.0), KFAC(prob.actor, decay=0.0, estimator="sampled")
            for pre in (exp_, smp):
                pre.update(prob.obs)
            t_exp, t_smp = [], []
            for _ in range(repeats):
                calls = max(1, SMALL_BATCH_STATES // n)
                t_exp.append(seconds(partial(exp_.update, prob.obs), calls))
                t_smp.append(seconds(partial(smp.update, prob.obs), calls))
            errs = [
                float((gs - ge).norm() / ge.norm())
                for (_, gs), (_, ge) in zip(smp.factors(), exp_.factors(), strict=True)
            ]
            x_e, x_s = exp_.solve(g_r), smp.solve(g_r)
            cos = float(x_e @ x_s / (x_e.norm() * x_s.norm()))
            err_txt = ", ".join(f"{e:.3f}" for e in errs)
            yield (
                f"| {list(hidden)} | {n} | {1e3 * stat(t_exp):.1f} | {1e3 * stat(t_smp):.1f} | "
                f"{err_txt} | {cos:.4f} |"
            )


def run(args: argparse.Namespace) -> int:
    """`kfcpo bench preconditioner`: both tables, printed row by row as they are measured."""
    sizes = tuple(args.sizes)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU, "
        f"obs_dim {OBS_DIM}, act_dim {ACT_DIM}, {args.stat} of {args.repeats}; "
        f"load average {load()} (timings on a shared machine drift with it)"
    )
    print(
        "\nCurvature cost per update (update + 2 solves + 1 quad), x = multiple of the two "
        f"gradients; targets: kfac <= {KFAC_BUDGET}x, cg >= {CG_SLOWDOWN:.0f}x kfac at N = {max(sizes)}\n"
    )
    for row in cost_table(args.repeats, sizes, STATS[args.stat]):
        print(row, flush=True)
    print("\nK-FAC G estimators (sampled: 1 action per state)\n")
    for row in estimator_table(args.repeats, sizes, STATS[args.stat]):
        print(row, flush=True)
    print(f"\nload average at the end: {load()}")
    return 0


def load() -> str:
    """The load averages: timings on a shared machine drift with them."""
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())

