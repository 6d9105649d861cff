"""Safety Gymnasium envs for kfcpo: compat shim, factories, vector envs, normalization.

Importing this package applies ``compat`` first, so ``safety_gymnasium`` imports
and renders on Python 3.11 / gymnasium 0.29.1 / mujoco 3.x, then ``fast_reset``
(resets ~20x cheaper on navigation tasks; see that module).
"""

from kfcpo.envs import compat, fast_reset

compat.apply()
fast_reset.install()

# Imported after the shim on purpose: these modules import safety_gymnasium.
from kfcpo.envs.factory import make_env, make_vector_env, space_dims  # noqa: E402
from kfcpo.envs.ids import UnknownEnvError, env_ids, validate_env_id  # noqa: E402
from kfcpo.envs.normalize import (  # noqa: E402
    DEFAULT_CLIP,
    ObsNormalizer,
    RunningMeanStd,
)
from kfcpo.envs.wrappers import COST_KEY, SafetyToGymnasium, VectorCost, step_costs  # noqa: E402

__all__ = [
    "COST_KEY",
    "DEFAULT_CLIP",
    "ObsNormalizer",
    "RunningMeanStd",
    "SafetyToGymnasium",
    "UnknownEnvError",
    "VectorCost",
    "compat",
    "env_ids",
    "fast_reset",
    "make_env",
    "make_vector_env",
    "space_dims",
    "step_costs",
    "validate_env_id",
]
