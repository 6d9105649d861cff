"""`kfcpo bench envs`: random-action throughput of kfcpo's vector envs, sync against
async (env steps/s, resets included).

    kfcpo bench envs [--steps 4000] [--envs 1 2 4] [--tasks SafetyPointGoal1-v0 ...]

KFCPO_STAR_SKYBOX=1 measures with safety_gymnasium's original star skybox.
"""

from __future__ import annotations

import argparse
import time

from kfcpo.config import ConfigError
from kfcpo.envs import UnknownEnvError, make_vector_env, validate_env_id

VECTORS = ("sync", "async")


def steps_per_second(env_id: str, num_envs: int, vector: str, steps: int, seed: int) -> float:
    """Random-action env steps per second of one vector env (after its first reset)."""
    venv = make_vector_env(env_id, num_envs, seed=seed, vector=vector)  # type: ignore[arg-type]
    try:
        venv.reset()
        start = time.perf_counter()
        for _ in range(max(1, steps // num_envs)):
            venv.step(venv.action_space.sample())
        elapsed = time.perf_counter() - start
    finally:
        venv.close()
    return max(1, steps // num_envs) * num_envs / elapsed


def run(args: argparse.Namespace) -> int:
    """`kfcpo bench envs`: every task checked, then one line per task and env count."""
    for env_id in args.tasks:
        try:
            validate_env_id(env_id)
        except UnknownEnvError as err:
            raise ConfigError(f"--tasks: {err}") from None
    print(f"{'task':24} {'envs':>4} {'sync':>8} {'async':>8}   (steps/s)")
    for env_id in args.tasks:
        for n in args.envs:
            rates = [steps_per_second(env_id, n, vector, args.steps, args.seed) for vector in VECTORS]
            print(f"{env_id:24} {n:>4} {rates[0]:>8.0f} {rates[1]:>8.0f}", flush=True)
    return 0
