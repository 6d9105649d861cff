"""The command lines of kfcpo's tools: `kfcpo benchmark`, `kfcpo plot`, `kfcpo ablate` and
`kfcpo bench throughput|presets|preconditioner|envs|projection`.

Light on purpose: `kfcpo --help` and `kfcpo fit` build these parsers too, so this module
imports no torch, envs or matplotlib; each command's module is imported only when it runs
(`run(args) -> exit code`). Flag values are checked here where a type can say it (one-line
errors through the CLI's parser), the rest in each command's `check` before it starts.
"""

from __future__ import annotations

import argparse
import importlib
import math
from collections.abc import Callable, Sequence

from kfcpo.seeding import SEED_VALID, is_seed

Handler = Callable[[argparse.Namespace], int]

# Commands whose key=value words may stand anywhere on the line (between options too),
# not only at the end: `nargs="+"` options would otherwise swallow them.
OVERRIDES_ANYWHERE = ("benchmark",)

BENCHMARK_ENVS = ("SafetyPointGoal1-v0",)
BENCHMARK_SEEDS = (0, 1, 2)
BENCHMARK_OUT, BENCHMARK_RUNS_DIR = "docs/results", "runs/benchmark"
ABLATE_RUNS_DIR = "runs/ablations"
PLOT_BANDS = ("minmax", "std")
THROUGHPUT_ENVS = ("SafetyPointGoal1-v0", "SafetyPointButton1-v0", "SafetyPointCircle1-v0")
THROUGHPUT_NUM_ENVS = (1, 2, 4, 8)
THROUGHPUT_LAYOUTS = ("sync", "async:2", "async:n")
THROUGHPUT_ALGORITHMS = ("kfcpo", "cpo")
THROUGHPUT_STEPS, THROUGHPUT_EPOCHS, THROUGHPUT_ROUNDS = 8000, 3, 2
# Swaps worth a row beside the presets: CPO with K-FAC curvature (what K-FAC alone does
# to CPO's update time) and the paper's third experiment, KFCPO with CG curvature.
PRESETS_EXTRA = ("cpo preconditioner.name=kfac", "kfcpo preconditioner.name=cg")
PRESETS_ENV, PRESETS_STEPS, PRESETS_NUM_ENVS, PRESETS_REPEATS = "SafetyPointButton1-v0", 20000, 4, 3
# KFCPO's minibatch (one K-FAC update per minibatch), then full-batch sizes.
PRECOND_SIZES = (128, 2000, 20000)
PRECOND_STATS = ("median", "min")  # summaries over repeats: see kfcpo.tools.bench.preconditioner.STATS
PRECOND_REPEATS = 5
ENVS_TASKS = ("SafetyPointGoal1-v0", "SafetyPointButton1-v0")
ENVS_NUM_ENVS, ENVS_STEPS = (1, 2, 4), 4000
PROJECTION_ENV, PROJECTION_STEPS, PROJECTION_NUM_ENVS = "SafetyPointGoal1-v0", 4000, 2
PROJECTION_MINIBATCH = 128  # the paper's minibatch
PROJECTION_SEEDS, PROJECTION_JC = (0, 1, 2), (0.7, 2.0)
DEFAULT = " (default: %(default)s)"  # argparse fills in the default of each flag


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got '{text}'")
        return value

    return parse


def seed_value(text: str) -> int:
    """An argparse type: a seed (``kfcpo.seeding.SEED_VALID``)."""
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if not is_seed(value):
        raise argparse.ArgumentTypeError(f"expected {SEED_VALID}, got '{text}'")
    return value


def finite_float(text: str) -> float:
    """An argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got '{text}'")
    return value


def _handler(module: str) -> Handler:
    """`kfcpo.tools.<module>.run`, imported when the command runs, not when parsing."""

    def handle(args: argparse.Namespace) -> int:
        return importlib.import_module(f"kfcpo.tools.{module}").run(args)

    return handle


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's commands by name ({} for a parser without commands)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _value_options(parser: argparse.ArgumentParser, command: str) -> set[str]:
    """The option strings of `command`'s parser that take a value."""
    sub = subcommands(parser).get(command)
    return {s for a in sub._actions if a.nargs != 0 for s in a.option_strings} if sub else set()


def split_overrides(
    argv: Sequence[str], parser: argparse.ArgumentParser
) -> tuple[list[str], list[str] | None]:
    """For a command in OVERRIDES_ANYWHERE: the words without its key=value words, and
    those words; for any other command: the words unchanged, and None. A word right
    after an option that takes a value is that value (`--out a=b` is a folder)."""
    words = list(argv)
    command = next((i for i, w in enumerate(words) if not w.startswith("-")), None)
    if command is None or words[command] not in OVERRIDES_ANYWHERE:
        return words, None
    takes_value = _value_options(parser, words[command])
    rest, overrides = words[: command + 1], []
    for before, word in zip(words[command:], words[command + 1:], strict=False):
        is_override = "=" in word and not word.startswith("-") and before not in takes_value
        (overrides if is_override else rest).append(word)
    return rest, overrides


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark", help="run a grid of algorithms x envs x seeds; a results table and curves",
        description="Run algorithms x envs x seeds at a budget (complete runs skipped, interrupted ones "
                    "resumed), then write OUT/results.md and OUT/curves.png.",
        epilog="key=value words, anywhere on the line, are config overrides for every run.",
    )
    p.add_argument("--algorithms", nargs="+", required=True, help="algorithm presets")
    p.add_argument("--envs", nargs="+", default=list(BENCHMARK_ENVS), help="env ids" + DEFAULT)
    p.add_argument("--seeds", nargs="+", type=seed_value, default=list(BENCHMARK_SEEDS),
                   help="seeds" + DEFAULT)
    p.add_argument("--total-steps", type=at_least(1), required=True, help="env steps per run (the budget)")
    p.add_argument("--steps-per-epoch", type=at_least(1), help="env steps per epoch (default: config's)")
    p.add_argument("--num-envs", type=at_least(1), help="envs per run (default: config's)")
    p.add_argument("--jobs", "-j", type=at_least(1), help="runs at once (default: cores // cores per run)")
    p.add_argument("--config", "-c", help="experiment YAML under every run (default: presets only)")
    p.add_argument("--out", default=BENCHMARK_OUT, help="folder for results.md and curves.png" + DEFAULT)
    p.add_argument("--runs-dir", default=BENCHMARK_RUNS_DIR, help="folder of the run folders" + DEFAULT)
    p.add_argument("--report", action="store_true",
                   help="start no run; table and curves from the runs already complete")
    p.set_defaults(handler=_handler("benchmark"), overrides=[])


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot", help="return and cost curves of runs, grouped by algorithm per env",
        description="Curves of runs: per env, one line per group (mean over seeds) with a band across seeds.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders or folders above them")
    p.add_argument("-o", "--out", required=True, help="the image to write (.png, .pdf or .svg)")
    p.add_argument("--cost-limit", type=finite_float, help="dashed line here (default: the runs' cost_limit)")
    p.add_argument("--band", choices=PLOT_BANDS, default="minmax", help="band across seeds (default minmax)")
    p.add_argument("--smooth", type=int, default=1, metavar="EPOCHS",
                   help="each run's curve as its trailing mean over this many epochs (default 1: raw)")
    p.add_argument("--group-by", nargs="+", default=["algorithm"], metavar="KEY",
                   help="dotted config keys whose values name a group (default: algorithm)")
    p.add_argument("--title", help="figure title")
    p.set_defaults(handler=_handler("plot"))


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate", help="run named variants (a preset plus overrides) x seeds; one table per study",
        description="Run the variants of an ablation spec through the benchmark grid, then write "
                    "OUT/ablations.md and one figure per study. Spec format: kfcpo.tools.ablate_spec.",
    )
    p.add_argument("spec", metavar="STUDY",
                   help="the ablation spec (YAML), e.g. docs/results/ablations/circle.yaml")
    p.add_argument("--out", help="folder for ablations.md and curves (default: the spec's folder)")
    p.add_argument("--runs-dir", default=ABLATE_RUNS_DIR, help="folder of the run folders" + DEFAULT)
    p.add_argument("--report", action="store_true", help="start no run; tables from complete runs")
    p.add_argument("--only", nargs="+", metavar="VARIANT",
                   help="run only these variants (tables use all complete runs)")
    p.set_defaults(handler=_handler("ablate"))


def _add_throughput(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("throughput", help="raw env, rollout and training rates per vector layout",
                         description="Rollout and training throughput of kfcpo fit against the raw env rate, "
                                     "layout by layout, in interleaved rounds.")
    p.add_argument("--envs", nargs="+", default=list(THROUGHPUT_ENVS), help="env ids" + DEFAULT)
    p.add_argument("--num-envs", nargs="+", type=at_least(1), default=list(THROUGHPUT_NUM_ENVS),
                   help="env counts" + DEFAULT)
    p.add_argument("--layouts", nargs="+", default=list(THROUGHPUT_LAYOUTS),
                   help="sync | async:W | async:n (one worker per env) | async:0 (one per core); "
                        "a +worker suffix (async:2+worker) fits with env.engine=worker")
    p.add_argument("--algorithms", nargs="+", default=list(THROUGHPUT_ALGORITHMS), help="presets" + DEFAULT)
    p.add_argument("--steps-per-epoch", type=at_least(1), default=THROUGHPUT_STEPS, help="per fit" + DEFAULT)
    p.add_argument("--epochs", type=int, default=THROUGHPUT_EPOCHS,
                   help="epochs per fit, >= 2; the first is not timed" + DEFAULT)
    p.add_argument("--raw-steps", type=at_least(0), default=0,
                   help="env steps per raw measurement (0: steps-per-epoch)")
    p.add_argument("--rounds", type=at_least(1), default=THROUGHPUT_ROUNDS,
                   help="passes over every row, interleaved" + DEFAULT)
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--out", default="", help="markdown file to write (also after each round)")
    p.add_argument("overrides", nargs="*", help="extra key=value config overrides for every fit")
    p.set_defaults(handler=_handler("bench.throughput"))


def _add_presets(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("presets", help="one epoch's update of every preset on the same rollout",
                         description="Update time per epoch of every algorithm preset on the same rollout, "
                                     "as ratios to kfcpo and to the rollout's own time.")
    p.add_argument("--env", default=PRESETS_ENV, help="env id" + DEFAULT)
    p.add_argument("--steps", type=at_least(1), default=PRESETS_STEPS, help="rollout length" + DEFAULT)
    p.add_argument("--num-envs", type=at_least(1), default=PRESETS_NUM_ENVS,
                   help="envs collecting the rollout" + DEFAULT)
    p.add_argument("--repeats", type=at_least(1), default=PRESETS_REPEATS)
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--threads", type=at_least(1), default=1, help="torch threads (training's default: 1)")
    p.add_argument("--extra", nargs="*", default=list(PRESETS_EXTRA),
                   help='more rows, each "algorithm key=value ...", e.g. "cpo preconditioner.name=kfac"')
    p.set_defaults(handler=_handler("bench.presets"))


def _add_preconditioner(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("preconditioner", help="curvature cost of identity, kfac and cg vs the gradients",
                         description="Cost of the curvature work per policy update, relative to the two "
                                     "surrogate gradients; K-FAC's G estimators compared.")
    p.add_argument("--repeats", type=at_least(1), default=PRECOND_REPEATS)
    p.add_argument("--sizes", type=at_least(1), nargs="+", default=list(PRECOND_SIZES), help="batch sizes")
    p.add_argument("--stat", choices=PRECOND_STATS, default=PRECOND_STATS[0], help="summary over repeats")
    p.set_defaults(handler=_handler("bench.preconditioner"))


def _add_envs(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("envs", help="raw random-action env rates, sync against async",
                         description="Random-action throughput of kfcpo's vector envs (env steps/s, resets "
                                     "included). KFCPO_STAR_SKYBOX=1 measures with the original star skybox.")
    p.add_argument("--steps", type=at_least(1), default=ENVS_STEPS, help="env steps per measurement")
    p.add_argument("--envs", type=at_least(1), nargs="+", default=list(ENVS_NUM_ENVS), help="env counts")
    p.add_argument("--tasks", nargs="+", default=list(ENVS_TASKS), help="env ids" + DEFAULT)
    p.add_argument("--seed", type=seed_value, default=0)
    p.set_defaults(handler=_handler("bench.envs"))


def _add_projection(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("projection", help="the margin blender's Euclidean vs Fisher projection on rollouts",
                         description="KFCPO's conflict projection in the Euclidean vs the Fisher inner "
                                     "product, on real rollouts; nothing is committed.")
    p.add_argument("--checkpoint", help="start from this kfcpo checkpoint's policy")
    p.add_argument("--env", default=PROJECTION_ENV, help="task (without --checkpoint)")
    p.add_argument("--steps", type=at_least(1), default=PROJECTION_STEPS, help="rollout length per seed")
    p.add_argument("--num-envs", type=at_least(1), default=PROJECTION_NUM_ENVS)
    p.add_argument("--minibatch-size", type=at_least(0), default=PROJECTION_MINIBATCH,
                   help="states per blended step (0 = the whole rollout)")
    p.add_argument("--seeds", type=seed_value, nargs="+", default=list(PROJECTION_SEEDS))
    p.add_argument("--jc", type=non_negative_float, nargs="+", default=list(PROJECTION_JC),
                   help="episode costs, in units of the cost limit, to blend at")
    p.set_defaults(handler=_handler("bench.projection"))


def add_tool_commands(sub: argparse._SubParsersAction) -> None:
    """Add `benchmark`, `plot`, `ablate` and `bench ...` to the CLI's subcommands."""
    _add_benchmark(sub)
    _add_plot(sub)
    _add_ablate(sub)
    bench = sub.add_parser("bench", help="timings and measurements on fixed workloads",
                           description="Measurements on fixed workloads, as markdown tables.")
    measurements = bench.add_subparsers(dest="measurement", required=True, metavar="MEASUREMENT")
    for add in (_add_throughput, _add_presets, _add_preconditioner, _add_envs, _add_projection):
        add(measurements)
