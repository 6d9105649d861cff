"""Training throughput of `kfcpo fit` against the raw env rate and a plain PyTorch loop.

All figures come from one run, measured side by side (this machine is shared and
noisy: compare ratios, not absolute numbers):

  raw      random-action steps/s of the same vector env
  fit      env steps/s of `kfcpo fit` (Lightning Trainer, dataset, logging, rollout+update)
  plain    the same rollout and update math as a bare loop (no Lightning, no dataset)
  ratio    fit / raw          overhead   fit epoch time / plain epoch time - 1

Usage: python tools/bench_throughput.py [--envs SafetyPointGoal1-v0 ...] [--num-envs 1 2 4]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from kfcpo.config import load_config
from kfcpo.data.rollout import GAEConfig, RolloutCollector
from kfcpo.envs import make_vector_env
from kfcpo.module import SafeRLModule
from kfcpo.train import build_trainer
from kfcpo.update import critic_update, policy_update

sys.path.insert(0, str(Path(__file__).parent))
from bench_envs_raw import steps_per_second


class EpochClock(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self.update_s: list[float] = []
        self._t = 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        self.times.append(time.perf_counter() - self._t)
        self.update_s.append(float(trainer.callback_metrics["update_s"]))


def fit_epochs(overrides: list[str], out: Path) -> tuple[list[float], list[float]]:
    """Lightning epoch wall times and update seconds per epoch."""
    cfg, _ = load_config(None, overrides)
    module = SafeRLModule(cfg)
    trainer = build_trainer(cfg, out)
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, pl.callbacks.ProgressBar)]
    clock = EpochClock()
    trainer.callbacks.append(clock)
    trainer.fit(module)
    return clock.times, clock.update_s


def plain_epochs(overrides: list[str]) -> list[float]:
    """The same math with no framework: collector, policy update, critic update."""
    cfg, _ = load_config(None, overrides)
    module = SafeRLModule(cfg)  # only as a bag of networks and components
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    torch.manual_seed(cfg.seed)
    envs = make_vector_env(cfg.env.id, cfg.env.num_envs, seed=cfg.seed, vector=cfg.env.vector)
    gae_cfg = GAEConfig.from_config(cfg)
    collector = RolloutCollector(
        envs, module.actor, module.critic_r, module.critic_c, module.normalizer,
        cfg.steps_per_epoch // cfg.env.num_envs, gae_cfg, cfg.seed,
    )
    optimizer = module.configure_optimizers()
    times = []
    for epoch in range(cfg.total_steps // cfg.steps_per_epoch):
        start = time.perf_counter()
        rollout = collector.collect(epoch)
        s = rollout.stats
        ep_cost = s.ep_cost_sum / s.episodes if s.episodes else 0.0
        policy_update(module.actor, rollout.batch, module.precond, module.blender, module.guard,
                      ep_cost, cfg.cost_limit, module.update_cfg, module.shuffle)
        critics = [(module.critic_r, rollout.batch.ret_r), (module.critic_c, rollout.batch.ret_c)]
        critic_update(critics, rollout.batch.obs, optimizer, module.update_cfg, module.shuffle)
        times.append(time.perf_counter() - start)
    envs.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["SafetyPointGoal1-v0", "SafetyPointButton1-v0"])
    parser.add_argument("--num-envs", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--vector", default="async")
    parser.add_argument("--algorithm", default="ppo_lag")
    parser.add_argument("--steps-per-epoch", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per run (the first is dropped)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="extra key=value config overrides")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, threads per process: 1 (config default), algorithm {args.algorithm}")
    print("| env | envs | raw steps/s | fit steps/s | fit/raw | update s/epoch | plain epoch s "
          "| fit epoch s | overhead | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for env_id in args.envs:
        for n in args.num_envs:
            vector = "sync" if n == 1 else args.vector
            overrides = [
                f"algorithm={args.algorithm}", f"env.id={env_id}", f"env.num_envs={n}",
                f"env.vector={vector}", f"steps_per_epoch={args.steps_per_epoch}",
                f"total_steps={args.steps_per_epoch * args.epochs}", f"seed={args.seed}",
                "logger.wandb.mode=disabled", f"checkpoint.every_n_epochs={args.epochs}",
                *args.overrides,
            ]
            raw = steps_per_second(env_id, n, vector, args.steps_per_epoch, args.seed)
            with tempfile.TemporaryDirectory() as tmp:
                fit_t, update_s = fit_epochs(overrides, Path(tmp))
            plain_t = plain_epochs(overrides)
            # The first epoch pays env start-up and resets in both; time the rest.
            fit_epoch, plain_epoch = float(np.mean(fit_t[1:])), float(np.mean(plain_t[1:]))
            fit_rate = args.steps_per_epoch / fit_epoch
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"| {env_id} | {n} | {raw:,.0f} | {fit_rate:,.0f} | {fit_rate / raw:.2f} "
                  f"| {np.mean(update_s[1:]):.2f} | {plain_epoch:.2f} | {fit_epoch:.2f} "
                  f"| {fit_epoch / plain_epoch - 1:+.1%} | {rss:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
