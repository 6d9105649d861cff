"""The worker process of a ``PoolVectorEnv``: it owns a contiguous block of envs and
steps all of them for one message, so a vector step costs one round trip per worker
rather than one per env.

Each env is stepped and autoreset exactly as gymnasium 0.29's ``SyncVectorEnv`` does it
(a finished episode's last observation and info go to ``info["final_observation"]`` and
``info["final_info"]``), so a pool and a sync vector env of the same envs return the same
arrays bit for bit. Arrays travel through ``StepBuffers``; the pipe carries the command
and, back, the per-env info dicts (the main process merges them in env order).

A pool built for the worker engine also hands each worker the epoch's arrays
(``EpochBuffers``); the ``POLICY`` command then runs a whole epoch of the policy on the
worker's block (``policy_worker.run_block``) and answers with its final observations.
"""

from __future__ import annotations

import os
import pickle
import signal
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import gymnasium
import numpy as np

from kfcpo.envs.epoch_buffers import EpochBuffers
from kfcpo.envs.pool_buffers import StepBuffers

RESET, STEP, CALL, SET_ATTR, SPACES, CLOSE = "reset", "step", "call", "set_attr", "spaces", "close"
POLICY = "policy"  # the worker engine: one epoch of the policy on the worker's block
# How often an idle worker checks that the process that started it still exists: a parent
# killed without closing the pool must not leave workers behind.
PARENT_CHECK_S = 1.0

Reply = tuple[bool, Any]  # (True, result) or (False, (exception type or None, message, traceback))


def error_reply(err: BaseException) -> Reply:
    """An error as plain data; the exception type only if the main process can unpickle it."""
    kind: type[BaseException] | None = type(err)
    try:
        pickle.loads(pickle.dumps(kind))
    except Exception:
        kind = None
    return False, (kind, f"{type(err).__name__}: {err}" if kind is None else str(err),
                   traceback.format_exc())


def step_block(envs: Sequence[gymnasium.Env], first: int, arrays: dict[str, np.ndarray]) -> list[dict]:
    """Step envs ``first, first+1, ...`` with their rows of ``arrays["act"]``, write their
    results into their rows, and return their infos (SyncVectorEnv's autoreset)."""
    infos = []
    for i, env in enumerate(envs, start=first):
        # A copy: an env may keep its action, and the shared row is overwritten next step.
        obs, reward, terminated, truncated, info = env.step(arrays["act"][i].copy())
        if terminated or truncated:
            old_obs, old_info = obs, info
            obs, info = env.reset()
            info["final_observation"] = old_obs
            info["final_info"] = old_info
        arrays["obs"][i] = obs
        arrays["reward"][i] = reward
        arrays["terminated"][i] = terminated
        arrays["truncated"][i] = truncated
        infos.append(info)
    return infos


def reset_block(
    envs: Sequence[gymnasium.Env], first: int, arrays: dict[str, np.ndarray], kwargs: Sequence[dict]
) -> list[dict]:
    """Reset each env of a worker's block with its own keyword arguments, writing the
    observations into the shared arrays from row `first`; the reset infos."""
    infos = []
    for i, (env, kw) in enumerate(zip(envs, kwargs, strict=True), start=first):
        obs, info = env.reset(**kw)
        arrays["obs"][i] = obs
        infos.append(info)
    return infos


def call_block(envs: Sequence[gymnasium.Env], name: str, args: tuple, kwargs: dict) -> list[Any]:
    """Each env's `name`: called with `args` and `kwargs` if callable, else its value."""
    out = []
    for env in envs:
        attr = getattr(env, name)
        out.append(attr(*args, **kwargs) if callable(attr) else attr)
    return out


def _handle(command: str, data: Any, envs: list[gymnasium.Env], first: int,
            arrays: dict[str, np.ndarray], epoch_arrays: dict[str, np.ndarray] | None) -> Any:
    if command == STEP:
        return step_block(envs, first, arrays)
    if command == POLICY:
        # Imported here: it loads torch, which a pool of the step engine never needs (a
        # spawned or forkserver worker would otherwise pay its import).
        from kfcpo.envs import policy_worker
        from kfcpo.threads import one_thread

        if epoch_arrays is None:
            raise RuntimeError("this pool was built without epoch buffers (epoch_steps)")
        with one_thread():
            return policy_worker.run_block(envs, first, data, epoch_arrays)
    if command == RESET:
        return reset_block(envs, first, arrays, data)
    if command == CALL:
        name, args, kwargs = data
        return call_block(envs, name, args, kwargs)
    if command == SET_ATTR:
        name, values = data
        for env, value in zip(envs, values, strict=True):
            setattr(env, name, value)
        return None
    if command == SPACES:
        return [(env.observation_space == data[0], env.action_space == data[1]) for env in envs]
    raise RuntimeError(f"unknown worker command {command!r}")


def serve(
    env_fns: Sequence[Callable[[], gymnasium.Env]],
    first: int,
    buffers: StepBuffers,
    pipe: Connection,
    parent_end: Connection | None,
    epoch_buffers: EpochBuffers | None = None,
) -> None:
    """Build this worker's envs, then answer commands until CLOSE or the parent is gone."""
    # Ctrl-C reaches the whole process group: the main process handles it and closes the
    # pool; a worker dying mid-step would only turn a clean stop into a broken pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent_pid = os.getppid()
    if parent_end is not None:
        parent_end.close()  # (fork) so the pipe reports EOF when the parent goes
    envs: list[gymnasium.Env] = []
    try:
        try:
            envs.extend(fn() for fn in env_fns)
            arrays = buffers.views()
            epoch_arrays = None if epoch_buffers is None else epoch_buffers.views()
            pipe.send((True, None))
        except Exception as err:
            pipe.send(error_reply(err))
            return
        while True:
            if not pipe.poll(PARENT_CHECK_S):
                if os.getppid() != parent_pid:
                    return
                continue
            command, data = pipe.recv()
            if command == CLOSE:
                pipe.send((True, None))
                return
            try:
                reply: Reply = (True, _handle(command, data, envs, first, arrays, epoch_arrays))
            except Exception as err:
                reply = error_reply(err)
            pipe.send(reply)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the main process is gone: nobody to answer
    finally:
        for env in envs:
            env.close()
