"""The registered Safety Gymnasium task ids, and one-line errors for wrong ones."""

from __future__ import annotations

import difflib

# kfcpo/envs/__init__.py has applied the compat shim, so this import works.
from safety_gymnasium.utils.registration import safe_registry

MAX_SUGGESTIONS = 5
# Shown when nothing is close: what an id looks like.
EXAMPLE_IDS = ("SafetyPointGoal1-v0", "SafetyCarButton2-v0", "SafetyHopperVelocity-v1")
# Low enough that a typo or a wrong level/robot still finds its neighbours.
SUGGESTION_CUTOFF = 0.6


class UnknownEnvError(ValueError):
    """An env id that Safety Gymnasium does not register."""


def env_ids() -> list[str]:
    """All ids registered by safety_gymnasium, sorted."""
    return sorted(safe_registry)


def validate_env_id(env_id: str) -> None:
    """Raise ``UnknownEnvError`` naming close matches if ``env_id`` is unknown."""
    known = env_ids()
    if env_id in known:
        return
    matches = difflib.get_close_matches(env_id, known, n=MAX_SUGGESTIONS, cutoff=SUGGESTION_CUTOFF)
    hint = (f"close matches: {', '.join(matches)}" if matches else
            f"expected a Safety Gymnasium id, e.g. {', '.join(EXAMPLE_IDS)} "
            f"(all {len(known)}: kfcpo envs)")
    raise UnknownEnvError(f"unknown env id {env_id!r}; {hint}")
