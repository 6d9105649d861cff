"""Random-action throughput of kfcpo's vector envs (env steps/s, resets included).

.venv/bin/python tools/bench_envs_raw.py [--steps 4000] [--envs 1 2 4]
KFCPO_STAR_SKYBOX=1 ... measures with safety_gymnasium's original star skybox.
"""

from __future__ import annotations

import argparse
import time

from kfcpo.envs import make_vector_env

TASKS = ("SafetyPointGoal1-v0", "SafetyPointButton1-v0")


def steps_per_second(env_id: str, num_envs: int, vector: str, steps: int, seed: int) -> float:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="env steps per measurement")
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'task':24} {'envs':>4} {'sync':>8} {'async':>8}   (steps/s)")
    for env_id in args.tasks:
        for n in args.envs:
            rates = [
                steps_per_second(env_id, n, vector, args.steps, args.seed) for vector in ("sync", "async")
            ]
            print(f"{env_id:24} {n:>4} {rates[0]:>8.0f} {rates[1]:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
