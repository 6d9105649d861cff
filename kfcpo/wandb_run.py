"""Where and how a run logs to wandb: `logger.wandb.*` over wandb's own environment variables.

wandb users steer it with WANDB_MODE, WANDB_PROJECT, WANDB_ENTITY, WANDB_DIR, WANDB_TAGS
and WANDB_RUN_GROUP; kfcpo honours each of them, and a config value wins only where the
config sets it. The schema cannot tell a value given on purpose from its default, so the
schema default counts as unset: `mode: auto`, `project: kfcpo`, `entity`/`group: null`,
`tags: []` (an explicit `logger.wandb.project=kfcpo` therefore yields to WANDB_PROJECT).

Runs of one algorithm on one task share a wandb group by default, `<algorithm>-<env id>`,
so the seeds of a study land together and wandb's UI shows their mean and spread.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from kfcpo.config.errors import ConfigError
from kfcpo.version import run_info

# wandb's own names; WANDB_MODE also takes wandb's older spellings, mapped to the new ones.
MODE_ENV, PROJECT_ENV, ENTITY_ENV = "WANDB_MODE", "WANDB_PROJECT", "WANDB_ENTITY"
DIR_ENV, TAGS_ENV, GROUP_ENV = "WANDB_DIR", "WANDB_TAGS", "WANDB_RUN_GROUP"
ENV_MODES = {"online": "online", "offline": "offline", "disabled": "disabled", "shared": "shared",
             "dryrun": "offline", "run": "online"}
AUTO = "auto"
DEFAULT_PROJECT = "kfcpo"  # the schema's default for logger.wandb.project


@dataclass(frozen=True)
class WandbSetup:
    """The arguments of `wandb.init` a run uses."""

    mode: str  # online | offline | shared (never disabled: then there is no setup)
    project: str
    entity: str | None
    group: str
    tags: list[str]
    dir: str

    def init_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `wandb.init` for this setup."""
        return {"mode": self.mode, "project": self.project, "entity": self.entity,
                "group": self.group, "tags": list(self.tags), "dir": self.dir}


def auto_mode(environ: Mapping[str, str] | None = None) -> str:
    """`auto`: online with an API key (WANDB_API_KEY or ~/.netrc) and offline otherwise,
    so a machine without network never waits on wandb's login."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY"):
        return "online"
    try:
        return "online" if netrc.netrc().authenticators("api.wandb.ai") else "offline"
    except (FileNotFoundError, netrc.NetrcParseError):
        return "offline"


def env_mode(environ: Mapping[str, str]) -> str | None:
    """WANDB_MODE as wandb reads it (None: not set); a value wandb would refuse is a
    one-line error now, not a traceback from inside wandb once training starts."""
    raw = environ.get(MODE_ENV, "").strip()
    if not raw:
        return None
    mode = ENV_MODES.get(raw.lower())
    if mode is None:
        raise ConfigError(
            f"{MODE_ENV}: got '{raw}'; expected one of {', '.join(ENV_MODES)} (or unset: "
            f"logger.wandb.mode decides)"
        )
    return mode


def default_group(cfg: DictConfig) -> str:
    """The group seeds of one study share: same algorithm, same task."""
    return f"{cfg.algorithm}-{cfg.env.id}"


def resolve_mode(cfg: DictConfig, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(mode, where it came from): online | offline | shared | disabled."""
    environ = os.environ if environ is None else environ
    mode = str(cfg.logger.wandb.mode)
    if mode != AUTO:  # given on purpose (auto is the default): the config wins
        return mode, "logger.wandb.mode"
    from_env = env_mode(environ)
    if from_env is not None:
        return from_env, MODE_ENV
    return auto_mode(environ), "logger.wandb.mode=auto"


def _tags(text: str) -> list[str]:
    # wandb's own reading of WANDB_TAGS: comma-separated, blanks dropped.
    return [t.strip() for t in text.split(",") if t.strip()]


def resolve(
    cfg: DictConfig, out_dir: str | Path, environ: Mapping[str, str] | None = None
) -> WandbSetup | None:
    """The wandb setup of a run writing to `out_dir`; None when wandb is off."""
    environ = os.environ if environ is None else environ
    mode, _ = resolve_mode(cfg, environ)
    if mode == "disabled":
        return None
    w = cfg.logger.wandb

    def pick(configured: Any, unset: Any, env_name: str, fallback: Any) -> Any:
        if configured != unset:
            return configured
        return environ.get(env_name, "").strip() or fallback

    project = pick(w.project, DEFAULT_PROJECT, PROJECT_ENV, DEFAULT_PROJECT)
    entity = pick(w.entity, None, ENTITY_ENV, None)
    group = pick(w.group, None, GROUP_ENV, default_group(cfg))
    tags = pick(list(w.tags), [], TAGS_ENV, "")
    tags = _tags(tags) if isinstance(tags, str) else [str(t) for t in tags]
    # No config key: WANDB_DIR or the run folder, so a run's wandb files sit with the rest.
    wandb_dir = pick(None, None, DIR_ENV, str(out_dir))
    return WandbSetup(mode, str(project), entity, str(group), tags, str(wandb_dir))


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The wandb run config: the resolved config, with the kfcpo version and commit."""
    return {**OmegaConf.to_container(cfg, resolve=True), **run_info()}


class KfcpoWandbLogger(WandbLogger):
    """Lightning's WandbLogger, without what wandb calls deprecated or kfcpo has given already.

    - `anonymous=None`, which Lightning always passes to `wandb.init` and wandb (0.31 here)
      answers on every run with "The anonymous setting has no effect and will be removed".
    - The module's hyperparameters (`{"config": <the resolved config>}`): the run config
      already holds the resolved config at its top level (from `wandb.init`), so logging it
      again would only nest a second copy under `config`.
    """

    def __init__(self, setup: WandbSetup, config: dict[str, Any]) -> None:
        kwargs = setup.init_kwargs()
        # Lightning's `dir` is ignored while its `save_dir` (default ".") is set.
        super().__init__(save_dir=kwargs.pop("dir"), config=config, **kwargs)
        init = getattr(self, "_wandb_init", None)
        if isinstance(init, dict) and init.get("anonymous", "") is None:
            del init["anonymous"]

    def log_hyperparams(self, params: Any) -> None:
        """Log hyperparameters other than the config, which the run config already holds."""
        if isinstance(params, Mapping):
            params = {k: v for k, v in params.items() if k != "config"}
            if not params:
                return
        super().log_hyperparams(params)


def build_wandb_logger(cfg: DictConfig, out_dir: str | Path) -> KfcpoWandbLogger | None:
    """The run's wandb logger; None when wandb is off (by the config or WANDB_MODE)."""
    setup = resolve(cfg, out_dir)
    return None if setup is None else KfcpoWandbLogger(setup, run_config(cfg))
