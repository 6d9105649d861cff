"""Compose, validate and print experiment configs."""

from omegaconf import DictConfig

from kfcpo.config.compose import compose
from kfcpo.config.errors import ConfigError
from kfcpo.config.schema import Config
from kfcpo.config.validate import validate
from kfcpo.registry import Catalogue


def load_config(
    config_file: str | None = None, overrides: list[str] | None = None, check_env: bool = True
) -> tuple[DictConfig, Catalogue]:
    """Compose and validate: the config a run will use, or a ConfigError."""
    cfg, catalogue = compose(config_file, overrides)
    validate(cfg, catalogue, check_env=check_env)
    return cfg, catalogue


__all__ = ["Config", "ConfigError", "compose", "load_config", "validate"]
