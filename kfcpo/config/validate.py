"""Range, choice and composition checks: everything that can be wrong is caught here,
before any environment starts, as a one-line ConfigError naming the key."""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kfcpo.algorithm import PRECONDITIONER, build_component
from kfcpo.config.errors import ConfigError
from kfcpo.config.schema import dotted_items
from kfcpo.models.actor import GaussianActor
from kfcpo.models.mlp import ACTIVATIONS
from kfcpo.registry import COMPONENT_FAMILIES, Registry, RegistryError, split_section
from kfcpo.seeding import SEED_VALID, is_seed

WANDB_MODES = ("auto", "online", "offline", "disabled")
VECTOR_MODES = ("sync", "async")
ENGINE_MODES = ("step", "worker")
COST_ADV_MODES = ("center", "standardize", "none")
# The policy throwaway preconditioners are built on: obs dim, action dim, hidden sizes.
TINY_POLICY = (2, 1, (2,))
# Trainer arguments kfcpo sets itself, with the config key that controls each.
MANAGED_TRAINER_KEYS = {
    "max_epochs": "total_steps / steps_per_epoch",
    "max_steps": "total_steps / steps_per_epoch",
    "logger": "logger.wandb",
    "callbacks": "checkpoint.*",
    "default_root_dir": "out_dir",
    "log_every_n_steps": "(one log row per epoch)",
}


def _positive(x: Any) -> bool:
    return x > 0


def _unit(x: Any) -> bool:
    return 0 < x <= 1


def _choice(options: tuple[str, ...] | list[str]) -> Callable[[Any], bool]:
    return lambda x: x in options


RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", is_seed, SEED_VALID),
    ("env.num_envs", _positive, "an integer >= 1"),
    ("env.vector", _choice(VECTOR_MODES), f"one of {', '.join(VECTOR_MODES)}"),
    ("env.workers", lambda x: x >= 0, "an integer >= 0 (0 = one worker process per core)"),
    ("env.engine", _choice(ENGINE_MODES), f"one of {', '.join(ENGINE_MODES)}"),
    ("env.obs_clip", _positive, "> 0"),
    ("threads", lambda x: x >= 0, "an integer >= 0 (0 = torch default)"),
    ("total_steps", _positive, "an integer >= 1"),
    ("steps_per_epoch", _positive, "an integer >= 1"),
    ("cost_limit", lambda x: x >= 0, ">= 0"),
    ("gamma", _unit, "in (0, 1]"),
    ("cost_gamma", _unit, "in (0, 1]"),
    ("gae_lambda", lambda x: 0 <= x <= 1, "in [0, 1]"),
    ("cost_adv", _choice(COST_ADV_MODES), f"one of {', '.join(COST_ADV_MODES)}"),
    ("cost_window", _positive, "an integer >= 1 (episodes)"),
    ("update_iters", _positive, "an integer >= 1"),
    ("minibatch_size", lambda x: x >= 0, "an integer >= 0 (0 = the whole rollout)"),
    ("model.hidden", lambda x: len(x) > 0 and all(h > 0 for h in x), "a non-empty list of sizes >= 1"),
    ("model.activation", _choice(sorted(ACTIVATIONS)), f"one of {', '.join(sorted(ACTIVATIONS))}"),
    ("model.critic_lr", _positive, "> 0"),
    ("model.critic_iters", lambda x: x >= 0, "an integer >= 0"),
    ("model.critic_minibatch_size", _positive, "an integer >= 1"),
    ("model.critic_l2", lambda x: x >= 0, ">= 0 (0 = off)"),
    ("model.critic_max_grad_norm", lambda x: x >= 0, ">= 0 (0 = off)"),
    ("logger.wandb.mode", _choice(WANDB_MODES), f"one of {', '.join(WANDB_MODES)}"),
    ("checkpoint.every_n_epochs", _positive, "an integer >= 1"),
]


def _single_step(cfg: DictConfig) -> bool:
    """One policy step per epoch: one pass over one minibatch holding the whole rollout."""
    whole = cfg.minibatch_size == 0 or cfg.minibatch_size >= cfg.steps_per_epoch
    return cfg.update_iters == 1 and whole


# Traits of the run itself (not of a component) that composition rules can name, each with
# its test and how the error message describes it.
CONFIG_TRAITS: dict[str, tuple[Callable[[DictConfig], bool], Callable[[DictConfig], str]]] = {
    "single_step": (
        _single_step,
        lambda cfg: f"one full-batch step per epoch (update_iters={cfg.update_iters}, "
        f"minibatch_size={cfg.minibatch_size})",
    ),
}


def _check_composition(cfg: DictConfig, registry: Registry) -> None:
    """Refuse compositions a registry entry declares it cannot run in (its `excludes`),
    matched against the traits of the other components and of the config."""
    entries = {family: registry.get(family, cfg[family].name) for family in COMPONENT_FAMILIES}
    holders: dict[str, str] = {}  # trait -> what has it, for the message
    for family, entry in entries.items():
        for trait in entry.traits:
            holders.setdefault(trait, f"{family} '{entry.name}'")
    for trait, (holds, describe) in CONFIG_TRAITS.items():
        if holds(cfg):
            holders.setdefault(trait, describe(cfg))
    for family, entry in entries.items():
        for rule in entry.excludes:
            if all(t in holders for t in rule.traits):
                others = " and ".join(holders[t] for t in rule.traits)
                raise ConfigError(
                    f"{family}.name: {family} '{entry.name}' cannot run with {others}: {rule.why}"
                )


def _type_matches(default: Any, value: Any) -> bool:
    if default is None:
        return True
    if value is None:
        return False
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, type(default))


def _check_component(cfg: DictConfig, registry: Registry, family: str) -> None:
    """The section's keys and types against the registry entry, then its values by the
    component's own range checks (ConfigError naming the key or the component)."""
    name, params = split_section(OmegaConf.to_container(cfg[family]))
    entry = registry.get(family, name)
    for key, value in params.items():
        if key not in entry.params:
            valid = ", ".join(["name", *sorted(entry.params)])
            raise ConfigError(f"{family}.{key}: unknown parameter of {family} '{name}'; valid: {valid}")
        default = entry.params[key]
        if isinstance(default, float) and _names_a_number(value):
            raise ConfigError(f"{family}.{key}: got {value!r}; expected a finite number")
        if not _type_matches(default, value):
            raise ConfigError(
                f"{family}.{key}: expected {type(default).__name__} "
                f"like the default {default!r}, got {value!r}"
            )
    try:
        # A throwaway instance, built as a run builds it (on a tiny policy), runs the
        # component's own range checks now, before any env starts.
        actor = GaussianActor(*TINY_POLICY) if family == PRECONDITIONER else None
        build_component(registry, family, cfg[family], actor)
    except RegistryError as err:
        raise ConfigError(f"{family}.name: {err}") from None
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{family} '{name}': {str(err).splitlines()[0]}") from None


def _check_trainer(trainer: dict[str, Any]) -> None:
    from lightning.pytorch import Trainer

    accepted = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    for key in trainer:
        if key in MANAGED_TRAINER_KEYS:
            raise ConfigError(f"trainer.{key}: set by kfcpo from {MANAGED_TRAINER_KEYS[key]}")
        if key not in accepted:
            raise ConfigError(f"trainer.{key}: not an argument of lightning.pytorch.Trainer")


def _nearest_existing(path: Path) -> Path:
    """`path` itself or its closest ancestor that exists (as anything: file, folder, link)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _check_creatable(target: Path, folder: Path, key: str, valid: str) -> None:
    """`folder` (holding or being `target`) exists as a writable folder or can be made."""
    existing = _nearest_existing(folder)
    if not os.path.isdir(existing):
        what = "a file" if os.path.isfile(existing) else "not a folder"
        if existing == target:
            raise ConfigError(f"{key}: '{target}' is {what}; expected {valid}")
        raise ConfigError(
            f"{key}: cannot create '{target}': '{existing}' is {what}, not a folder; expected {valid}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        to_create = "" if existing == target else f" (to create '{target}')"
        raise ConfigError(
            f"{key}: no permission to write in '{existing}'{to_create}; give a path you can write to"
        )


def check_folder_path(path: str | Path, key: str, valid: str) -> Path:
    """`path` as a folder kfcpo can create (with its parents) or write in; a one-line
    ConfigError naming `key` and `valid` (what to give instead) if not. Creates nothing."""
    p = Path(path)
    _check_creatable(p, p, key, valid)
    return p


def check_file_path(path: str | Path, key: str, valid: str) -> Path:
    """`path` as a file kfcpo can create (with its folders) or replace; a one-line
    ConfigError naming `key` and `valid` if not. Creates nothing."""
    p = Path(path)
    if os.path.isdir(p):
        raise ConfigError(f"{key}: '{p}' is a folder; expected {valid}")
    if os.path.lexists(p) and not os.access(p, os.W_OK):
        raise ConfigError(f"{key}: no permission to write '{p}'; give a path you can write to")
    _check_creatable(p, p.parent, key, valid)
    return p


def check_rank_split(cfg: DictConfig, world: int) -> None:
    """Each of ``world`` ranks collects steps_per_epoch / world steps, env.num_envs at a
    time: a one-line ConfigError if either division leaves a remainder (no step is
    silently dropped)."""
    if cfg.steps_per_epoch % world:
        raise ConfigError(f"steps_per_epoch: {cfg.steps_per_epoch} is not a multiple of the {world} ranks "
                          f"(trainer.devices x trainer.num_nodes)")
    per_rank = cfg.steps_per_epoch // world
    if per_rank % cfg.env.num_envs:
        ranks = f" per rank ({cfg.steps_per_epoch} over {world} ranks)" if world > 1 else ""
        raise ConfigError(f"steps_per_epoch: {per_rank}{ranks} is not a multiple of "
                          f"env.num_envs={cfg.env.num_envs}")


def explicit_world(trainer: dict[str, Any]) -> int | None:
    """The number of ranks when `trainer` names it (devices as a count or a list, times
    num_nodes), so the split is checked before Lightning starts; None for "auto", -1 and
    other forms only the Trainer resolves (it is checked again once the Trainer exists)."""
    devices, nodes = trainer.get("devices", "auto"), trainer.get("num_nodes", 1)
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    count = len(devices) if isinstance(devices, list) else devices
    if isinstance(count, int) and not isinstance(count, bool) and count >= 1 and isinstance(nodes, int):
        return count * nodes
    return None


def _check_finite(cfg: DictConfig) -> None:
    """No number in the config is inf or NaN: none of them has a meaning as a setting."""
    for key, value in dotted_items(cfg).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: got {value!r}; expected a finite number")


def _names_a_number(value: Any) -> bool:
    """'inf', 'nan': the words an untyped component section keeps as text."""
    try:
        return isinstance(value, str) and not math.isfinite(float(value))
    except ValueError:
        return False


def validate(cfg: DictConfig, registry: Registry, check_env: bool = True) -> None:
    """Check a composed config (module docstring): ranges and choices, each component's
    parameters (by building it), the composition rules, the trainer's arguments and,
    with `check_env`, the env id. Raises a one-line ConfigError naming the key."""
    _check_finite(cfg)
    for key, ok, expected in RULES:
        value = OmegaConf.select(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key}: got {value!r}; expected {expected}")
    check_rank_split(cfg, world=explicit_world(OmegaConf.to_container(cfg.trainer)) or 1)
    for family in COMPONENT_FAMILIES:
        _check_component(cfg, registry, family)
    _check_composition(cfg, registry)
    _check_trainer(OmegaConf.to_container(cfg.trainer))
    if check_env:
        from kfcpo.envs import UnknownEnvError, validate_env_id

        try:
            validate_env_id(cfg.env.id)
        except UnknownEnvError as err:
            raise ConfigError(f"env.id: {err}") from None
