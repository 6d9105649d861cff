"""The composition object: built from a config or by hand through one builder, its
checkpoint state under the format-2 keys, and the one metrics contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kfcpo.algorithm import Algorithm
from kfcpo.blender.base import Directions
from kfcpo.blender.margin import MarginBlender
from kfcpo.config import load_config
from kfcpo.guard.kl_rollback import KLRollback
from kfcpo.models import GaussianActor
from kfcpo.preconditioner.kfac import KFAC

ROOT = Path(__file__).resolve().parents[1]
GOAL = str(ROOT / "conf" / "goal.yaml")
OBS_DIM, ACT_DIM = 4, 2


def kfcpo_algorithm(*overrides: str) -> Algorithm:
    cfg, registry = load_config(GOAL, ["algorithm=kfcpo", *overrides], check_env=False)
    return Algorithm.from_config(cfg, GaussianActor(OBS_DIM, ACT_DIM), registry)


def test_from_config_builds_the_configured_components() -> None:
    algo = kfcpo_algorithm("blender.trend=3.0", "guard.target_kl=0.02")
    assert isinstance(algo.precond, KFAC) and isinstance(algo.blender, MarginBlender)
    assert isinstance(algo.guard, KLRollback)
    assert algo.blender.trend == 3.0 and algo.guard.target_kl == 0.02  # the config's values
    assert algo.precond.damping == 0.1  # the preset's, over the registry default


def test_from_sections_takes_registry_defaults_for_unset_parameters() -> None:
    actor = GaussianActor(OBS_DIM, ACT_DIM)
    algo = Algorithm.from_sections(
        actor, {"name": "cg"}, {"name": "cpo"}, {"name": "line_search", "steps": 3}
    )
    assert algo.precond.actor is actor and algo.precond.iters == 15
    assert algo.guard.steps == 3 and algo.guard.decay == 0.8


def test_state_dict_keeps_the_checkpoint_keys_and_round_trips() -> None:
    algo = kfcpo_algorithm()
    algo.blender.observe_cost(10.0, 25.0)
    algo.blender.observe_cost(12.0, 25.0)
    state = algo.state_dict()
    assert set(state) == {"precond", "blender"}  # checkpoint format 2: no guard entry
    other = kfcpo_algorithm()
    other.load_state_dict({**state, "normalizer": {}})  # a checkpoint's dict holds more keys
    assert other.blender.state_dict() == {"jc_last": 12.0, "jc_prev": 10.0}


def test_metrics_are_read_and_reset() -> None:
    algo = kfcpo_algorithm()
    x = torch.randn(sum(p.numel() for p in algo.precond.actor.parameters()))
    algo.precond.update(torch.randn(8, OBS_DIM))
    algo.blender.blend(Directions(x, x, -x, -x, 20.0, 25.0), algo.precond)
    first = algo.metrics()
    assert first["preconditioner/kfac_refreshes"] == 1.0 and "blender/w_c" in first
    second = algo.metrics()
    # nothing since the last call
    assert second["preconditioner/kfac_refreshes"] == 0.0 and "blender/w_c" not in second


@pytest.mark.parametrize("family", ["preconditioner", "blender", "guard"])
def test_a_section_without_a_name_is_refused(family: str) -> None:
    sections = {
        "preconditioner": {"name": "cg"}, "blender": {"name": "cpo"}, "guard": {"name": "line_search"},
    }
    sections[family] = {}
    with pytest.raises(ValueError, match=f"{family}: the section has no 'name'"):
        Algorithm.from_sections(GaussianActor(OBS_DIM, ACT_DIM), *sections.values())
