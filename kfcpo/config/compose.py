"""Config = schema defaults <- algorithm preset <- experiment file <- command line.

Component sections compose by name: a layer that names a different component than the
layer below starts from that component's registry defaults, so parameters never leak
from one component to another (e.g. `preconditioner.name=cg` over a K-FAC preset).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kfcpo.config.errors import ConfigError
from kfcpo.config.schema import Config
from kfcpo.registry import COMPONENT_FAMILIES, Registry, RegistryError, default_roots, split_section
from kfcpo.version import RUN_INFO_KEYS

CONFIG_VALID = "a YAML file of keys, e.g. conf/button.yaml"


def read_file(path: str | Path) -> dict[str, Any]:
    """An experiment YAML file as a dict of keys (a run's provenance keys dropped); a
    one-line ConfigError for a missing, unreadable or malformed file."""
    p = Path(path)
    if os.path.isdir(p):
        inside = sorted(f.name for f in p.glob("*.yaml"))
        there = f" (YAML files there: {', '.join(inside)})" if inside else ""
        raise ConfigError(f"--config: '{path}' is a folder; expected {CONFIG_VALID}{there}")
    if not os.path.isfile(p):
        raise ConfigError(f"--config: no such file '{path}'; expected {CONFIG_VALID}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        problem = "is not a text file (not UTF-8)"
    except OSError as err:
        problem = f"cannot be read ({err.strerror})"
    else:
        problem = ""
    if problem:
        raise ConfigError(f"--config: '{path}' {problem}; expected {CONFIG_VALID}")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"--config: '{path}' is not valid YAML{where}: {what}") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"--config: '{path}' must hold a mapping of keys (as conf/button.yaml), not {kind}")
    # A run's config.yaml records the kfcpo that made it beside the config: not config keys,
    # dropped so that the file can be given back as --config.
    return {k: v for k, v in data.items() if k not in RUN_INFO_KEYS}


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Command-line `key=value` overrides (omegaconf dotlist) as a nested dict; a
    one-line ConfigError for a malformed one."""
    for item in overrides:  # each alone, so an error names the override it is in
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}': expected key=value (e.g. env.num_envs=4)")
        try:
            OmegaConf.from_dotlist([item])
        except (OmegaConfBaseException, yaml.YAMLError) as err:  # yaml: a value like [64,
            what = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"override '{item}': not a valid value ({what}); expected key=value "
                              "with a YAML value, e.g. model.hidden=[64,64]") from None
    try:  # each is valid alone; together one may index into another's value
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))  # type: ignore[return-value]
    except (OmegaConfBaseException, ValueError) as err:
        raise ConfigError(f"overrides: they do not combine ({str(err).splitlines()[0]}); "
                          "give each key once, a section's keys or its whole value") from None


def _layer_value(layer: dict[str, Any], key: str) -> Any:
    value = layer.get(key)
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping with 'name' and parameters, got {value!r}")
    return value or {}


def _compose_component(
    registry: Registry, family: str, layers: list[dict[str, Any]]
) -> dict[str, Any]:
    name: str | None = None
    params: dict[str, Any] = {}
    for layer in layers:
        layer_name, section = split_section(_layer_value(layer, family))
        if layer_name is not None and layer_name != name:
            name = str(layer_name)
            try:
                params = dict(registry.get(family, name).params)
            except RegistryError as err:
                raise ConfigError(f"{family}.name: {err}") from None
        params.update(section)
    if name is None:
        raise ConfigError(f"{family}.name: missing; valid: {', '.join(registry.names(family))}")
    return {"name": name, **params}


def _check_sections(layer: dict[str, Any], schema: DictConfig, prefix: str = "") -> None:
    """A value where the schema has a section (`logger.wandb=false`) gets an error that
    names the key and the section's keys; OmegaConf's own names neither."""
    for key, value in layer.items():
        if not isinstance(key, str) or key not in schema or not OmegaConf.is_dict(schema._get_node(key)):
            continue  # unknown keys and plain values: the merge's errors say what is wrong
        section = schema[key]
        if isinstance(value, dict):
            _check_sections(value, section, f"{prefix}{key}.")
        elif value is not None:
            keys = f" with keys {', '.join(map(str, section.keys()))}" if section.keys() else ""
            raise ConfigError(f"{prefix}{key}: got {value!r}; expected a section{keys} "
                              f"(e.g. {prefix}{key}.KEY=VALUE)")


def _structured_merge(layers: list[dict[str, Any]]) -> DictConfig:
    cfg = OmegaConf.structured(Config)
    for layer in layers:
        _check_sections(layer, cfg)
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as err:
            raise ConfigError(_describe(err)) from None
    return cfg


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or "config"
    msg = str(getattr(err, "msg", err)).splitlines()[0]
    if "not in" in msg:
        parent = key.rpartition(".")[0]
        node = OmegaConf.structured(Config)
        valid = sorted(OmegaConf.select(node, parent).keys()) if parent else sorted(node.keys())
        return f"{key}: unknown key; valid keys here: {', '.join(map(str, valid))}"
    if msg.startswith("Incompatible value 'None'"):  # `key=` with nothing after the '='
        default = OmegaConf.select(OmegaConf.structured(Config), key)
        return f"{key}: a value is required (nothing after '='); e.g. {key}={default}"
    if "is not a ListConfig" in msg:
        default = OmegaConf.select(OmegaConf.structured(Config), key)
        example = str(OmegaConf.to_container(default)).replace(" ", "")
        return f"{key}: expected a list, e.g. {key}={example}"
    return f"{key}: {msg}"


def compose(
    config_file: str | Path | None = None, overrides: list[str] | None = None
) -> tuple[DictConfig, Registry]:
    """The resolved config (not yet validated for ranges) and the registry it used."""
    file_layer = read_file(config_file) if config_file else {}
    cli_layer = parse_overrides(overrides or [])
    extra = [*file_layer.get("registry_paths", []), *cli_layer.get("registry_paths", [])]
    try:
        registry = Registry(default_roots(extra))
    except RegistryError as err:
        raise ConfigError(f"registry_paths: {err}") from None

    algorithm = cli_layer.get("algorithm") or file_layer.get("algorithm") or Config.algorithm
    try:
        preset = registry.get("algorithm", str(algorithm)).config
    except RegistryError as err:
        raise ConfigError(f"algorithm: {err}") from None
    layers = [preset, file_layer, cli_layer]

    components = {f: _compose_component(registry, f, layers) for f in COMPONENT_FAMILIES}
    plain = [{k: v for k, v in layer.items() if k not in COMPONENT_FAMILIES} for layer in layers]
    cfg = _structured_merge([*plain, {"algorithm": str(algorithm)}])
    for family, section in components.items():
        cfg[family] = section
    try:  # interpolations (${...}) resolved now: a bad one is an input error, not a crash later
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "interpolation"
        raise ConfigError(f"{key}: {str(err).splitlines()[0]}; an interpolation names another "
                          "key, e.g. cost_gamma=${gamma}") from None
    return cfg, registry
