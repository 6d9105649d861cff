"""`kfcpo bench presets`: update time per epoch of every algorithm preset on the same
rollout, as ratios to kfcpo and to the time of the rollout itself.

One rollout is collected once (fresh policy, the preset-independent defaults: 2x64 tanh
policy, observation normalization, GAE); then each preset starts from that same policy and
critics and runs one epoch's update on it: the policy update (gradients, curvature,
blend, guard, as `kfcpo.update.policy_update`) and the critics' regression. Each repeat
collects the (same, seeded) rollout again, timing it, then times every preset in turn;
medians over repeats are reported (the machine is shared: ratios taken side by side drift
less than absolute times). `update / rollout` is the share of an epoch the update adds
to the rollout it learns from.

    kfcpo bench presets [--env SafetyPointButton1-v0] [--steps 20000] [--repeats 3]
        [--extra "cpo preconditioner.name=kfac" ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass

import torch

from kfcpo.config import ConfigError, load_config
from kfcpo.data.batch import Rollout
from kfcpo.data.rollout import GAEConfig, RolloutCollector
from kfcpo.envs import make_vector_env
from kfcpo.metrics_schema import GUARD_COMMITTED_FRAC, UPDATE_POLICY_STEPS
from kfcpo.module import SafeRLModule
from kfcpo.registry import Registry
from kfcpo.update import critic_update, policy_update

BASELINE = "kfcpo"
# Metrics echoed per row: how much policy work the epoch did.
WORK_KEYS = (UPDATE_POLICY_STEPS, GUARD_COMMITTED_FRAC)


@dataclass
class Timing:
    """One row's seconds per repeat, and the work of its last update."""

    policy_s: list[float]
    critic_s: list[float]
    work: dict[str, float]

    @property
    def total(self) -> float:
        """The median over repeats of policy plus critic seconds."""
        return statistics.median(p + c for p, c in zip(self.policy_s, self.critic_s, strict=True))


def overrides_for(row: str, env_id: str, steps: int, num_envs: int) -> list[str]:
    """The config of one row ("algorithm key=value ...") on the benchmarked rollout."""
    algorithm, *extra = row.split()
    return [
        f"algorithm={algorithm}", f"env.id={env_id}", f"steps_per_epoch={steps}",
        f"env.num_envs={num_envs}", "logger.wandb.mode=disabled", *extra,
    ]


def collect(env_id: str, steps: int, num_envs: int, seed: int) -> tuple[Rollout, dict]:
    """One epoch from a fresh policy; also the networks' initial weights."""
    cfg, _ = load_config(None, overrides_for(BASELINE, env_id, steps, num_envs))
    torch.manual_seed(seed)  # the same initial policy, hence the same rollout, every run
    module = SafeRLModule(cfg)
    vector = "sync" if num_envs == 1 else "async"
    envs = make_vector_env(env_id, num_envs, seed=seed, vector=vector)
    gae_cfg = GAEConfig.from_config(cfg)
    collector = RolloutCollector(
        envs, module.actor, module.critics, module.normalizer,
        steps // num_envs, gae_cfg, seed,
    )
    try:
        rollout = collector.collect(0)
    finally:
        envs.close()
    return rollout, module.state_dict()


def one_update(
    row: str, rollout: Rollout, weights: dict, args: argparse.Namespace
) -> tuple[float, float, dict[str, float]]:
    """Seconds of the policy update and of the critic update for one preset, and its work."""
    cfg, _ = load_config(None, overrides_for(row, args.env, args.steps, args.num_envs), check_env=False)
    module = SafeRLModule(cfg)
    module.load_state_dict(weights)  # the policy and critics that collected the rollout
    torch.manual_seed(args.seed)
    s = rollout.stats
    ep_cost = s.ep_cost_sum / s.episodes if s.episodes else 0.0
    start = time.perf_counter()
    metrics = policy_update(module.actor, rollout.batch, module.algorithm, ep_cost, module.update_cfg,
                            module.shuffle)
    policy_s = time.perf_counter() - start
    optimizer = module.configure_optimizers()
    targets = torch.stack([rollout.batch.ret_r, rollout.batch.ret_c])
    start = time.perf_counter()
    critic_update(module.critics, targets, rollout.batch.obs, optimizer, module.update_cfg, module.shuffle)
    return policy_s, time.perf_counter() - start, {k: metrics[k] for k in WORK_KEYS}


def check(args: argparse.Namespace) -> list[str]:
    """The rows (every preset, then --extra), each row's config checked before the rollout;
    ConfigError (one line) for bad input."""
    rows = [*Registry().names("algorithm"), *args.extra]
    if BASELINE not in rows:
        raise ConfigError(f"the baseline preset '{BASELINE}' is not in the registry; "
                          "expected a registry with registry/algorithm/kfcpo.yaml")
    for row in rows:
        if not row.split():
            raise ConfigError("--extra: got an empty row; expected \"algorithm key=value ...\"")
        load_config(None, overrides_for(row, args.env, args.steps, args.num_envs))
    return rows


def print_table(timings: dict[str, Timing], rollout: Rollout, rollout_s: list[float],
                args: argparse.Namespace) -> None:
    """The markdown table: seconds per part, ratios to the rollout and to kfcpo, work done."""
    med = statistics.median
    jc = rollout.stats.ep_cost_sum / max(rollout.stats.episodes, 1)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.env}, a rollout of "
          f"{len(rollout.batch)} steps with {args.num_envs} envs (median {med(rollout_s):.2f} s, Jc = "
          f"{jc:.1f} over {rollout.stats.episodes} episodes), median of {args.repeats}, "
          f"load average {load}\n")
    base, base_policy = timings[BASELINE].total, med(timings[BASELINE].policy_s)
    print("| preset | policy s | critic s | update s | update / rollout | update / kfcpo "
          "| policy / kfcpo | policy steps | committed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row, t in timings.items():
        print(f"| {row} | {med(t.policy_s):.2f} | {med(t.critic_s):.2f} | {t.total:.2f} | "
              f"{t.total / med(rollout_s):.2f} | {t.total / base:.2f}x | "
              f"{med(t.policy_s) / base_policy:.1f}x | {t.work[UPDATE_POLICY_STEPS]:.0f} | "
              f"{t.work[GUARD_COMMITTED_FRAC]:.2f} |")


def run(args: argparse.Namespace) -> int:
    """`kfcpo bench presets`: check every row, then time them all on the same rollouts."""
    rows = check(args)
    torch.set_num_threads(args.threads)
    timings = {row: Timing([], [], {}) for row in rows}
    rollout_s = []
    for _ in range(args.repeats):
        rollout, weights = collect(args.env, args.steps, args.num_envs, args.seed)
        rollout_s.append(rollout.stats.rollout_s)
        for row in rows:
            policy_s, critic_s, work = one_update(row, rollout, weights, args)
            timings[row].policy_s.append(policy_s)
            timings[row].critic_s.append(critic_s)
            timings[row].work = work
    print_table(timings, rollout, rollout_s, args)
    return 0
