"""The tools' one-line error contract through the real CLI: bad input to `kfcpo
benchmark`, `plot`, `ablate` and `bench ...` is one `kfcpo: error:` line naming what is
wrong and what is valid, exit code 2, and nothing is created."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from helpers import ERROR_PREFIX

import kfcpo.envs  # noqa: F401  imported here so the envs' import-time notices are not captured
from kfcpo.cli import EXIT_CONFIG, main

SPEC = {
    "env": "SafetyPointCircle1-v0", "total_steps": 400, "steps_per_epoch": 200, "num_envs": 1,
    "seeds": [0],
    "variants": {
        "base": {"algorithm": "ppo_lag"},
        "small": {"algorithm": "ppo_lag", "overrides": ["update_iters=1"]},
    },
    "studies": {"Small updates": ["base", "small"]},
}
BENCHMARK = ["benchmark", "--algorithms", "ppo_lag", "--total-steps", "400"]


def refused(
    argv: list[str], where: Path, cli_error: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> str:
    """Run the CLI in `where` (relative default folders land there); assert exit 2 and
    that no file or folder appeared; the error line without its prefix."""
    monkeypatch.chdir(where)
    before = sorted(where.rglob("*"))
    assert main(argv) == EXIT_CONFIG
    line = cli_error()
    assert sorted(where.rglob("*")) == before, "an input error created files"
    return line.removeprefix(ERROR_PREFIX)


def write_spec(folder: Path, **changes: object) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **changes}))
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--algorithms", "nope", "--total-steps", "400"],
         "algorithm: unknown algorithm 'nope'; valid: cpo, "),
        ([*BENCHMARK[1:], "--envs", "Nope-v0"], "env.id: unknown env id 'Nope-v0'"),
        (["--algorithms", "ppo_lag", "--total-steps", "0"],
         "benchmark: argument --total-steps: expected an integer >= 1, got '0'; "
         "see 'kfcpo benchmark --help'"),
        (["--total-steps", "400"], "benchmark: the following arguments are required: --algorithms"),
        ([*BENCHMARK[1:], "--config", "nope.yaml"],
         "--config: no such file 'nope.yaml'; expected a YAML file"),
        ([*BENCHMARK[1:], "--jobs", "0"], "argument --jobs/-j: expected an integer >= 1, got '0'"),
        ([*BENCHMARK[1:], "resume=x"], "override 'resume=x': kfcpo benchmark sets resume itself"),
        ([*BENCHMARK[1:], "--seeds", "-1"],
         "argument --seeds: expected an integer in [0, 2147483647], got '-1'"),
        ([*BENCHMARK[1:], "--seeds", "0", "1", "0"], "--seeds: 0 given more than once; name each once"),
        (["--algorithms", "ppo_lag", "cpo", "ppo_lag", "--total-steps", "400"],
         "--algorithms: ppo_lag given more than once"),
        ([*BENCHMARK[1:], "--bogus"],
         "benchmark: unrecognized arguments: --bogus; see 'kfcpo benchmark --help'"),
    ],
)
def test_benchmark_refuses_bad_input(args: list[str], expected: str, tmp_path: Path, cli_error,
                                     monkeypatch) -> None:
    assert expected in refused(["benchmark", *args], tmp_path, cli_error, monkeypatch)


def test_reports_without_runs_write_nothing(tmp_path: Path, cli_error, monkeypatch) -> None:
    """--report over a runs folder with no complete run (missing, or a run cut short)
    refuses, so a table of dashes never replaces a real one."""
    (tmp_path / "runs" / "SafetyPointGoal1-v0" / "ppo_lag" / "seed0").mkdir(parents=True)
    line = refused([*BENCHMARK, "--report", "--runs-dir", "runs", "--out", "out"], tmp_path, cli_error,
                   monkeypatch)
    assert line.startswith("--report: none of the grid's 3 runs is complete in 'runs', so nothing is written")
    spec = write_spec(tmp_path)
    line = refused(["ablate", str(spec), "--report", "--runs-dir", "nope", "--out", "out"], tmp_path,
                   cli_error, monkeypatch)
    assert line.startswith("--report: no variant has a complete run in 'nope', so nothing is written")


def test_benchmark_refuses_an_output_folder_under_a_file(tmp_path: Path, cli_error, monkeypatch) -> None:
    (tmp_path / "afile").write_text("x")
    line = refused([*BENCHMARK, "--out", "afile/out"], tmp_path, cli_error, monkeypatch)
    assert line.startswith("--out: cannot create 'afile/out': 'afile' is a file, not a folder; expected ")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nope", "-o", "x.png"],
         "RUN_DIR: 'nope' is not a run folder (no metrics.csv in or below it); expected a run folder "),
        ([".", "-o", "x.txt"],
         "--out: 'x.txt' is not an image file name; expected an image file path ending in one of .png, "),
        (["nope", "-o", "x.png", "--band", "wide"], "argument --band: invalid choice: 'wide' (choose from "),
        (["nope", "-o", "x.png", "--cost-limit", "inf"], "argument --cost-limit: expected a finite number"),
        (["nope"], "plot: the following arguments are required: -o/--out"),
    ],
)
def test_plot_refuses_bad_input(args: list[str], expected: str, tmp_path: Path, cli_error,
                                monkeypatch) -> None:
    assert expected in refused(["plot", *args], tmp_path, cli_error, monkeypatch)


@pytest.mark.slow
def test_plot_names_a_missing_group_key(tiny_run: Path, tmp_path: Path, cli_error, monkeypatch) -> None:
    line = refused(["plot", str(tiny_run), "-o", "x.png", "--group-by", "no.such"], tmp_path, cli_error,
                   monkeypatch)
    assert line == ("a run's config.yaml has no key 'no.such'; "
                    "--group-by takes dotted config keys, e.g. algorithm or env.id")


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "nope.yaml",
         "STUDY: '{d}/nope.yaml' does not exist; expected an ablation study YAML file"),
        (lambda d: d, "STUDY: '{d}' is a folder; expected an ablation study YAML file"),
        (lambda d: write_spec(d, seeds=[]),
         "seeds: got []; expected a non-empty list of distinct seeds, each an integer in [0, 2147483647]"),
        (lambda d: write_spec(d, seeds=[0, -1]), "seeds: got [0, -1]; expected a non-empty list of distinct"),
        (lambda d: write_spec(d, seeds=[1, 1]), "seeds: got [1, 1]; expected a non-empty list of distinct"),
        (lambda d: write_spec(d, budget=1), "budget: got 1; expected only the keys env, total_steps, "),
        (lambda d: write_spec(d, studies={"T": ["base", "nope"]}),
         "studies.T: unknown variant(s) nope; valid: base, small"),
        (lambda d: write_spec(d, variants={"v": {"overrides": ["x=1"]}}),
         "variants.v: got {'overrides': ['x=1']}; expected a mapping with an algorithm preset"),
        (lambda d: write_spec(d, variants={"base": {"algorithm": "nope"}}, studies={"T": ["base"]}),
         "algorithm: unknown algorithm 'nope'; valid: "),
        # The last variant's bad override stops the study before the first variant runs.
        (lambda d: write_spec(d, variants={**SPEC["variants"], "bad": {"algorithm": "ppo_lag",
                                                                        "overrides": ["no_such_key=1"]}}),
         "no_such_key"),
    ],
)
def test_ablate_refuses_bad_specs(make: Callable[[Path], Path], expected: str, tmp_path: Path, cli_error,
                                  monkeypatch) -> None:
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    spec = make(spec_dir)
    line = refused(["ablate", str(spec), "--runs-dir", "runs"], tmp_path, cli_error, monkeypatch)
    assert expected.replace("{d}", str(spec_dir)) in line


def test_ablate_refuses_an_unknown_only(tmp_path: Path, cli_error, monkeypatch) -> None:
    spec = write_spec(tmp_path)
    line = refused(["ablate", str(spec), "--only", "nope"], tmp_path, cli_error, monkeypatch)
    assert line == "--only: unknown variant(s) nope; valid: base, small"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["throughput", "--layouts", "threads", "--envs", "SafetyPointCircle1-v0", "--num-envs", "1"],
         "--layouts: 'threads' is not a layout; expected sync, async:W, async:n or async:0"),
        (["throughput", "--epochs", "1"], "--epochs: got 1; expected an integer >= 2"),
        (["throughput", "--num-envs", "3", "--steps-per-epoch", "400"],
         "--steps-per-epoch: 400 is not a multiple of --num-envs 3"),
        (["throughput", "--envs", "Nope-v0", "--num-envs", "1", "--layouts", "sync"],
         "env.id: unknown env id 'Nope-v0'"),
        (["throughput", "--out", "."], "--out: '.' is a folder; expected a markdown file path"),
        (["presets", "--env", "Nope-v0"], "env.id: unknown env id 'Nope-v0'"),
        (["presets", "--extra", "nope x=1"], "algorithm: unknown algorithm 'nope'; valid: "),
        (["presets", "--repeats", "0"],
         "bench presets: argument --repeats: expected an integer >= 1, got '0'"),
        (["preconditioner", "--stat", "mean"],
         "argument --stat: invalid choice: 'mean' (choose from 'median', 'min')"),
        (["preconditioner", "--sizes", "0"], "argument --sizes: expected an integer >= 1, got '0'"),
        (["envs", "--tasks", "Nope-v0"], "--tasks: unknown env id 'Nope-v0'"),
        (["projection", "--checkpoint", "nope.ckpt"], "--checkpoint: no such checkpoint file 'nope.ckpt'"),
        (["projection", "--jc", "-1"], "argument --jc: expected a number >= 0, got '-1'"),
        (["projection", "--steps", "5", "--num-envs", "2"], "--steps: 5 is not a multiple of --num-envs 2"),
        (["nope"], "bench: argument MEASUREMENT: invalid choice: 'nope' (choose from 'throughput', "),
        (["envs", "--seed", "-2"], "bench envs: argument --seed: expected an integer in [0, 2147483647]"),
        (["presets", "--bogus", "1"],
         "bench presets: unrecognized arguments: --bogus 1; see 'kfcpo bench presets --help'"),
    ],
)
def test_bench_refuses_bad_input(args: list[str], expected: str, tmp_path: Path, cli_error,
                                 monkeypatch) -> None:
    assert expected in refused(["bench", *args], tmp_path, cli_error, monkeypatch)


@pytest.mark.slow
def test_projection_refuses_a_run_without_the_margin_blender(tiny_run: Path, tmp_path: Path, cli_error,
                                                             monkeypatch) -> None:
    checkpoint = tiny_run / "checkpoints" / "last.ckpt"
    line = refused(["bench", "projection", "--checkpoint", str(checkpoint)], tmp_path, cli_error, monkeypatch)
    assert line == (f"--checkpoint: '{checkpoint}' was trained with blender 'lagrangian'; "
                    "expected a run of the margin blender (e.g. the kfcpo preset)")


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["benchmark", "--algorithms", "nope", "--total-steps", "400"],
        ["plot", "nope", "-o", "x.png"],
        ["ablate", "nope.yaml"],
        ["bench", "throughput", "--layouts", "threads"],
    ],
)
def test_a_fresh_process_prints_only_the_error_line(args: list[str], tmp_path: Path) -> None:
    # A fresh interpreter: import-time notices (gymnasium-robotics prints one) must not
    # add lines to the error.
    proc = subprocess.run([sys.executable, "-m", "kfcpo.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == EXIT_CONFIG
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(ERROR_PREFIX), proc.stderr
    assert not any(tmp_path.iterdir())
