"""The algorithm: one composition preconditioner x blender x guard, built in one place.

Every run, tool and test builds its components through `Algorithm.from_config` (a
validated config) or `Algorithm.from_sections` (sections shaped like the config's, for
hand-made compositions); config validation runs the same `build_component` on a tiny
policy to check each component's parameters before any env starts.

The metrics contract, shared by all three families: `metrics()` returns the component's
diagnostics since its previous `metrics()` call and resets what it accumulated, so one
call per epoch gives that epoch's values. A value is a mean or count of what happened
since that call, or a gauge of the component's state now (a learning rate, a Lagrange
multiplier: nothing to reset). A component may leave keys out (or return {}) when nothing
happened since the last call; each component's docstring names its keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kfcpo.blender.base import Blender
from kfcpo.guard.base import Guard
from kfcpo.metrics_schema import BLENDER, GUARD, PRECONDITIONER, namespaced
from kfcpo.models.actor import GaussianActor
from kfcpo.preconditioner.base import Preconditioner
from kfcpo.registry import Registry, default_roots, split_section

# Checkpoint keys of the components' state (checkpoint format 2; the guard has none).
PRECOND_KEY, BLENDER_KEY = "precond", "blender"

Section = Mapping[str, Any] | DictConfig


def registry_for(cfg: DictConfig) -> Registry:
    """The registry a config names: the built-in one, KFCPO_REGISTRY, `registry_paths`."""
    return Registry(default_roots(list(cfg.registry_paths)))


def build_component(
    registry: Registry, family: str, section: Section, actor: GaussianActor | None = None
) -> Any:
    """One component from its config section ({"name": ..., parameter: value, ...}): the
    registry entry's defaults updated with the section's parameters. A preconditioner is
    built on `actor`; the other families take no positional argument.

    Raises RegistryError for an unknown name, TypeError or ValueError for parameters the
    component refuses (its own range checks)."""
    plain = OmegaConf.to_container(section) if isinstance(section, DictConfig) else dict(section)
    name, params = split_section(plain)
    if name is None:
        raise ValueError(f"{family}: the section has no 'name'")
    args = (actor,) if family == PRECONDITIONER else ()  # built on the policy it preconditions
    return registry.build(family, name, params, *args)


@dataclass
class Algorithm:
    """The composition an update runs: curvature (`precond`), the rule that turns reward
    and cost directions into one step (`blender`), and the rule that commits or refuses
    each step and ends the epoch (`guard`).

    Build it with `from_config` (what a run does) or `from_sections`; `policy_update`
    (kfcpo.update) takes it whole. `state_dict()` / `load_state_dict()` carry what the
    components need to resume exactly; `metrics()` reads and resets all three under the
    contract of this module's docstring.
    """

    precond: Preconditioner
    blender: Blender
    guard: Guard

    @classmethod
    def from_config(
        cls, cfg: DictConfig, actor: GaussianActor, registry: Registry | None = None
    ) -> Algorithm:
        """The composition of a validated config, its preconditioner on `actor`.

        Args:
            registry: the one the config was composed and validated with (default: the
                registry the config names, read again).
        """
        return cls.from_sections(
            actor, cfg.preconditioner, cfg.blender, cfg.guard,
            registry=registry if registry is not None else registry_for(cfg),
        )

    @classmethod
    def from_sections(
        cls,
        actor: GaussianActor,
        preconditioner: Section,
        blender: Section,
        guard: Section,
        registry: Registry | None = None,
    ) -> Algorithm:
        """A composition from three sections shaped like the config's, e.g.
        `from_sections(actor, {"name": "kfac", "decay": 0.0}, {"name": "margin"},
        {"name": "kl_rollback", "target_kl": 0.01})`; unset parameters take the registry's
        defaults (default registry: the built-in one and KFCPO_REGISTRY)."""
        registry = registry if registry is not None else Registry()
        return cls(
            build_component(registry, PRECONDITIONER, preconditioner, actor),
            build_component(registry, BLENDER, blender),
            build_component(registry, GUARD, guard),
        )

    def state_dict(self) -> dict[str, Any]:
        """The components' resume state, under the checkpoint's keys. The guard holds
        nothing across epochs (`begin_epoch` resets it), so it has no entry."""
        return {PRECOND_KEY: self.precond.state_dict(), BLENDER_KEY: self.blender.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned (a checkpoint's dict may hold more keys)."""
        self.precond.load_state_dict(state[PRECOND_KEY])
        self.blender.load_state_dict(state[BLENDER_KEY])

    def metrics(self) -> dict[str, float]:
        """The three components' metrics since the previous call, each reset (module
        docstring); preconditioner first, then blender, then guard, each under its
        family's namespace of kfcpo.metrics_schema (`preconditioner/`, `blender/`, `guard/`)."""
        return {
            **namespaced(PRECONDITIONER, self.precond.metrics()),
            **namespaced(BLENDER, self.blender.metrics()),
            **namespaced(GUARD, self.guard.metrics()),
        }
