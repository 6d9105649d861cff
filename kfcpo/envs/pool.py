"""A vector env whose envs are spread over a few worker processes, several per worker.

Why: gymnasium's ``AsyncVectorEnv`` runs one process per env, so every vector step is
``num_envs`` pipe round trips and wake-ups, and on a machine with fewer cores than envs
the processes only take turns. Profiled on 2 cores (PointCircle1, 4 envs) its main
process spent more CPU time on the round trips than the sync loop spent on everything
but physics. Here each worker steps a contiguous block of envs per message (see
``kfcpo.envs.layout``), arrays travel through shared memory (``pool_buffers``) and only
the info dicts are pickled.

The results are those of ``SyncVectorEnv`` over the same envs bit for bit: each env is
stepped and autoreset by the same rule (``pool_worker``), the infos are merged in env
order by the same ``_add_info``, and env ``i`` is seeded ``seed + i``. ``get_attr``,
``set_attr`` and ``call`` reach every env in its worker, which exact resume relies on
(``kfcpo.envs.state``).

Built with ``epoch_steps`` (the worker engine, ``kfcpo.envs.policy_worker``), the pool
also shares one epoch's (T, N, ...) arrays with its workers (``epoch_views``), and
``run_epoch`` has every worker run the policy on its block for a whole epoch.

Shutdown: ``close()`` asks every worker to close its envs and exit, then joins it
(terminating one that does not answer in time); an error while stepping or resetting
closes the pool before it is raised; workers exit on their own when the process that
started them disappears.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import pickle
from collections.abc import Callable, Sequence
from enum import Enum
from multiprocessing.connection import wait as wait_for_any
from typing import TYPE_CHECKING, Any

import gymnasium
import numpy as np
from gymnasium.error import AlreadyPendingCallError, ClosedEnvironmentError, NoAsyncCallError
from gymnasium.vector import VectorEnv

from kfcpo.envs import pool_worker as pw
from kfcpo.envs.epoch_buffers import EpochBuffers, EpochLayout
from kfcpo.envs.layout import blocks
from kfcpo.envs.pool_buffers import StepBuffers

if TYPE_CHECKING:  # annotations only: it loads torch, which the step engine's pool never needs
    from kfcpo.envs.policy_worker import EpochPlan, Final

# Seconds a closing worker gets to close its envs before it is terminated.
CLOSE_TIMEOUT_S = 10.0
# How often ``run_epoch`` calls its ``on_wait`` while the workers run an epoch (an epoch
# lasts seconds; a progress bar redraws about this often).
PROGRESS_POLL_S = 0.25


@functools.cache
def _broadcast_message(command: str) -> bytes:
    """(command, None) pickled as `Connection.send` would (the worker's `recv` unpickles
    any bytes): the same message for every worker and every call, so a step command is
    pickled once per process instead of once per worker per step."""
    return pickle.dumps((command, None))


class PoolWorkerError(RuntimeError):
    """A worker failed with an exception whose type cannot be rebuilt here."""


class _Pending(Enum):
    NONE = "none"
    RESET = "reset"
    STEP = "step"
    CALL = "call"
    POLICY = "policy"


class PoolVectorEnv(VectorEnv):
    """``len(env_fns)`` envs stepped by ``workers`` processes (contiguous blocks)."""

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gymnasium.Env]],
        workers: int,
        context: str | None = None,
        epoch_steps: int | None = None,
    ) -> None:
        num_envs = len(env_fns)
        self._blocks = blocks(num_envs, workers)
        # Spaces and metadata from a throwaway env, as AsyncVectorEnv does: the shared
        # buffers must exist before the workers start.
        dummy = env_fns[0]()
        self.metadata = dummy.metadata
        observation_space, action_space = dummy.observation_space, dummy.action_space
        dummy.close()
        super().__init__(num_envs, observation_space, action_space)
        ctx = mp.get_context(context)
        self._buffers = StepBuffers.create(ctx, num_envs, observation_space, action_space)
        self._arrays = self._buffers.views()
        self._epoch_buffers: EpochBuffers | None = None
        if epoch_steps is not None:
            layout = EpochLayout(epoch_steps, num_envs, tuple(observation_space.shape),
                                 observation_space.dtype.str, tuple(action_space.shape))
            self._epoch_buffers = EpochBuffers.create(layout, ctx)
        self.epoch_views = None if self._epoch_buffers is None else self._epoch_buffers.views()
        self._pending = _Pending.NONE
        self._pipes: list[Any] = []
        self._processes: list[Any] = []
        try:
            for w, block in enumerate(self._blocks):
                parent_end, child_end = ctx.Pipe()
                # Under fork the child inherits the parent's end and must close it itself;
                # under spawn/forkserver handing it over would only duplicate it.
                inherited = parent_end if ctx.get_start_method() == "fork" else None
                process = ctx.Process(
                    target=pw.serve,
                    name=f"kfcpo-env-worker-{w}",
                    args=([env_fns[i] for i in block], block.start, self._buffers, child_end, inherited,
                          self._epoch_buffers),
                    daemon=True,  # never outlives a main process that exits without close()
                )
                process.start()
                child_end.close()
                self._pipes.append(parent_end)
                self._processes.append(process)
            self._gather()  # every worker has built its envs
            self._check_spaces()
        except BaseException:
            self._shutdown(terminate=True)
            self.closed = True
            raise

    @property
    def workers(self) -> int:
        """The number of worker processes."""
        return len(self._blocks)

    @property
    def epoch_layout(self) -> EpochLayout | None:
        """The shapes of ``epoch_views`` (None: built without ``epoch_steps``)."""
        return None if self._epoch_buffers is None else self._epoch_buffers.layout

    # ------------------------------------------------------------------ protocol
    def _send(self, command: str, per_worker: Sequence[Any] | None = None) -> None:
        if per_worker is None:
            message = _broadcast_message(command)
            for pipe in self._pipes:
                pipe.send_bytes(message)
            return
        for pipe, arg in zip(self._pipes, per_worker, strict=True):
            pipe.send((command, arg))

    def _gather(self) -> list[Any]:
        """Every worker's reply, in worker order; raises the first error after all have
        answered, so the pipes stay in step for the next command."""
        results, errors = [], []
        for w, pipe in enumerate(self._pipes):
            try:
                ok, payload = pipe.recv()
            except (EOFError, ConnectionResetError) as err:
                ok, payload = False, (None, f"worker {w} exited ({err!r})", "")
            results.append(payload if ok else None)
            if not ok:
                errors.append((w, payload))
        if errors:
            raise _rebuild(*errors[0])
        return results

    def _per_env(self, values: Sequence[Any]) -> list[list[Any]]:
        return [[values[i] for i in block] for block in self._blocks]

    def _assert_open(self) -> None:
        if self.closed:
            raise ClosedEnvironmentError(f"Trying to operate on `{type(self).__name__}` after `close()`.")

    def _assert_idle(self, what: str) -> None:
        self._assert_open()
        if self._pending is not _Pending.NONE:
            raise AlreadyPendingCallError(
                f"Calling `{what}` while waiting for a pending call to `{self._pending.value}` to complete.",
                self._pending.value,
            )

    def _wait(self, expected: _Pending) -> list[Any]:
        self._assert_open()
        if self._pending is not expected:
            raise NoAsyncCallError(
                f"Calling `{expected.value}_wait` without a prior `{expected.value}_async`.", expected.value
            )
        self._pending = _Pending.NONE
        if expected in (_Pending.STEP, _Pending.RESET, _Pending.POLICY):
            try:
                return self._gather()
            except BaseException:
                # Envs may be half stepped: nothing sensible can follow. Every worker has
                # answered, so each can still close its envs and exit cleanly.
                self.close()
                raise
        return self._gather()

    def _merged_infos(self, replies: list[list[dict]]) -> dict[str, Any]:
        infos: dict[str, Any] = {}
        for block, block_infos in zip(self._blocks, replies, strict=True):
            for i, info in zip(block, block_infos, strict=True):
                infos = self._add_info(infos, info, i)
        return infos

    # ------------------------------------------------------------------ VectorEnv
    def reset_async(self, seed: int | list[int] | None = None, options: dict | None = None) -> None:
        self._assert_idle("reset_async")
        if seed is None:
            seed = [None] * self.num_envs
        if isinstance(seed, int):
            seed = [seed + i for i in range(self.num_envs)]
        if len(seed) != self.num_envs:
            raise ValueError(f"{len(seed)} seeds for {self.num_envs} envs")
        kwargs = []
        for s in seed:
            kw: dict[str, Any] = {} if s is None else {"seed": s}
            if options is not None:
                kw["options"] = options
            kwargs.append(kw)
        self._send(pw.RESET, self._per_env(kwargs))
        self._pending = _Pending.RESET

    def reset_wait(self, seed: Any = None, options: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
        infos = self._merged_infos(self._wait(_Pending.RESET))
        return np.copy(self._arrays["obs"]), infos

    def step_async(self, actions: Any) -> None:
        self._assert_idle("step_async")
        self._arrays["act"][...] = actions  # cast to the action space's dtype, as the envs do
        self._send(pw.STEP)
        self._pending = _Pending.STEP

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        infos = self._merged_infos(self._wait(_Pending.STEP))
        a = self._arrays
        return (np.copy(a["obs"]), np.copy(a["reward"]), np.copy(a["terminated"]),
                np.copy(a["truncated"]), infos)

    def run_epoch(self, plan: EpochPlan, on_wait: Callable[[], None] | None = None) -> list[Final]:
        """Every worker runs ``plan`` on its block (``policy_worker.run_block``), reading
        and writing ``epoch_views``; the truncated episodes' final observations of all
        envs. ``on_wait`` is called every ``PROGRESS_POLL_S`` while workers are still
        stepping and once when the last has answered (it may read ``stepped``). An error
        closes the pool before it is raised (envs are half stepped)."""
        self._assert_idle("run_epoch")
        if self._epoch_buffers is None:
            raise RuntimeError("this pool was built without epoch buffers: pass epoch_steps")
        self._send(pw.POLICY, [plan] * self.workers)
        self._pending = _Pending.POLICY
        if on_wait is not None:
            busy = list(self._pipes)
            while busy:  # a worker that dies makes its pipe readable too
                answered = wait_for_any(busy, timeout=PROGRESS_POLL_S)
                busy = [pipe for pipe in busy if pipe not in answered]
                on_wait()
        return [final for block in self._wait(_Pending.POLICY) for final in block]

    def call_async(self, name: str, *args: Any, **kwargs: Any) -> None:
        self._assert_idle("call_async")
        self._send(pw.CALL, [(name, args, kwargs)] * self.workers)
        self._pending = _Pending.CALL

    def call_wait(self, timeout: float | None = None) -> tuple[Any, ...]:
        return tuple(x for block in self._wait(_Pending.CALL) for x in block)

    def set_attr(self, name: str, values: list | tuple | Any) -> None:
        self._assert_idle("set_attr")
        if not isinstance(values, list | tuple):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"{len(values)} values for {self.num_envs} envs")
        self._send(pw.SET_ATTR, [(name, block_values) for block_values in self._per_env(values)])
        self._gather()

    def _check_spaces(self) -> None:
        self._send(pw.SPACES, [(self.single_observation_space, self.single_action_space)] * self.workers)
        for same_obs, same_act in (x for block in self._gather() for x in block):
            if not (same_obs and same_act):
                raise RuntimeError("all envs of a vector env must have the same observation and action space")

    # ------------------------------------------------------------------ shutdown
    def close_extras(self, timeout: float | None = CLOSE_TIMEOUT_S, terminate: bool = False) -> None:
        self._shutdown(terminate, timeout)

    def _shutdown(self, terminate: bool, timeout: float | None = CLOSE_TIMEOUT_S) -> None:
        if self._pending is not _Pending.NONE and not terminate:
            try:  # let the workers finish the pending command so they read CLOSE next
                self._gather()
            except Exception:
                terminate = True
        self._pending = _Pending.NONE
        for pipe, process in zip(self._pipes, self._processes, strict=False):
            if terminate or not process.is_alive():
                continue
            try:
                pipe.send((pw.CLOSE, None))
                if pipe.poll(timeout):
                    pipe.recv()
            except (EOFError, OSError):
                pass
        for process in self._processes:
            process.join(0 if terminate else timeout)
            if process.is_alive():
                process.terminate()
                process.join()
        for pipe in self._pipes:
            pipe.close()
        self._pipes, self._processes = [], []

    def __del__(self) -> None:
        if not getattr(self, "closed", True) and hasattr(self, "_processes"):
            self.close(terminate=True)


def _rebuild(worker: int, payload: tuple[type[BaseException] | None, str, str]) -> BaseException:
    """The worker's exception in this process: its own type (so callers can catch e.g.
    EnvStateError) when that type takes a message, with the worker's traceback as a note."""
    kind, message, trace = payload
    err: BaseException
    try:
        err = kind(message) if kind is not None else PoolWorkerError(message)
    except Exception:
        err = PoolWorkerError(message)
    if trace:
        err.add_note(f"in env worker {worker}:\n{trace}")
    return err
