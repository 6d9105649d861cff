"""P3O penalty objective against a hand-computed example.

A stand-in policy whose log-probabilities are free parameters z makes every ratio and
every derivative computable by hand: rho_i = exp(z_i - logp_old_i), d rho_i / d z_i = rho_i.
The five samples cover both clipping branches of each surrogate (upper and lower) and the
unclipped inside of the range; two cost limits switch the ReLU on and off.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kfcpo.blender.base import Directions
from kfcpo.blender.penalty import PenaltyBlender
from kfcpo.data.batch import Batch

RHO = [1.5, 0.5, 0.5, 1.5, 1.1]
ADV_R = [1.0, -1.0, 1.0, -1.0, 2.0]
ADV_C = [1.0, -1.0, 1.0, -1.0, 0.5]
KAPPA, CLIP, N = 20.0, 0.2, len(RHO)
# Reward: min(rho A, clip(rho) A) = [1.2 (clipped), -0.8 (clipped), 0.5, -1.5, 2.2] -> mean 0.32;
# d/d rho = [0, 0, 1, -1, 2] / 5.
REWARD, D_REWARD = 0.32, [0.0, 0.0, 0.2, -0.2, 0.4]
# Cost: max(rho A_c, clip(rho) A_c) = [1.5, -0.5, 0.8 (clipped), -1.2 (clipped), 0.55] -> mean 0.23;
# d/d rho = [1, -1, 0, 0, 0.5] / 5.
COST, D_COST = 0.23, [0.2, -0.2, 0.0, 0.0, 0.1]


class FreeLogProb(nn.Module):
    """log pi(a|s) of sample i is the parameter z_i (0 here, so rho = exp(-logp_old))."""

    def __init__(self) -> None:
        super().__init__()
        self.z = nn.Parameter(torch.zeros(N, dtype=torch.float64))

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.z


def t64(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def batch() -> Batch:
    zeros = torch.zeros(N, dtype=torch.float64)
    logp_old = -torch.log(t64(RHO))
    return Batch(zeros[:, None], zeros[:, None], logp_old, t64(ADV_R), t64(ADV_C), zeros, zeros)


@pytest.mark.parametrize(
    ("c", "active"),
    [(-0.1, True), (-0.5, False)],  # excess = 0.23 + c: 0.13 (penalty on) or -0.27 (off)
)
def test_objective_value_and_gradient_by_hand(c: float, active: bool) -> None:
    blender, actor = PenaltyBlender(kappa=KAPPA, clip=CLIP), FreeLogProb()
    blender.observe_cost(ep_cost=25.0 + c, cost_limit=25.0)
    objective, cost = blender.surrogates(actor, batch())  # type: ignore[arg-type]
    assert cost is None  # one objective: the cost is folded in
    expected = REWARD - (KAPPA * (COST + c) if active else 0.0)
    assert float(objective.detach()) == pytest.approx(expected, abs=1e-12)
    (grad,) = torch.autograd.grad(objective, actor.z)
    # dL/dz_i = rho_i * (dL_r/drho_i - kappa [active] dL_c/drho_i)
    weight = KAPPA if active else 0.0
    by_hand = [rho * (dr - weight * dc) for rho, dr, dc in zip(RHO, D_REWARD, D_COST, strict=True)]
    torch.testing.assert_close(grad, torch.tensor(by_hand, dtype=torch.float64), rtol=0, atol=1e-12)
    if active:  # spelled out: [-6, 2, 0.1, -0.3, -1.76]
        torch.testing.assert_close(grad, torch.tensor([-6.0, 2.0, 0.1, -0.3, -1.76], dtype=torch.float64))


def test_metrics_report_the_active_fraction_and_cost_surrogate() -> None:
    blender, actor = PenaltyBlender(kappa=KAPPA, clip=CLIP), FreeLogProb()
    for c in (-0.1, -0.5):
        blender.observe_cost(25.0 + c, 25.0)
        blender.surrogates(actor, batch())  # type: ignore[arg-type]
    with torch.no_grad():  # a guard's probe is not counted
        blender.surrogates(actor, batch())  # type: ignore[arg-type]
    m = blender.metrics()
    assert m["penalty_active_frac"] == 0.5
    assert m["cost_surrogate"] == pytest.approx(COST)
    assert blender.metrics() == {}


def test_blend_passes_the_gradient_or_scales_it_to_the_trust_region() -> None:
    g = torch.tensor([3.0, 4.0], dtype=torch.float64)
    d = Directions(g, g, None, None, 0.0, 25.0)

    class Eye:
        def quad(self, v: torch.Tensor) -> torch.Tensor:
            return v @ v

    assert PenaltyBlender().needs_cost_direction is False
    assert torch.equal(PenaltyBlender().blend(d, Eye()), g)  # type: ignore[arg-type]
    scaled = PenaltyBlender(scale="trust_region", target_kl=0.02).blend(d, Eye())  # type: ignore[arg-type]
    assert float(0.5 * scaled @ scaled) == pytest.approx(0.02)
    torch.testing.assert_close(scaled / scaled.norm(), g / g.norm())  # same direction


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"kappa": 0.0}, "kappa"), ({"clip": 1.5}, "clip"), ({"scale": "big"}, "scale")],
)
def test_bad_parameters_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PenaltyBlender(**kwargs)
