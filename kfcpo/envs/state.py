"""An env's complete state as bytes, and back, so a resumed run steps exactly as the
interrupted one would have.

``pickle(env)`` does not work for this: safety_gymnasium's ``Builder`` pickles via
``EzPickle``, i.e. it re-constructs a fresh env from its constructor arguments and loses
the episode. Instead the state is the ``__dict__`` of every layer of the wrapper chain
(``SafetyToGymnasium`` -> ``SafeTimeLimit`` (``_elapsed_steps``) -> ``OrderEnforcing``
(``_has_reset``) -> ``SafePassiveEnvChecker`` -> ``Builder``), each without its link to
the next layer, pickled in one call so objects shared between layers stay shared. The
``Builder``'s dict holds the task: the MuJoCo model and data (pickled by mujoco itself),
the layout RNG (``task.random_generator``) and the spaces with their RNGs. Restoring
updates the dicts of a freshly made env of the same id.

Render contexts are process-local GL resources: they are pickled as placeholders and the
target env keeps its own (pointed at the restored model and data).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from typing import Any

import gymnasium
from gymnasium.envs.mujoco.mujoco_rendering import BaseRender

STATE_ATTR = "env_state"  # the SafetyToGymnasium property vector envs get and set by name
_RENDER_TOKEN = "render-context"
_NEXT_LAYER = "env"  # a wrapper's link to the layer inside it: structure, not state


class EnvStateError(ValueError):
    """A state that does not fit the env it is restored into."""


def _layers(env: gymnasium.Env) -> list[Any]:
    chain = [env]
    while isinstance(chain[-1], gymnasium.Wrapper):
        chain.append(chain[-1].env)
    return chain


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> str | None:
        return _RENDER_TOKEN if isinstance(obj, BaseRender) else None


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> None:
        if pid != _RENDER_TOKEN:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        return None


def capture(env: gymnasium.Env) -> bytes:
    """The state of ``env`` (a single env, outermost wrapper) as bytes."""
    chain = _layers(env)
    state = {
        "layers": [type(layer).__qualname__ for layer in chain],
        "dicts": [{k: v for k, v in vars(layer).items() if k != _NEXT_LAYER} for layer in chain],
    }
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
    return buf.getvalue()


def restore(env: gymnasium.Env, blob: bytes) -> None:
    """Make ``env`` continue exactly where the env that ``capture`` saw was.

    ``env`` must have the same wrapper chain and task id (a fresh ``make_env`` of it).
    """
    state = _Unpickler(io.BytesIO(blob)).load()
    chain = _layers(env)
    names = [type(layer).__qualname__ for layer in chain]
    if names != state["layers"]:
        raise EnvStateError(f"env state is for wrappers {state['layers']}, this env has {names}")
    base, saved_base = chain[-1], state["dicts"][-1]
    task_id = getattr(base, "task_id", None)
    if task_id != saved_base.get("task_id", task_id):
        raise EnvStateError(f"env state is for task {saved_base['task_id']}, this env is {task_id}")
    task = getattr(base, "task", None)
    viewer, viewers = getattr(task, "viewer", None), getattr(task, "_viewers", {})
    for layer, saved in zip(chain, state["dicts"], strict=True):
        layer.__dict__.update(saved)
    _keep_render_contexts(base.task if hasattr(base, "task") else None, viewer, viewers)


def _keep_render_contexts(task: Any, viewer: Any, viewers: dict[str, Any]) -> None:
    # The restored task's viewers are placeholders (None); this env's own contexts stay,
    # and must draw the restored model and data, as safety_gymnasium does after a rebuild.
    if task is None or not hasattr(task, "_viewers"):
        return
    task.viewer = viewer
    task._viewers = {mode: v for mode, v in viewers.items() if v is not None}
    for v in task._viewers.values():
        v.model, v.data = task.model, task.data


def vector_state(venv: gymnasium.vector.VectorEnv) -> dict[str, Any]:
    """Bytes: each sub-env's state (``get_attr`` reaches async workers too) and the RNGs of
    the batched spaces (unused by training, kept so nothing random is left behind)."""
    return {
        "envs": list(venv.get_attr(STATE_ATTR)),
        "spaces": pickle.dumps([s.np_random.bit_generator.state for s in _spaces(venv)]),
    }


def load_vector_state(venv: gymnasium.vector.VectorEnv, state: dict[str, Any]) -> None:
    """Restore what `vector_state` returned; EnvStateError if the env count differs."""
    envs: Sequence[bytes] = state["envs"]
    if len(envs) != venv.num_envs:
        raise EnvStateError(f"state holds {len(envs)} envs, the vector env has {venv.num_envs}")
    # set_attr hands env i the i-th value, in a worker process for AsyncVectorEnv.
    venv.set_attr(STATE_ATTR, list(envs))
    for space, rng in zip(_spaces(venv), pickle.loads(state["spaces"]), strict=True):
        space.np_random.bit_generator.state = rng


def _spaces(venv: gymnasium.vector.VectorEnv) -> tuple[gymnasium.Space, gymnasium.Space]:
    return venv.action_space, venv.observation_space
