"""An ablation spec (STUDY.yaml): named variants (a preset plus overrides) x seeds on one
task, and the studies that compare them.

    env: SafetyPointCircle1-v0
    total_steps: 200000
    steps_per_epoch: 20000
    num_envs: 4
    seeds: [0, 1, 2]
    variants:                       # name -> preset and overrides
      kfcpo: {algorithm: kfcpo}
      kfcpo_mb128: {algorithm: kfcpo, overrides: [minibatch_size=128], why: "..."}
    studies:                        # title -> the variants compared in one table
      "Whole-rollout directions": [kfcpo, kfcpo_mb128]

Every key is checked when the file is read: a wrong one is a one-line ConfigError naming
the key and what it expects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kfcpo.config import ConfigError
from kfcpo.seeding import SEED_VALID, is_seed

KEY = "STUDY"  # how messages name the study file (the command line's positional argument)
STUDY_VALID = "an ablation study YAML file, e.g. docs/results/ablations/circle.yaml"
NO_WHAT = "–"  # a variant that names neither a reason nor overrides
VARIANT_KEYS = ("algorithm", "overrides", "why")


@dataclass(frozen=True)
class Variant:
    """An algorithm preset with overrides, under a name."""

    name: str
    algorithm: str
    overrides: tuple[str, ...] = ()
    why: str | None = None

    @property
    def what(self) -> str:
        """What changes, as a table shows it: the reason, else the overrides."""
        return self.why or " ".join(self.overrides) or NO_WHAT


@dataclass(frozen=True)
class AblationSpec:
    """A parsed and checked STUDY.yaml."""

    path: Path
    env: str
    total_steps: int
    steps_per_epoch: int
    num_envs: int
    seeds: tuple[int, ...]
    variants: dict[str, Variant]
    studies: dict[str, tuple[str, ...]]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_str_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(v, str) for v in x)


# key -> (check, what it expects)
TOP_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "env": (lambda x: isinstance(x, str) and bool(x), "an env id, e.g. SafetyPointCircle1-v0"),
    "total_steps": (lambda x: _is_int(x) and x >= 1, "an integer >= 1"),
    "steps_per_epoch": (lambda x: _is_int(x) and x >= 1, "an integer >= 1"),
    "num_envs": (lambda x: _is_int(x) and x >= 1, "an integer >= 1"),
    "seeds": (lambda x: isinstance(x, list) and bool(x) and all(map(is_seed, x)) and len(set(x)) == len(x),
              f"a non-empty list of distinct seeds, each {SEED_VALID}"),
    "variants": (lambda x: isinstance(x, dict) and bool(x), "a non-empty mapping of name -> variant"),
    "studies": (lambda x: isinstance(x, dict) and bool(x),
                "a non-empty mapping of title -> list of variant names"),
}


def _fail(path: Path, key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{KEY}: '{path}': {key}: got {value!r}; expected {expected}")


def _read_mapping(path: Path) -> dict:
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"{KEY}: '{path}' {what}; expected {STUDY_VALID}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        problem = f"is not YAML ({type(err).__name__})"
        raise ConfigError(f"{KEY}: '{path}' {problem}; expected {STUDY_VALID}") from None
    if not isinstance(data, dict):
        problem = f"holds {type(data).__name__}, not a mapping"
        raise ConfigError(f"{KEY}: '{path}' {problem}; expected {STUDY_VALID}")
    return data


def _variant(path: Path, name: str, raw: Any) -> Variant:
    key = f"variants.{name}"
    if not isinstance(raw, dict) or not isinstance(raw.get("algorithm"), str):
        raise _fail(path, key, raw, "a mapping with an algorithm preset, e.g. {algorithm: kfcpo}")
    unknown = sorted(set(raw) - set(VARIANT_KEYS))
    if unknown:
        raise _fail(path, f"{key}.{unknown[0]}", raw[unknown[0]], f"only the keys {', '.join(VARIANT_KEYS)}")
    overrides = raw.get("overrides", [])
    if not _is_str_list(overrides) or not all("=" in o for o in overrides):
        raise _fail(path, f"{key}.overrides", overrides, "a list of key=value strings")
    why = raw.get("why")
    if why is not None and not isinstance(why, str):
        raise _fail(path, f"{key}.why", why, "a string")
    return Variant(str(name), raw["algorithm"], tuple(overrides), why)


def load_spec(path: str | Path) -> AblationSpec:
    """Read and check a STUDY.yaml; ConfigError (one line) naming the first problem."""
    path = Path(path)
    data = _read_mapping(path)
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise _fail(path, unknown[0], data[unknown[0]], f"only the keys {', '.join(TOP_KEYS)}")
    for key, (ok, expected) in TOP_KEYS.items():
        if key not in data or not ok(data[key]):
            raise _fail(path, key, data.get(key), expected)
    variants = {str(name): _variant(path, name, raw) for name, raw in data["variants"].items()}
    studies: dict[str, tuple[str, ...]] = {}
    for title, names in data["studies"].items():
        if not _is_str_list(names) or not names:
            raise _fail(path, f"studies.{title}", names, "a non-empty list of variant names")
        check_variant_names(names, variants, f"{KEY}: '{path}': studies.{title}")
        studies[str(title)] = tuple(names)
    return AblationSpec(path, data["env"], data["total_steps"], data["steps_per_epoch"], data["num_envs"],
                        tuple(data["seeds"]), variants, studies)


def check_variant_names(names: list[str] | tuple[str, ...], variants: dict[str, Variant], key: str) -> None:
    """ConfigError naming the unknown names among `names` and the valid ones."""
    unknown = sorted({n for n in names if n not in variants})
    if unknown:
        raise ConfigError(f"{key}: unknown variant(s) {', '.join(unknown)}; valid: {', '.join(variants)}")
