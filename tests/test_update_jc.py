"""policy_update before any episode has finished (Jc is NaN): the step is the one Jc = 0
gives, and the blender's controllers observe nothing (kfcpo/update.py)."""

from __future__ import annotations

import math

import torch

from kfcpo.algorithm import Algorithm
from kfcpo.data.batch import Batch
from kfcpo.flat import get_flat
from kfcpo.models.actor import GaussianActor
from kfcpo.update import UpdateConfig, policy_update

N, OBS, ACT, LIMIT = 128, 5, 2, 25.0
CFG = UpdateConfig(update_iters=1, minibatch_size=0, critic_iters=0, critic_minibatch_size=1,
                   cost_limit=LIMIT)


def _batch(actor: GaussianActor) -> Batch:
    g = torch.Generator().manual_seed(0)
    obs, act = torch.randn(N, OBS, generator=g), torch.randn(N, ACT, generator=g)
    z = torch.zeros(N)
    batch = Batch(obs, act, z, torch.randn(N, generator=g), torch.randn(N, generator=g), z, z)
    with torch.no_grad():
        batch.logp_old = actor.log_prob(batch.obs, batch.act)
    return batch


def _update(blender: dict, ep_cost: float) -> tuple[torch.Tensor, dict]:
    torch.manual_seed(1)
    actor = GaussianActor(OBS, ACT, [8])
    algorithm = Algorithm.from_sections(actor, {"name": "kfac", "damping": 0.1}, blender,
                                        {"name": "kl_rollback", "target_kl": 0.05})
    policy_update(actor, _batch(actor), algorithm, ep_cost, CFG, torch.Generator().manual_seed(0))
    return get_flat(actor), algorithm.blender.state_dict()


def test_no_estimate_steps_as_jc_zero_and_leaves_the_trend_memory_empty() -> None:
    margin = {"name": "margin", "trend": 2.0}
    params_nan, state_nan = _update(margin, math.nan)
    params_zero, state_zero = _update(margin, 0.0)
    assert torch.equal(params_nan, params_zero)
    assert state_nan == {"jc_last": None, "jc_prev": None}
    assert state_zero == {"jc_last": 0.0, "jc_prev": None}


def test_no_estimate_leaves_the_pid_multiplier_untouched() -> None:
    pid = {"name": "lagrangian", "multiplier": "pid", "multiplier_init": 0.5}
    _, state = _update(pid, math.nan)
    assert state["pid"]["lam"] == 0.5 and state["pid"]["integral"] == 0.0 and state["pid"]["history"] == []
    _, observed = _update(pid, 40.0)
    assert observed["pid"]["integral"] == 15.0
