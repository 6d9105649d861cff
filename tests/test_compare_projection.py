"""`kfcpo bench projection` on a real (tiny) PointGoal1 rollout: it measures, it commits nothing."""

from __future__ import annotations

import argparse

import torch

from kfcpo.blender.margin import INNER_PRODUCTS
from kfcpo.tools.bench import projection as compare_projection


def test_every_variant_is_measured_and_the_policy_is_left_as_it_was() -> None:
    args = argparse.Namespace(checkpoint=None, env="SafetyPointGoal1-v0")
    module = compare_projection.build_module(args, seed=0)
    batch = compare_projection.collect(module, steps=300, num_envs=1, seed=0)
    before = {k: v.clone() for k, v in module.actor.state_dict().items()}
    rows = compare_projection.compare(module, batch, jc_units=[0.7, 2.0], seed=0, minibatch_size=128)
    assert set(rows) == {(inner, jc) for inner in INNER_PRODUCTS for jc in (0.7, 2.0)}
    minibatches = -(-300 // 128)
    for values in rows.values():
        assert len(values) == minibatches
        for projected, raised, d_c, _, kl in values:
            assert projected in (0.0, 1.0) and raised == float(d_c > 0)
            assert 0.0 < kl < 10 * float(module.cfg.blender.target_kl)  # a real, trust-region-sized step
    after = module.actor.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_measured_changes_are_those_of_the_proposed_step() -> None:
    """Independent of the tool's bookkeeping: on one minibatch that is the whole rollout,
    a step at Jc = 0 (w_c ~ 0: the natural reward direction) must raise the rollout's
    reward surrogate, and one at Jc = 3 d (w_c ~ 1: the cost-descent direction) must lower
    its cost surrogate; a trust-region-sized natural step does both to first order."""
    args = argparse.Namespace(checkpoint=None, env="SafetyPointGoal1-v0")
    module = compare_projection.build_module(args, seed=1)
    batch = compare_projection.collect(module, steps=400, num_envs=2, seed=1)
    rows = compare_projection.compare(module, batch, jc_units=[0.0, 3.0], seed=1, minibatch_size=0)
    for inner in INNER_PRODUCTS:
        [(_, _, _, d_r, _)] = rows[(inner, 0.0)]
        [(_, raised, d_c, _, _)] = rows[(inner, 3.0)]
        assert d_r > 0.0, (inner, d_r)
        assert d_c < 0.0 and raised == 0.0, (inner, d_c)
