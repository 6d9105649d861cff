"""Compatibility shim that lets safety-gymnasium 1.0.0 run on today's stack.

safety-gymnasium 1.0.0 (its only release) was written for Python <= 3.10,
gymnasium 0.28 and mujoco 2.3. ``apply()`` fixes the three things that break on
Python 3.11, gymnasium 0.29.1 and mujoco >= 3.2, then imports safety_gymnasium.
It runs on ``import kfcpo.envs`` and is idempotent, so users never patch anything.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import dataclasses
import importlib
import io
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

_PATCHED_FLAG = "_kfcpo_compat"
FARAMA_NOTICE = "environment's reward functions were updated"
# The packages whose dataclasses may keep ndarray defaults; everyone else keeps
# Python's own check.
_ARRAY_DEFAULT_MODULES = ("safety_gymnasium",)
# gymnasium 0.29's defaults for a marker, kept so markers look as they did.
_MARKER_DEFAULTS: dict[str, Any] = {
    "size": np.full(3, 0.1),
    "pos": np.zeros(3),
    "mat": np.eye(3),
    "rgba": np.ones(4),
}


_applied = False


def apply() -> None:
    """Install every fix (once) and import safety_gymnasium."""
    global _applied
    if _applied:
        return
    _default_gl_backend()
    _allow_array_defaults_in_safety_gymnasium()
    _import_quietly("safety_gymnasium")
    _fix_marker_drawing()
    _applied = True


def _import_quietly(name: str) -> None:
    # gymnasium-robotics 1.2.3 prints a notice about Adroit reward versions to stderr on
    # import (via farama_notifications); it concerns tasks kfcpo never uses and would
    # break one-line error output. Anything else printed during the import passes through.
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        importlib.import_module(name)
    for line in captured.getvalue().splitlines(keepends=True):
        if FARAMA_NOTICE not in line:
            sys.stderr.write(line)


def _default_gl_backend() -> None:
    # mujoco reads MUJOCO_GL when it is first imported and gymnasium falls back to
    # glfw, which needs a display. Prefer EGL (GPU or Mesa's software EGL), then
    # OSMesa; leave a user's explicit choice alone.
    if os.environ.get("MUJOCO_GL"):
        return
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            return


def _allow_array_defaults_in_safety_gymnasium() -> None:
    # Python 3.11 rejects any dataclass default whose type is unhashable
    # (bpo-44674); 3.10 only rejected list/dict/set. safety_gymnasium's asset
    # classes declare ``color: np.ndarray = COLOR[...]``. We hand exactly those
    # fields back to dataclasses as if they had no default and then restore the
    # default, which reproduces the 3.10 behaviour (one shared, never mutated
    # array). The wrapper stays installed rather than only around the first import
    # because safety_gymnasium imports modules lazily (gymnasium entry points), but
    # it only acts on classes from safety_gymnasium with an ndarray default.
    original = dataclasses._get_field  # type: ignore[attr-defined]
    if getattr(original, _PATCHED_FLAG, False):
        return

    def get_field(cls: type, name: str, *args: Any) -> dataclasses.Field:
        value = cls.__dict__.get(name)
        if not (isinstance(value, np.ndarray) and cls.__module__.startswith(_ARRAY_DEFAULT_MODULES)):
            return original(cls, name, *args)
        setattr(cls, name, dataclasses.MISSING)
        try:
            field = original(cls, name, *args)
        finally:
            setattr(cls, name, value)
        field.default = value
        return field

    setattr(get_field, _PATCHED_FLAG, True)
    dataclasses._get_field = get_field  # type: ignore[attr-defined]


def _fix_marker_drawing() -> None:
    # mujoco 3.2 removed MjvGeom.texid/texuniform/texrepeat, which gymnasium
    # 0.29.1's marker code assigns one by one, so every navigation render (lidar
    # and goal markers) raised AttributeError. mjv_initGeom fills the geom through
    # MuJoCo's own C defaults, which survives such field changes; gymnasium 1.x
    # made the same move. Older mujoco keeps gymnasium's code.
    import mujoco
    from gymnasium.envs.mujoco import mujoco_rendering

    base = mujoco_rendering.BaseRender
    already = getattr(base._add_marker_to_scene, _PATCHED_FLAG, False)
    if already or hasattr(mujoco.MjvGeom(), "texid"):
        return
    base._add_marker_to_scene = _marker_adder(mujoco)


def _marker_adder(mujoco: Any) -> Callable[[Any, dict], None]:
    identity = {
        "objtype": int(mujoco.mjtObj.mjOBJ_UNKNOWN),
        "objid": -1,
        "dataid": -1,
        "category": int(mujoco.mjtCatBit.mjCAT_DECOR),
    }

    def add_marker_to_scene(self: Any, marker: dict) -> None:
        if self.scn.ngeom >= self.scn.maxgeom:
            raise RuntimeError(f"Ran out of geoms. maxgeom: {self.scn.maxgeom}")
        geom = self.scn.geoms[self.scn.ngeom]
        # mjv_initGeom leaves objid/category at 0; gymnasium marked markers as
        # decoration owned by no object, which keeps them out of selection.
        params = {**_MARKER_DEFAULTS, **identity, **marker}
        mujoco.mjv_initGeom(
            geom,
            int(params.pop("type", mujoco.mjtGeom.mjGEOM_BOX)),
            np.asarray(params.pop("size"), dtype=np.float64).reshape(3),
            np.asarray(params.pop("pos"), dtype=np.float64).reshape(3),
            np.asarray(params.pop("mat"), dtype=np.float64).reshape(9),
            np.asarray(params.pop("rgba"), dtype=np.float32).reshape(4),
        )
        for key, value in params.items():
            if key == "label":
                geom.label = value or ""
            elif isinstance(value, (tuple, list, np.ndarray)):
                target = getattr(geom, key)
                target[:] = np.asarray(value).reshape(target.shape)
            else:
                setattr(geom, key, value)
        self.scn.ngeom += 1

    setattr(add_marker_to_scene, _PATCHED_FLAG, True)
    return add_marker_to_scene
