"""`kfcpo fit`, `kfcpo eval`, `kfcpo export`, `kfcpo registry`, `kfcpo envs`, `kfcpo --version`, and the
tools (`kfcpo benchmark`, `plot`, `ablate`, `bench ...`, declared in kfcpo.tools.commands):
the command line. Bad input, on the command line or found before any work starts, is one
line `kfcpo: error: ...` naming what is wrong and what is valid, exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from omegaconf import OmegaConf

from kfcpo.config import ConfigError, load_config
from kfcpo.registry import FAMILIES, Registry, RegistryError, default_roots
from kfcpo.seeding import EVAL_SEED_OFFSET
from kfcpo.tools.commands import add_tool_commands, seed_value, split_overrides, subcommands

EXIT_CONFIG = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a process its pipe closed on
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process stopped by Ctrl-C
PROG = "kfcpo"
TOP_OPTIONS = ("--help", "-h", "--version")
EVAL_EPISODES = 10  # `kfcpo eval`'s default: enough for a mean, quick on one core


class _Parser(argparse.ArgumentParser):
    """argparse with kfcpo's error contract: a bad command line (an unknown command or
    flag, a bad value, a missing argument) is a one-line ConfigError, which `main` prints
    like every other input error, instead of argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()  # e.g. "bench throughput"
        if not command and message.endswith("required: command"):
            raise ConfigError(f"a command is required, one of: {', '.join(subcommands(self))}; "
                              f"see '{PROG} --help'")
        raise ConfigError(f"{command}: {message}; see '{self.prog} --help'" if command
                          else f"{message}; see '{PROG} --help'")


class _Version(argparse.Action):
    """`--version`, worked out only when asked: a checkout's commit costs a git call."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the kfcpo version (and the git commit of a checkout) and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from kfcpo.version import describe

        print(describe())
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Safe RL on Lightning: KFCPO and baselines")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="train an agent", description="kfcpo fit --config FILE [key=value ...]")
    fit.add_argument("--config", "-c", help="experiment YAML (e.g. conf/button.yaml)")
    fit.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    fit.add_argument("overrides", nargs="*", help="key=value overrides, e.g. env.num_envs=4")
    ev = sub.add_parser("eval", help="evaluate a checkpoint (stats, optional video)",
                        description="kfcpo eval CHECKPOINT [--episodes N] [--video PATH] ...")
    ev.add_argument("checkpoint", help="a kfcpo checkpoint, e.g. runs/.../checkpoints/last.ckpt")
    ev.add_argument("--episodes", "-n", type=int, default=EVAL_EPISODES,
                    help=f"episodes to run (default {EVAL_EPISODES})")
    ev.add_argument("--video", help="record to this .mp4 or .gif (rendered headless)")
    ev.add_argument("--video-episodes", type=int, default=1, help="episodes to record (default 1)")
    ev.add_argument("--deterministic", action="store_true", help="act with the mean, not a sample")
    ev.add_argument("--seed", type=seed_value,
                    help=f"env and action seed (default: the run's seed + {EVAL_SEED_OFFSET})")
    ev.add_argument("--max-steps", type=int, help="cap steps per episode (default: the env's limit)")
    ev.add_argument("--camera", help="camera name (default: fixedfar on navigation tasks)")
    ev.add_argument("--wandb", action="store_true", help="log stats and video to wandb if the run used it")
    ex = sub.add_parser(
        "export", help="write a standalone policy (TorchScript or ONNX) for use without kfcpo",
        description="kfcpo export CHECKPOINT -o FILE [--format torchscript|onnx] [--stochastic]",
    )
    ex.add_argument("checkpoint", help="a kfcpo checkpoint, e.g. runs/.../checkpoints/last.ckpt")
    ex.add_argument("--output", "-o", required=True, help="the file to write, e.g. policy.pt or policy.onnx")
    ex.add_argument("--format", "-f", choices=("torchscript", "onnx"),
                    help="default: onnx for an -o ending in .onnx, torchscript otherwise")
    ex.add_argument("--stochastic", action="store_true",
                    help="sample the action (mean + std * noise) instead of the mean")
    envs = sub.add_parser("envs", help="list the Safety Gymnasium env ids", description="kfcpo envs [TEXT]")
    envs.add_argument("text", nargs="?", help="only the ids containing TEXT (any case), e.g. PointGoal")
    reg = sub.add_parser("registry", help="list the component registry")
    reg.add_argument("family", nargs="?", choices=FAMILIES, help="only this family")
    add_tool_commands(sub)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (default: sys.argv) as a Namespace; ConfigError (one line) if it
    is not a valid one. `kfcpo benchmark` takes key=value overrides anywhere on the line."""
    parser = _parser()
    words, overrides = split_overrides(sys.argv[1:] if argv is None else argv, parser)
    if words and words[0].startswith("-") and words[0] not in TOP_OPTIONS:
        # argparse would complain that the command is missing, not about the option.
        raise ConfigError(f"unrecognized option {words[0]} before the command; valid: "
                          f"{', '.join(TOP_OPTIONS)} or a command; see '{PROG} --help'")
    args, unknown = parser.parse_known_args(words)
    if unknown:  # argparse would report them from the top parser, naming no command
        command = " ".join(w for w in (args.command, getattr(args, "measurement", None)) if w)
        raise ConfigError(f"{command}: unrecognized arguments: {' '.join(unknown)}; "
                          f"see '{PROG} {command} --help'")
    if overrides is not None:
        args.overrides = overrides
    return args


def _print_registry(family: str | None) -> None:
    registry = Registry(default_roots())
    for fam in [family] if family else FAMILIES:
        print(f"{fam}:")
        for name in registry.names(fam):
            entry = registry.get(fam, name)
            print(f"  {name:<14} {entry.description}")
            if entry.params:
                defaults = ", ".join(f"{k}={v}" for k, v in entry.params.items())
                print(f"  {'':<14} defaults: {defaults}")
            if entry.config:
                parts = [
                    f"{k}={v['name']}" for k, v in entry.config.items() if isinstance(v, dict) and "name" in v
                ]
                print(f"  {'':<14} composition: {', '.join(parts)}")
            if entry.traits:
                print(f"  {'':<14} traits: {', '.join(entry.traits)}")
            for rule in entry.excludes:
                print(f"  {'':<14} not with: {' + '.join(rule.traits)} ({rule.why})")


def _print_env_ids(text: str | None) -> None:
    from kfcpo.envs import env_ids  # the envs only when listing them
    from kfcpo.envs.ids import EXAMPLE_IDS

    known = env_ids()
    ids = [i for i in known if text is None or text.lower() in i.lower()]
    if not ids:
        raise ConfigError(f"envs: no env id contains {text!r}; {len(known)} are registered, e.g. "
                          f"{', '.join(EXAMPLE_IDS)} (kfcpo envs lists them all)")
    print("\n".join(ids))


def _export(args: argparse.Namespace) -> int:
    from kfcpo.export import export  # torch and the envs only when exporting

    fmt = args.format or ("onnx" if args.output.lower().endswith(".onnx") else "torchscript")
    out = export(args.checkpoint, args.output, fmt, stochastic=args.stochastic)
    action = "sampled" if args.stochastic else "mean"
    print(f"exported {args.checkpoint} to {out} ({fmt}, {action} action; raw float64 observations in)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code (2: bad input, reported as one line on stderr)."""
    try:
        args = parse_args(argv)
        if hasattr(args, "handler"):  # the tools: each imports its own module when it runs
            return args.handler(args)
        if args.command == "registry":
            _print_registry(args.family)
            return 0
        if args.command == "envs":
            _print_env_ids(args.text)
            return 0
        if args.command == "eval":
            from kfcpo.evaluate import evaluate  # torch, envs and renderers only when evaluating

            evaluate(
                args.checkpoint, args.episodes, video=args.video, video_episodes=args.video_episodes,
                deterministic=args.deterministic, seed=args.seed, max_steps=args.max_steps,
                camera=args.camera, wandb=args.wandb,
            )
            return 0
        if args.command == "export":
            return _export(args)
        cfg, registry = load_config(args.config, args.overrides)
        if args.print_config:
            print(OmegaConf.to_yaml(cfg), end="")
            return 0
        from lightning.pytorch.utilities import rank_zero_only

        from kfcpo.train import fit  # heavy imports only when training

        out_dir = fit(cfg, registry)  # the registry it was validated with builds the run
        rank_zero_only(print)(f"run folder: {out_dir}")
        return 0
    except (ConfigError, RegistryError) as err:
        print(f"kfcpo: error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        # Ctrl-C while starting up or in a tool: the user's own stop, not a crash to debug.
        # (Lightning handles it itself during training.)
        print("kfcpo: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`kfcpo envs | head`): not an error of kfcpo's. Point stdout
        # at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
