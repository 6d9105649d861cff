"""The component registry: YAML files under one folder per family, read at run time.

The code never lists component names: `kfcpo/registry_files` (the repository's `registry/`)
is the single source, and users add components by adding files there or in extra
folders (`registry_paths` in a config, or the KFCPO_REGISTRY environment variable,
os.pathsep-separated). A later folder's file overrides an earlier one of the same name.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

FAMILIES = ("algorithm", "preconditioner", "blender", "guard")
COMPONENT_FAMILIES = FAMILIES[1:]
REGISTRY_ENV = "KFCPO_REGISTRY"


class RegistryError(ValueError):
    """A name or a file the registry cannot resolve (one-line message)."""


@dataclass(frozen=True)
class Exclusion:
    """A composition rule, declared by a component: it cannot run together with parts that
    have all of `traits` (traits of the other components, or of the config such as
    `single_step`); `why` is the reason shown to the user."""

    traits: tuple[str, ...]
    why: str


@dataclass
class Entry:
    """One registry file: a component (its class `target`, default `params`, `traits` and
    `excludes`) or an algorithm preset (`config`, a partial experiment config)."""

    family: str
    name: str
    description: str
    path: Path
    target: str | None = None  # dotted path of the implementing class (components)
    params: dict[str, Any] = field(default_factory=dict)  # component defaults
    config: dict[str, Any] = field(default_factory=dict)  # preset: partial experiment config
    traits: tuple[str, ...] = ()  # what this component is, for composition rules
    excludes: tuple[Exclusion, ...] = ()  # compositions it refuses

    def load_class(self) -> type:
        """The class `target` names; RegistryError if it cannot be imported."""
        module_name, _, cls_name = (self.target or "").rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), cls_name)
        except (ImportError, AttributeError, ValueError) as err:
            raise RegistryError(
                f"{self.family} '{self.name}' ({self.path}): cannot import target '{self.target}': {err}"
            ) from None


def builtin_root() -> Path:
    """The registry shipped with kfcpo (the repository's `registry/`)."""
    return Path(str(resources.files("kfcpo.registry_files")))


def default_roots(extra: list[str] | None = None) -> list[Path]:
    """The registry folders in the order they are read (a later file overrides an
    earlier one): the built-in one, KFCPO_REGISTRY's, then `extra` (`registry_paths`)."""
    env = [p for p in os.environ.get(REGISTRY_ENV, "").split(os.pathsep) if p]
    return [builtin_root(), *(Path(p) for p in [*env, *(extra or [])])]


def _words(value: Any, where: str) -> tuple[str, ...]:
    if not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
        raise RegistryError(f"{where}: expected a list of names, got {value!r}")
    return tuple(value)


def _exclusions(value: Any, path: Path) -> tuple[Exclusion, ...]:
    if not isinstance(value, list):
        raise RegistryError(f"{path}: excludes: expected a list of {{traits: [...], why: ...}}")
    rules = []
    for i, rule in enumerate(value):
        if not (isinstance(rule, dict) and set(rule) == {"traits", "why"} and rule["traits"]):
            raise RegistryError(f"{path}: excludes[{i}]: expected {{traits: [...], why: ...}}, got {rule!r}")
        rules.append(Exclusion(_words(rule["traits"], f"{path}: excludes[{i}].traits"), str(rule["why"])))
    return tuple(rules)


def _read_entry(family: str, path: Path) -> Entry:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RegistryError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    known = (
        {"description", "target", "params", "traits", "excludes"}
        if family != "algorithm"
        else {"description", "config"}
    )
    unknown = sorted(set(data) - known)
    if unknown:
        raise RegistryError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
    if family != "algorithm" and not data.get("target"):
        raise RegistryError(f"{path}: a {family} entry needs 'target' (the implementing class)")
    return Entry(
        family=family,
        name=path.stem,
        description=str(data.get("description", "")).strip(),
        path=path,
        target=data.get("target"),
        params=dict(data.get("params") or {}),
        config=dict(data.get("config") or {}),
        traits=_words(data.get("traits") or [], f"{path}: traits"),
        excludes=_exclusions(data.get("excludes") or [], path),
    )


class Registry:
    """Every registry entry, by family and name, read from `roots` (default:
    `default_roots()`) once, when constructed.

    `get` finds an entry (RegistryError naming the valid names otherwise), `build`
    instantiates a component; kfcpo.algorithm builds a run's components through it.
    """

    def __init__(self, roots: list[Path] | None = None) -> None:
        self.roots = roots if roots is not None else default_roots()
        self._entries: dict[str, dict[str, Entry]] = {f: {} for f in FAMILIES}
        for root in self.roots:
            if not root.is_dir():
                raise RegistryError(f"registry folder '{root}' does not exist")
            for family in FAMILIES:
                for path in sorted((root / family).glob("*.yaml")):
                    self._entries[family][path.stem] = _read_entry(family, path)

    def names(self, family: str) -> list[str]:
        """The entry names of `family`, sorted."""
        return sorted(self._entries[family])

    def get(self, family: str, name: str) -> Entry:
        """The entry `name` of `family`; RegistryError (with a close match) if unknown."""
        try:
            return self._entries[family][name]
        except KeyError:
            valid = self.names(family)
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RegistryError(
                f"unknown {family} '{name}'{hint}; valid: {', '.join(valid)}"
            ) from None

    def build(self, family: str, name: str, params: dict[str, Any], *args: Any) -> Any:
        """Instantiate a component: positional `args` first, then its registry defaults
        updated with `params`."""
        entry = self.get(family, name)
        return entry.load_class()(*args, **{**entry.params, **params})


def split_section(section: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """A component section `{"name": ..., parameter: value, ...}` as (name, parameters);
    name None when the section does not set one (a config layer may only set parameters).
    The section itself is left as it is."""
    params = dict(section)
    return params.pop("name", None), params


def check_signature(entry: Entry) -> list[str]:
    """Parameters of a registry entry that its class does not accept (for tests/tools)."""
    sig = inspect.signature(entry.load_class())
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return []
    return sorted(set(entry.params) - set(sig.parameters))
