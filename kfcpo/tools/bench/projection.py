"""`kfcpo bench projection`: KFCPO's conflict projection in the Euclidean vs the Fisher
inner product, on real rollouts.

For every minibatch of a rollout, K-FAC directions are computed as in `kfcpo.update`, and
each variant of the `margin` blender (the kfcpo preset's parameters, `inner` swapped)
proposes its step at a chosen episode cost Jc. Each step is applied, the reward and cost
surrogates of the *whole* rollout and the KL are measured, and the step is undone: nothing
is committed, so both variants see the same policy and directions. Reported per variant
and Jc: how often the directions conflict (the projection fires), how often the step
raises the cost surrogate, and the mean surrogate changes per step.

    kfcpo bench projection [--checkpoint runs/.../last.ckpt] [--env SafetyPointGoal1-v0]
        [--steps 4000] [--seeds 0 1 2] [--jc 0.7 2.0]

Without --checkpoint each seed starts from a fresh policy; with it, from the checkpoint's
policy, critics and normalizer (its env and config), one rollout per seed.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

import torch
from omegaconf import OmegaConf

from kfcpo.blender.base import Directions
from kfcpo.blender.margin import INNER_PRODUCTS, MarginBlender
from kfcpo.config import ConfigError, load_config
from kfcpo.data.batch import Batch
from kfcpo.data.rollout import GAEConfig, RolloutCollector
from kfcpo.envs import make_vector_env
from kfcpo.flat import flat_grad, params_of
from kfcpo.guard.base import PolicyMover, mean_kl
from kfcpo.module import SafeRLModule
from kfcpo.registry import split_section
from kfcpo.run.checkpoint import CHECKPOINT_KEY, read_checkpoint, saved_config
from kfcpo.tools.commands import PROJECTION_MINIBATCH
from kfcpo.update import minibatches


def build_module(args: argparse.Namespace, seed: int) -> SafeRLModule:
    """A kfcpo module: fresh on --env, or the --checkpoint's (a run of the margin blender)."""
    torch.manual_seed(seed)
    if args.checkpoint is None:
        overrides = ["algorithm=kfcpo", f"env.id={args.env}", "logger.wandb.mode=disabled"]
        return SafeRLModule(load_config(None, overrides)[0])
    ckpt = read_checkpoint(args.checkpoint, key="--checkpoint")
    cfg = saved_config(ckpt)
    if cfg.blender.name != "margin":
        raise ConfigError(f"--checkpoint: '{args.checkpoint}' was trained with blender '{cfg.blender.name}'; "
                          "expected a run of the margin blender (e.g. the kfcpo preset)")
    module = SafeRLModule(cfg)
    module.load_state_dict(ckpt["state_dict"])
    module.normalizer.load_state_dict(ckpt[CHECKPOINT_KEY]["normalizer"])
    return module


def collect(module: SafeRLModule, steps: int, num_envs: int, seed: int) -> Batch:
    """One rollout of `steps` env steps with the module's policy, on sync envs."""
    cfg = module.cfg
    envs = make_vector_env(cfg.env.id, num_envs, seed=seed, vector="sync")
    gae_cfg = GAEConfig.from_config(cfg)
    collector = RolloutCollector(envs, module.actor, module.critics, module.normalizer,
                                 steps // num_envs, gae_cfg, seed)
    try:
        return collector.collect(0).batch
    finally:
        envs.close()


def compare(
    module: SafeRLModule, batch: Batch, jc_units: list[float], seed: int,
    minibatch_size: int = PROJECTION_MINIBATCH,
) -> dict[tuple, list]:
    """Per (inner, Jc / d): a row (projected, cost raised, dL_c, dL_r, KL) per minibatch of
    `minibatch_size` states (0 = the whole rollout)."""
    actor, precond, trained = module.actor, module.algorithm.precond, module.algorithm.blender
    params, mover = params_of(actor), PolicyMover(actor, precond)
    _, params_cfg = split_section(OmegaConf.to_container(module.cfg.blender))
    blenders = {inner: MarginBlender(**{**params_cfg, "inner": inner}) for inner in INNER_PRODUCTS}
    cost_limit = float(module.cfg.cost_limit)
    rollout_policy = mover.old_distribution(batch.obs)
    with torch.no_grad():
        before = [float(v) for v in trained.surrogates(actor, batch)]
    rows: dict[tuple, list] = defaultdict(list)
    for idx in minibatches(batch, minibatch_size, torch.Generator().manual_seed(seed)):
        mb = batch.select(idx)
        precond.update(mb.obs)
        loss_r, loss_c = trained.surrogates(actor, mb)
        g_r, g_c = flat_grad(loss_r, params, retain_graph=True), flat_grad(loss_c, params)
        x_r, x_c = precond.solve(g_r), precond.solve(g_c)
        for inner, blender in blenders.items():
            for units in jc_units:
                step = blender.blend(Directions(g_r, x_r, g_c, x_c, units * cost_limit, cost_limit), precond)
                projected = blender.metrics()["projected_frac"]
                snap = mover.snapshot()
                mover.apply(step)
                with torch.no_grad():
                    after = [float(v) for v in trained.surrogates(actor, batch)]
                kl = mean_kl(actor, batch.obs, rollout_policy)
                mover.restore(snap)
                d_r, d_c = after[0] - before[0], after[1] - before[1]
                rows[(inner, units)].append((projected, float(d_c > 0), d_c, d_r, kl))
    return rows


def run(args: argparse.Namespace) -> int:
    """`kfcpo bench projection`: every seed's rollout measured, then one table."""
    if args.steps % args.num_envs:
        raise ConfigError(f"--steps: {args.steps} is not a multiple of --num-envs {args.num_envs}; "
                          "expected a multiple of it")
    torch.set_num_threads(1)
    rows: dict[tuple, list] = defaultdict(list)
    for seed in args.seeds:
        module = build_module(args, seed)
        batch = collect(module, args.steps, args.num_envs, seed)
        for key, values in compare(module, batch, args.jc, seed, args.minibatch_size).items():
            rows[key].extend(values)
    source = args.checkpoint or f"fresh policies on {args.env}"
    print(f"{source}; seeds {args.seeds}; {args.steps} steps each; whole-rollout surrogate change "
          "per proposed step (nothing committed)\n")
    print("| inner | Jc / d | minibatches | projected | cost raised | mean dL_c | mean dL_r | mean KL |")
    print("|---|---|---|---|---|---|---|---|")
    mean = statistics.fmean
    for (inner, units), values in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cols = list(zip(*values, strict=True))
        print(f"| {inner} | {units:g} | {len(values)} | {mean(cols[0]):.2f} | {mean(cols[1]):.2f} | "
              f"{mean(cols[2]):+.2e} | {mean(cols[3]):+.2e} | {mean(cols[4]):.4f} |")
    return 0
