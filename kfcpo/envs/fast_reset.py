"""Make Safety Gymnasium's per-reset model rebuild cheap.

Every reset, safety_gymnasium's ``World.build`` re-reads ``configs/assets.yaml``
and recompiles the MuJoCo model, including a star skybox whose six PNGs decode
into one 3259 x 19554 RGB texture (191 MB). Measured on SafetyPointGoal1-v0 that
texture is ~95% of a reset (0.48 s -> 0.024 s without it) and 191 MB of memory
per env. Only cameras see a skybox (no body, contact, sensor or vector
observation uses it), so we parse the yaml once and swap the stars for MuJoCo's
builtin gradient sky. ``KFCPO_STAR_SKYBOX=1`` keeps the stars, e.g. for Vision
tasks, whose camera observations include the sky.
"""

from __future__ import annotations

import copy
import os
from typing import IO, Any

import yaml

STAR_SKYBOX_ENV = "KFCPO_STAR_SKYBOX"
GRADIENT_SKYBOX = {
    "@type": "skybox",
    "@builtin": "gradient",
    "@rgb1": "0.45 0.55 0.7",
    "@rgb2": "0 0 0",
    "@width": "32",
    "@height": "192",
}


class _AssetsYaml:
    """Stands in for the ``yaml`` module inside ``safety_gymnasium.world``."""

    FullLoader = yaml.FullLoader

    def __init__(self, star_skybox: bool) -> None:
        self.star_skybox = star_skybox
        self._parsed: dict[str, Any] = {}

    def load(self, stream: IO[str], Loader: Any = yaml.FullLoader) -> Any:
        path = getattr(stream, "name", None)
        if not isinstance(path, str):
            return yaml.load(stream, Loader=Loader)
        if path not in self._parsed:
            config = yaml.load(stream, Loader=Loader)
            textures = config.get("textures", {}) if isinstance(config, dict) else {}
            if not self.star_skybox and textures.get("skybox", {}).get("@type") == "skybox":
                textures["skybox"] = dict(GRADIENT_SKYBOX)
            self._parsed[path] = config
        # World.build appends these dicts into its XML tree: hand out copies.
        return copy.deepcopy(self._parsed[path])

    def __getattr__(self, name: str) -> Any:
        return getattr(yaml, name)


def install(star_skybox: bool | None = None) -> None:
    """Route ``safety_gymnasium.world``'s yaml reads through the cache (this process).

    ``star_skybox`` None reads ``KFCPO_STAR_SKYBOX`` ("1" keeps the stars).
    Calling again replaces the previous setting; models already built keep theirs.
    """
    import safety_gymnasium.world as world

    if star_skybox is None:
        star_skybox = os.environ.get(STAR_SKYBOX_ENV, "") == "1"
    world.yaml = _AssetsYaml(star_skybox)  # type: ignore[assignment]
