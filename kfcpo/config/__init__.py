"""Compose, validate and print experiment configs."""

from omegaconf import DictConfig

from kfcpo.config.compose import compose
from kfcpo.config.errors import ConfigError
from kfcpo.config.schema import Config
from kfcpo.config.validate import validate
from kfcpo.registry import Registry


def load_config(
    config_file: str | None = None, overrides: list[str] | None = None, check_env: bool = True
) -> tuple[DictConfig, Registry]:
    """Compose and validate: the config a run will use, or a ConfigError."""
    cfg, registry = compose(config_file, overrides)
    validate(cfg, registry, check_env=check_env)
    return cfg, registry


__all__ = ["Config", "ConfigError", "compose", "load_config", "validate"]
