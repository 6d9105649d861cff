"""MarginBlender (docs/algorithm.md 2.2) on constructed vectors, with fake curvatures F = I and F = SPD."""

from __future__ import annotations

import math

import pytest
import torch
from oracles import MatrixPrecond

from kfcpo.blender.base import Directions
from kfcpo.blender.margin import MarginBlender

D = 25.0  # cost limit
LAM = 0.7
DIM = 6
INNER = ("euclidean", "fisher")


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))



def identity_precond(n: int = DIM) -> MatrixPrecond:
    return MatrixPrecond(torch.eye(n, dtype=torch.float64))


def spd_precond(n: int = DIM, seed: int = 0) -> MatrixPrecond:
    a = torch.randn(n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return MatrixPrecond(a @ a.T + 0.5 * torch.eye(n, dtype=torch.float64))


def ill_conditioned_precond(n: int = DIM, seed: int = 0, cond: float = 1e3) -> MatrixPrecond:
    """A random rotation of eigenvalues 1 .. cond (policy Fishers are far worse conditioned)."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=gen))
    eigenvalues = torch.logspace(0.0, math.log10(cond), n, dtype=torch.float64)
    return MatrixPrecond(q @ torch.diag(eigenvalues) @ q.T)


PRECONDS = [pytest.param(identity_precond, id="identity"), pytest.param(spd_precond, id="spd")]


def directions(p: MatrixPrecond, g_r: torch.Tensor, g_c: torch.Tensor, jc: float, d: float = D):
    return Directions(g_r, p.solve(g_r), g_c, p.solve(g_c), jc, d)


def aligned_pair(p: MatrixPrecond, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients whose directions u_r = x_r and u_c = -x_c do not conflict."""
    x_r = scale * torch.tensor([1.0, 0.5, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    x_c = -scale * torch.tensor([0.0, 0.5, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    return p.m @ x_r, p.m @ x_c  # so that solve() gives back exactly these x


# -- weights ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("jc", "expected"),
    [(0.0, 0.000911051194401), (LAM * D, 0.5), (D, 0.952574126822433), (2 * D, 0.999997739675702)],
)
def test_cost_weight_matches_hand_computed_sigmoid(jc: float, expected: float) -> None:
    # sigmoid(10 (Jc - 0.7 d) / d): z = -7, 0, 3, 13
    assert MarginBlender().cost_weight(jc, D) == pytest.approx(expected, rel=1e-9)


def test_spec_quoted_weights_and_scale_invariance() -> None:
    b = MarginBlender()
    for frac, w in [(0.4, 0.05), (0.7, 0.5), (1.0, 0.95)]:
        assert b.cost_weight(frac * D, D) == pytest.approx(w, abs=5e-3)
        # normalized: the same Jc / d gives the same weight at any limit
        assert b.cost_weight(frac * 2.5, 2.5) == pytest.approx(b.cost_weight(frac * D, D))


@pytest.mark.parametrize("make", PRECONDS)
@pytest.mark.parametrize("jc", [0.0, LAM * D, D, 2 * D])
def test_blend_uses_weights_without_conflict(make, jc: float) -> None:
    p = make()
    g_r, g_c = aligned_pair(p, scale=1e-3)  # small: inside the trust region, nu = 1
    b = MarginBlender()
    d = directions(p, g_r, g_c, jc)
    w = sig(10 * (jc - LAM * D) / D)
    step = b.blend(d, p)
    torch.testing.assert_close(step, (1 - w) * d.x_r + w * (-d.x_c), rtol=1e-12, atol=0)
    m = b.metrics()
    assert m["w_c"] == pytest.approx(w, rel=1e-9)
    assert m["nu"] == 1.0 and m["projected_frac"] == 0.0 and m["cos_rc"] > 0


def test_unnormalized_weight_is_seed_form() -> None:
    b = MarginBlender(k=0.5, normalize=False)
    assert b.cost_weight(LAM * D, D) == 0.5
    assert b.cost_weight(20.0, D) == pytest.approx(sig(0.5 * (20.0 - LAM * D)), rel=1e-12)
    assert b.cost_weight(20.0, D) != pytest.approx(MarginBlender(k=0.5).cost_weight(20.0, D))
    # not scale invariant: same Jc/d, different limit, different weight
    assert b.cost_weight(0.8 * 2.5, 2.5) != pytest.approx(b.cost_weight(0.8 * D, D))


def test_extreme_costs_do_not_overflow() -> None:
    b = MarginBlender(normalize=False)
    assert b.cost_weight(1e9, D) == 1.0
    assert b.cost_weight(-1e9, D) == 0.0


def test_zero_cost_limit_is_the_limit_of_the_normalized_form() -> None:
    b = MarginBlender()
    assert b.cost_weight(1e-6, 0.0) == 1.0
    assert b.cost_weight(0.0, 0.0) == pytest.approx(sig(-10 * LAM))
    # the limit d -> 0+ it claims to be
    assert b.cost_weight(0.0, 1e-12) == pytest.approx(b.cost_weight(0.0, 0.0))
    assert b.cost_weight(1e-6, 1e-12) == pytest.approx(b.cost_weight(1e-6, 0.0))


# -- projection ------------------------------------------------------------------------
def conflicting(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    u_r = torch.randn(DIM, dtype=torch.float64, generator=gen)
    u_c = -u_r + 0.3 * torch.randn(DIM, dtype=torch.float64, generator=gen)
    assert torch.dot(u_r, u_c) < 0
    return u_r, u_c


@pytest.mark.parametrize("make", PRECONDS)
def test_cost_projection_on_conflict_is_orthogonal_to_reward(make) -> None:
    p = make()
    u_r, u_c = conflicting()
    u_r, u_c = 1e-3 * u_r, 1e-3 * u_c  # nu = 1, so the step is the blend itself
    b = MarginBlender()
    w = 0.5
    step = b.blend(Directions(p.m @ u_r, u_r, p.m @ -u_c, -u_c, LAM * D, D), p)
    u_c_proj = (step - (1 - w) * u_r) / w
    assert torch.dot(u_c_proj, u_r).abs() < 1e-12 * u_r.norm() * u_c.norm()
    expected = u_c - torch.dot(u_c, u_r) / torch.dot(u_r, u_r) * u_r
    torch.testing.assert_close(u_c_proj, expected, rtol=1e-9, atol=1e-15)
    m = b.metrics()
    assert m["projected_frac"] == 1.0
    cos = float(torch.dot(u_r, u_c) / (u_r.norm() * u_c.norm()))
    assert m["cos_rc"] == pytest.approx(cos, rel=1e-9) and cos < 0  # before projection


def test_no_projection_without_conflict_equals_plain_blend() -> None:
    p = identity_precond()
    u_r, u_c = conflicting()
    u_c = u_c - 2 * torch.dot(u_c, u_r) / torch.dot(u_r, u_r) * u_r  # flip into agreement
    assert torch.dot(u_r, u_c) > 0
    for mode in ("cost", "reward", "both", "none"):
        b = MarginBlender(project=mode)
        r, c, projected = b.project_directions(u_r, u_c, u_r, u_c)
        assert not projected and torch.equal(r, u_r) and torch.equal(c, u_c)
        step = b.blend(Directions(u_r, 1e-3 * u_r, -u_c, -1e-3 * u_c, D, D), p)
        w = b.cost_weight(D, D)  # its value is tested above; here: no projection at all
        assert torch.equal(step, (1 - w) * (1e-3 * u_r) + w * (1e-3 * u_c))
        assert b.metrics()["projected_frac"] == 0.0


@pytest.mark.parametrize("mode", ["cost", "reward", "both", "none"])
def test_projection_modes(mode: str) -> None:
    u_r, u_c = conflicting(seed=3)
    r, c, projected = MarginBlender(project=mode).project_directions(u_r, u_c, u_r, u_c)
    assert projected == (mode != "none")
    tol = 1e-12 * float(u_r.norm() * u_c.norm())
    if mode in ("cost", "both"):
        assert abs(float(torch.dot(c, u_r))) < tol  # against the *original* u_r
    else:
        assert torch.equal(c, u_c)
    if mode in ("reward", "both"):
        assert abs(float(torch.dot(r, u_c))) < tol  # against the *original* u_c
    else:
        assert torch.equal(r, u_r)


def projected_cost_step(inner: str, p: MatrixPrecond, g_r: torch.Tensor, g_c: torch.Tensor) -> torch.Tensor:
    """u_c' from blend() at w_c = 1 (Jc far above the limit: the step is nu u_c' alone)."""
    b = MarginBlender(inner=inner, target_kl=1e6)  # nu = 1: the step is the direction itself
    step = b.blend(directions(p, g_r, g_c, jc=100 * D), p)
    assert b.metrics()["w_c"] == pytest.approx(1.0, abs=1e-12)
    return step


def test_fisher_projection_is_reward_neutral_and_never_raises_cost() -> None:
    """In the Fisher metric the projected cost step has g_r . u = 0 and g_c . u <= 0 on
    every conflicting draw; the Euclidean projection of the same natural directions raises
    the cost to first order on some of them (why `inner: fisher` exists)."""
    fisher_checked, euclidean_raised = 0, 0
    for seed in range(200):
        p = ill_conditioned_precond(seed=seed)
        gen = torch.Generator().manual_seed(1000 + seed)
        g_r, g_c = (torch.randn(DIM, dtype=torch.float64, generator=gen) for _ in range(2))
        if not float(g_r @ p.solve(g_c)) > 0:  # conflict in the Fisher metric: -x_c lowers reward
            continue
        u = projected_cost_step("fisher", p, g_r, g_c)
        scale = float(u.norm() * (g_r.norm() + g_c.norm()))
        assert abs(float(g_r @ u)) < 1e-10 * scale
        assert float(g_c @ u) <= 1e-10 * scale
        assert float(g_c @ u) == pytest.approx(-float(u @ p.m @ u), rel=1e-9)  # -||u||_F^2
        fisher_checked += 1
        euclidean = projected_cost_step("euclidean", p, g_r, g_c)
        euclidean_raised += float(g_c @ euclidean) > 1e-10 * scale
    assert fisher_checked > 50 and euclidean_raised > 0


def test_fisher_cosine_and_identity_metric_agree_with_euclidean() -> None:
    p = identity_precond()  # F = I: both inner products are the same
    u_r, u_c = conflicting(seed=4)
    steps, cosines = [], []
    for inner in INNER:
        b = MarginBlender(inner=inner)
        steps.append(b.blend(Directions(u_r, 1e-3 * u_r, -u_c, -1e-3 * u_c, D, D), p))
        cosines.append(b.metrics()["cos_rc"])
    torch.testing.assert_close(steps[0], steps[1], rtol=1e-12, atol=0.0)
    assert cosines[0] == pytest.approx(cosines[1], rel=1e-12) and cosines[0] < 0
    q = spd_precond(seed=5)  # F != I: cos_rc is <x_r, -x_c>_F / (||x_r||_F ||x_c||_F)
    g_r, g_c = q.m @ u_r, q.m @ -u_c
    b = MarginBlender(inner="fisher")
    b.blend(directions(q, g_r, g_c, jc=D), q)
    expected = float(-(g_r @ q.solve(g_c)) / torch.sqrt((g_r @ q.solve(g_r)) * (g_c @ q.solve(g_c))))
    assert b.metrics()["cos_rc"] == pytest.approx(expected, rel=1e-9)


# -- trust-region scaling --------------------------------------------------------------
@pytest.mark.parametrize("make", PRECONDS)
@pytest.mark.parametrize("target_kl", [0.01, 0.005])
def test_nu_scales_to_the_quadratic_trust_region(make, target_kl: float) -> None:
    p = make()
    u_r, u_c = conflicting(seed=5)
    b = MarginBlender(target_kl=target_kl)
    for jc in (0.0, LAM * D, 2 * D):
        step = b.blend(Directions(p.m @ u_r, u_r, p.m @ -u_c, -u_c, jc, D), p)
        assert 0.5 * float(p.quad(step)) == pytest.approx(target_kl, rel=1e-9)  # scaled: equal
    assert 0 < b.metrics()["nu"] < 1


@pytest.mark.parametrize("make", PRECONDS)
def test_small_direction_is_not_enlarged(make) -> None:
    p = make()
    g_r, g_c = aligned_pair(p, scale=1e-4)
    b = MarginBlender()
    d = directions(p, g_r, g_c, 0.5 * D)
    step = b.blend(d, p)
    assert 0.5 * float(p.quad(step)) <= b.target_kl
    assert b.metrics()["nu"] == 1.0


def test_float32_directions_stay_inside_region() -> None:
    gen = torch.Generator().manual_seed(7)
    b, p = MarginBlender(), MatrixPrecond(torch.eye(1000))
    for _ in range(20):
        x_r, x_c = torch.randn(1000, generator=gen), torch.randn(1000, generator=gen)
        step = b.blend(Directions(x_r, x_r, x_c, x_c, D, D), p)
        assert step.dtype == torch.float32
        assert 0.5 * float(p.quad(step)) <= b.target_kl * (1 + 1e-5)


# -- degenerate inputs -----------------------------------------------------------------
def test_zero_directions_give_zero_step() -> None:
    b, p = MarginBlender(), identity_precond()
    z = torch.zeros(DIM, dtype=torch.float64)
    step = b.blend(Directions(z, z, z, z, D, D), p)
    assert torch.equal(step, z)
    m = b.metrics()
    assert all(math.isfinite(v) for v in m.values()) and m["cos_rc"] == 0.0
    assert m["nu"] == 1.0  # nothing to scale, not "unmeasurable"


@pytest.mark.parametrize("m", [torch.zeros(DIM, DIM), -torch.eye(DIM)], ids=["zero", "negative"])
def test_unmeasurable_curvature_gives_no_step(m: torch.Tensor) -> None:
    b, p = MarginBlender(), MatrixPrecond(m.double())
    u_r, u_c = conflicting()
    step = b.blend(Directions(u_r, u_r, -u_c, -u_c, D, D), p)
    assert torch.equal(step, torch.zeros_like(step))
    assert b.metrics()["nu"] == 0.0


def test_nonfinite_direction_gives_a_nan_step_the_update_skips() -> None:
    b, p = MarginBlender(), identity_precond()
    u_r, u_c = conflicting()
    u_r[2] = float("nan")
    step = b.blend(Directions(u_r, u_r, -u_c, -u_c, D, D), p)
    assert torch.isnan(step).all()
    m = b.metrics()
    assert all(math.isfinite(v) for v in m.values()) and m["nu"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"k": 0.0}, "k"),
        ({"k": float("inf")}, "k"),
        ({"margin": -0.1}, "margin"),
        ({"normalize": "yes"}, "normalize"),
        ({"project": "orthogonal"}, "project"),
        ({"inner": "riemann"}, "inner"),
        ({"target_kl": 0.0}, "target_kl"),
        ({"target_kl": float("nan")}, "target_kl"),
        ({"max_cost_weight": 0.0}, "max_cost_weight"),
        ({"max_cost_weight": 1.5}, "max_cost_weight"),
        ({"trend": -1.0}, "trend"),
        ({"trend": float("inf")}, "trend"),
    ],
)
def test_invalid_params_raise_naming_the_param(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name) as err:
        MarginBlender(**kwargs)
    if name == "project":
        assert all(mode in str(err.value) for mode in ("cost", "reward", "both", "none"))


def test_invalid_inputs_raise() -> None:
    b, p = MarginBlender(), identity_precond()
    x = torch.ones(DIM, dtype=torch.float64)
    with pytest.raises(ValueError, match="x_c"):
        b.blend(Directions(x, x, None, None, D, D), p)
    with pytest.raises(ValueError, match="ep_cost"):
        b.cost_weight(float("nan"), D)
    with pytest.raises(ValueError, match="cost_limit"):
        b.cost_weight(1.0, -1.0)


# -- metrics ---------------------------------------------------------------------------
def test_metrics_are_means_over_calls_and_reset_on_read() -> None:
    b, p = MarginBlender(), identity_precond()
    u_r, u_c = conflicting()
    small = 1e-4
    b.blend(Directions(u_r, small * u_r, -u_c, -small * u_c, 0.0, D), p)  # conflict
    a_r, a_c = aligned_pair(p, scale=small)
    b.blend(Directions(a_r, a_r, a_c, a_c, LAM * D, D), p)  # no conflict
    m = b.metrics()
    assert set(m) == {"w_c", "nu", "projected_frac", "cos_rc"}
    assert m["w_c"] == pytest.approx((sig(-7.0) + 0.5) / 2, rel=1e-9)
    assert m["projected_frac"] == 0.5
    assert m["nu"] == 1.0
    cos1 = float(torch.dot(u_r, u_c) / (u_r.norm() * u_c.norm()))
    cos2 = float(torch.dot(a_r, -a_c) / (a_r.norm() * a_c.norm()))
    assert m["cos_rc"] == pytest.approx((cos1 + cos2) / 2, rel=1e-9)
    assert b.metrics() == {}  # read resets


# -- the kfcpo preset's options ----------------------------------------------------------
@pytest.mark.parametrize("make", PRECONDS)
def test_to_boundary_extends_small_steps_to_the_region(make) -> None:
    p = make()
    g_r, g_c = aligned_pair(p, scale=1e-4)  # far inside the region: the seed's nu stays 1
    b = MarginBlender(to_boundary=True, target_kl=0.005)
    step = b.blend(directions(p, g_r, g_c, 0.5 * D), p)
    assert 0.5 * float(p.quad(step)) == pytest.approx(0.005, rel=1e-9)
    assert b.metrics()["nu"] > 1.0


@pytest.mark.parametrize("make", PRECONDS)
@pytest.mark.parametrize("inner", INNER)
def test_unit_directions_make_w_c_the_cost_share(make, inner: str) -> None:
    """With unit directions the blend is (1 - w_c) u_r / |u_r| + w_c u_c / |u_c| (norms in
    the `inner` metric), whatever the gradients' magnitudes: scaling g_c by 1000 changes
    nothing."""
    p = make()
    g_r, g_c = aligned_pair(p, scale=1.0)
    metric = p.m if inner == "fisher" else torch.eye(DIM, dtype=torch.float64)
    b = MarginBlender(unit_directions=True, inner=inner, target_kl=1e6)  # nu 1: the raw blend
    jc = LAM * D + 0.03 * D
    w = b.cost_weight(jc, D)
    steps = [b.blend(directions(p, g_r, k * g_c, jc), p) for k in (1.0, 1000.0)]
    x_r, u_c = p.solve(g_r), -p.solve(g_c)
    norm = lambda v: torch.sqrt(v @ metric @ v)  # noqa: E731 - local one-liner
    expected = (1 - w) * x_r / norm(x_r) + w * u_c / norm(u_c)
    for step in steps:
        torch.testing.assert_close(step, expected, rtol=1e-10, atol=1e-14)


def test_adaptive_projection_switches_at_the_margin_centre() -> None:
    """Below the margin centre (w_c < 0.5) the cost direction is projected off the reward
    direction (the seed's rule); from the centre on, the reward direction off the cost one."""
    u_r, u_c = conflicting(seed=3)
    b = MarginBlender(project="adaptive")
    tol = 1e-12 * float(u_r.norm() * u_c.norm())
    r, c, projected = b.project_directions(u_r, u_c, u_r, u_c, w_c=0.2)
    assert projected and torch.equal(r, u_r) and abs(float(torch.dot(c, u_r))) < tol
    r, c, projected = b.project_directions(u_r, u_c, u_r, u_c, w_c=0.5)
    assert projected and torch.equal(c, u_c) and abs(float(torch.dot(r, u_c))) < tol


def test_adaptive_projection_above_the_centre_never_raises_cost_in_fisher() -> None:
    """Jc above the centre, Fisher metric: the blended step lowers the cost to first order
    on every conflicting draw (the reward part is cost-neutral, the cost part descends)."""
    checked = 0
    for seed in range(100):
        p = ill_conditioned_precond(seed=seed)
        gen = torch.Generator().manual_seed(2000 + seed)
        g_r, g_c = (torch.randn(DIM, dtype=torch.float64, generator=gen) for _ in range(2))
        if not float(g_r @ p.solve(g_c)) > 0:
            continue
        b = MarginBlender(project="adaptive", inner="fisher", unit_directions=True)
        step = b.blend(directions(p, g_r, g_c, jc=0.8 * D), p)
        assert float(g_c @ step) < 0
        checked += 1
    assert checked > 20


# -- the cap on w_c and the cost trend (docs/algorithm.md 3.5) ----------------------------
def test_capped_weight_keeps_a_projected_reward_share() -> None:
    """Jc far above the limit (w_c ~ 1), cap 0.8, identity metric, unit directions: the step
    is nu (0.2 u_r' + 0.8 u_c), u_r' the unit reward direction minus its part along the unit
    cost direction, computed here by hand."""
    p = identity_precond()
    u_r, u_c = conflicting(seed=5)
    u_r, u_c = 1e-4 * u_r, 1e-4 * u_c
    b = MarginBlender(project="adaptive", unit_directions=True, max_cost_weight=0.8, target_kl=1e-6)
    step = b.blend(Directions(u_r, u_r, -u_c, -u_c, 4 * D, D), p)
    e_r, e_c = u_r / u_r.norm(), u_c / u_c.norm()
    e_r_proj = e_r - torch.dot(e_r, e_c) * e_c
    blend = 0.2 * e_r_proj + 0.8 * e_c
    expected = math.sqrt(2 * 1e-6 / float(blend @ blend)) * blend
    torch.testing.assert_close(step, expected, rtol=1e-9, atol=0)
    m = b.metrics()
    assert m["w_c"] == 0.8 and m["projected_frac"] == 1.0
    # the cap only binds above it: below, the margin's own weight is used
    low = MarginBlender(project="adaptive", unit_directions=True, max_cost_weight=0.8)
    low.blend(Directions(u_r, u_r, -u_c, -u_c, 0.6 * D, D), p)
    assert low.metrics()["w_c"] == pytest.approx(sig(10 * (0.6 - LAM)), rel=1e-9)


def test_capped_weight_still_projects_reward_off_cost_in_adaptive_mode() -> None:
    """A cap below 0.5 must not switch the adaptive rule back to projecting the cost: the
    rule follows the margin's weight, so the reward part stays orthogonal to u_c."""
    p = identity_precond()
    u_r, u_c = conflicting(seed=6)
    u_r, u_c = 1e-4 * u_r, 1e-4 * u_c
    b = MarginBlender(project="adaptive", max_cost_weight=0.3)
    step = b.blend(Directions(u_r, u_r, -u_c, -u_c, 2 * D, D), p)
    reward_part = (step - 0.3 * u_c) / 0.7
    assert abs(float(torch.dot(reward_part, u_c))) < 1e-12 * float(u_r.norm() * u_c.norm())


def test_trend_leads_the_cost_estimate_by_its_last_change() -> None:
    b = MarginBlender(trend=1.5)
    assert b.lead_cost(20.0) == 20.0  # nothing observed yet
    b.observe_cost(10.0, D)
    assert b.lead_cost(10.0) == 10.0  # one epoch: no change to extrapolate
    b.observe_cost(16.0, D)
    assert b.lead_cost(16.0) == 16.0 + 1.5 * 6.0
    p = identity_precond()
    g_r, g_c = aligned_pair(p, scale=1e-3)
    b.blend(directions(p, g_r, g_c, 16.0), p)
    assert b.metrics()["w_c"] == pytest.approx(sig(10 * (25.0 - LAM * D) / D), rel=1e-9)
    b.observe_cost(4.0, D)  # falling: the blend turns to reward before Jc reaches the centre
    assert b.lead_cost(4.0) == 4.0 - 1.5 * 12.0
    assert MarginBlender().lead_cost(4.0) == 4.0  # trend 0: the paper's Jc


def test_trend_state_round_trips_and_old_checkpoints_restart_it() -> None:
    b = MarginBlender(trend=1.0)
    b.observe_cost(30.0, D)
    b.observe_cost(20.0, D)
    fresh = MarginBlender(trend=1.0)
    fresh.load_state_dict(b.state_dict())
    assert fresh.lead_cost(20.0) == b.lead_cost(20.0) == 10.0
    fresh.load_state_dict({})  # a checkpoint written before the trend term
    assert fresh.lead_cost(20.0) == 20.0
    with pytest.raises(ValueError, match="NaN"):
        b.observe_cost(float("nan"), D)
