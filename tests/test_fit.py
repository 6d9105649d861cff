"""`kfcpo fit` end to end on a real Safety Gymnasium task with a real Lightning Trainer."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from kfcpo.cli import main
from kfcpo.config import load_config
from kfcpo.module import SafeRLModule
from kfcpo.train import build_trainer

ROOT = Path(__file__).resolve().parents[1]
GOAL = str(ROOT / "conf" / "goal.yaml")
TINY = [
    "steps_per_epoch=500",
    "env.num_envs=1",
    "env.vector=sync",
    "update_iters=2",
    "model.critic_iters=1",
    "logger.wandb.mode=disabled",
]


OUT_DIR_VALID = "expected a folder path (new, empty, or the run to continue with resume=)"
RESUME_VALID = "expected a checkpoint file or a run folder holding checkpoints/*.ckpt"


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_fit_writes_metrics_and_checkpoints_then_resumes(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["fit", "--config", GOAL, *TINY, "total_steps=1000", f"out_dir={run}"]) == 0
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert [float(r["time/env_steps"]) for r in rows] == [500.0, 1000.0]
    for key in ("episode/return", "episode/cost", "episode/length", "policy/kl", "time/steps_per_s",
                "time/update_s"):
        assert all(r[key] != "" for r in rows), key
    # PointGoal1 episodes last 1000 steps: none finished in epoch 0, so no made-up 0 is logged.
    assert [float(r["episode/count"]) for r in rows] == [0.0, 1.0]
    assert math.isnan(float(rows[0]["episode/return"])) and math.isnan(float(rows[0]["episode/cost"]))
    assert float(rows[1]["episode/length"]) == 1000.0 and math.isfinite(float(rows[1]["episode/return"]))
    assert float(rows[-1]["policy/kl"]) > 0  # the policy moved
    assert (run / "config.yaml").is_file()
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()
    # One update is one Lightning step, counted through the optimizer wrapper's public
    # step (the critics' minibatch steps are not): the log's step and the checkpoint's.
    assert [r["step"] for r in rows] == ["0", "1"]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2

    resumed = tmp_path / "resumed"
    overrides = [*TINY, "total_steps=1500", f"out_dir={resumed}", f"resume={last}"]
    assert main(["fit", "--config", GOAL, *overrides]) == 0
    rows = read_metrics(resumed)
    assert [r["epoch"] for r in rows] == ["2"]
    assert float(rows[0]["time/env_steps"]) == 1500.0  # counters continue from the checkpoint
    ckpt = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["kfcpo"]["updates"] == 3


def test_a_new_run_never_writes_over_a_finished_one(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["fit", "--config", GOAL, *TINY, "total_steps=500", f"out_dir={run}"]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["fit", "--config", GOAL, *TINY, "total_steps=500", "seed=7", f"out_dir={run}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"kfcpo: error: out_dir: '{run}' already holds a run (metrics.csv, checkpoints); "
                   f"continue it with resume={run}, or give a new out_dir"]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


# ------------------------------------------------- bad paths: one line, exit 2, nothing made
@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run (config.yaml, metrics.csv, checkpoints/) the refusals must not touch."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["fit", "--config", GOAL, *TINY, "total_steps=500", f"out_dir={run}"]) == 0
    return run


def snapshot(*roots: Path) -> dict[Path, bytes | None]:
    """Every path under `roots` with its bytes (None for a folder)."""
    return {p: (p.read_bytes() if p.is_file() else None) for root in roots for p in [root, *root.rglob("*")]}


def refusal(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The one stderr line of a command that must exit 2 without a traceback."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("kfcpo: error: ")
    return lines[0].removeprefix("kfcpo: error: ")


def fake_run(folder: Path) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 0\n")
    (folder / "metrics.csv").write_text("epoch,env_steps\n0,500.0\n")
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"the other run's checkpoint")
    return folder


OUT_DIR_CASES = {
    # case: (out_dir, the message), formatted with tmp (the test's folder) and run (a finished run)
    "a file": ("{tmp}/afile", "out_dir: '{tmp}/afile' is a file; " + OUT_DIR_VALID),
    "under a file": (
        "{tmp}/afile/sub",
        "out_dir: cannot create '{tmp}/afile/sub': '{tmp}/afile' is a file, not a folder; " + OUT_DIR_VALID,
    ),
    "inside a run": (
        "{run}/again",
        "out_dir: '{run}/again' is inside the run folder '{run}'; give a folder outside other runs",
    ),
    "inside a run's checkpoints": (
        "{run}/checkpoints/new",
        "out_dir: '{run}/checkpoints/new' is inside the run folder '{run}'; give a folder outside other runs",
    ),
}


@pytest.mark.parametrize("case", list(OUT_DIR_CASES))
def test_bad_out_dir_is_refused_before_anything_is_made(case, finished, tmp_path, capsys) -> None:
    (tmp_path / "afile").write_text("not a folder\n")
    out_dir, message = (t.format(tmp=tmp_path, run=finished) for t in OUT_DIR_CASES[case])
    before = snapshot(tmp_path, finished)
    assert refusal(capsys, ["fit", "--config", GOAL, *TINY, f"out_dir={out_dir}"]) == message
    assert snapshot(tmp_path, finished) == before


def test_out_dir_in_a_read_only_folder(tmp_path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: chmod 555 does not stop writes (the simulated test covers this)")
        message = refusal(capsys, ["fit", "--config", GOAL, *TINY, f"out_dir={locked / 'run'}"])
        assert message == (f"out_dir: no permission to write in '{locked}' (to create '{locked / 'run'}'); "
                           "give a path you can write to")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_out_dir_in_a_read_only_folder_simulated(tmp_path, capsys, monkeypatch) -> None:
    """As root chmod does not stop writes: here the permission check itself is told "no"."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw))
    cases = [(locked / "run", f"'{locked}' (to create '{locked / 'run'}')"), (locked, f"'{locked}'")]
    for out_dir, where in cases:
        message = refusal(capsys, ["fit", "--config", GOAL, *TINY, f"out_dir={out_dir}"])
        assert message == f"out_dir: no permission to write in {where}; give a path you can write to"
    assert list(locked.iterdir()) == []


def test_bad_resume_paths_are_refused(finished, tmp_path, capsys) -> None:
    fit = ["fit", "--config", GOAL, *TINY, "total_steps=1000"]
    missing, empty, text = tmp_path / "nope", tmp_path / "empty", tmp_path / "notes.txt"
    empty.mkdir()
    text.write_text("not a checkpoint\n")
    before = snapshot(tmp_path, finished)
    assert refusal(capsys, [*fit, f"resume={missing}"]) == (
        f"resume: no such checkpoint file or run folder '{missing}'; {RESUME_VALID}"
    )
    assert refusal(capsys, [*fit, f"resume={empty}"]) == (
        f"resume: no checkpoint (*.ckpt) in '{empty}'; {RESUME_VALID}"
    )
    assert refusal(capsys, [*fit, f"resume={text}"]).startswith(
        f"resume: '{text}' is not a readable checkpoint ("
    )
    assert refusal(capsys, [*fit, "model.hidden=[32]", f"resume={finished}"]) == (
        "resume: checkpoint was trained with model.hidden=[64, 64], this config has model.hidden=[32]; "
        "resume it with model.hidden=[64, 64], or start a new run"
    )
    assert refusal(capsys, [*fit, "blender.multiplier=pid", f"resume={finished}"]) == (
        "resume: checkpoint was trained with blender.multiplier=adam, this config has "
        "blender.multiplier=pid; resume it with blender.multiplier=adam, or start a new run"
    )
    assert refusal(capsys, [*fit, "env.engine=step", f"resume={finished}"]) == (
        "resume: checkpoint was trained with env.engine=worker, this config has "
        "env.engine=step; resume it with env.engine=worker, or start a new run"
    )
    assert snapshot(tmp_path, finished) == before


def test_resume_keeps_what_the_run_learns_with(finished, tmp_path, capsys) -> None:
    """A resumed run may change its budget and layout, not its learning settings; and no
    fewer steps than it has done. The run folder is left as it was."""
    fit = ["fit", "--config", GOAL, *TINY, f"resume={finished}"]
    before = snapshot(tmp_path, finished)
    assert refusal(capsys, [*fit, "total_steps=1000", "seed=1", "cost_limit=10"]) == (
        "resume: the checkpoint was trained with seed=0 (this config: 1), cost_limit=25.0 (this "
        "config: 10.0); a resumed run keeps what it learns with (it may change total_steps, the "
        "hardware, the env layout and the logging): resume with the run's values, e.g. --config "
        "<run>/config.yaml, or start a new run"
    )
    five = [f"{k}={v}" for k, v in (("gamma", 0.9), ("cost_gamma", 0.9), ("gae_lambda", 0.9),
                                    ("update_iters", 3), ("model.critic_lr", 0.01))]
    assert refusal(capsys, [*fit, "total_steps=1000", *five]).startswith(
        "resume: the checkpoint was trained with gamma=0.99 (this config: 0.9), cost_gamma=0.99 (this "
        "config: 0.9), gae_lambda=0.95 (this config: 0.9) and 2 more; "
    )
    assert refusal(capsys, [*fit, "total_steps=400"]) == (
        "total_steps: 400 is below the 500 steps the checkpoint has done; give total_steps >= 500 to "
        "continue it"
    )
    assert snapshot(tmp_path, finished) == before
    # The run's own config.yaml resumes it (the provenance keys kfcpo appends are dropped).
    resumed = tmp_path / "resumed"
    assert main(["fit", "--config", str(finished / "config.yaml"), "total_steps=1000", "env.vector=async",
                 f"resume={finished}", f"out_dir={resumed}"]) == 0
    assert [r["epoch"] for r in read_metrics(resumed)] == ["1"]


def test_a_config_file_kfcpo_did_not_write_is_never_overwritten(tmp_path, capsys) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "config.yaml").write_text("# my experiment\nalgorithm: ppo_lag\ncost_limit: 20\n")
    before = snapshot(exp)
    assert refusal(capsys, ["fit", "--config", str(exp / "config.yaml"), *TINY, f"out_dir={exp}"]) == (
        f"out_dir: '{exp / 'config.yaml'}' is not a kfcpo run's config and a run would overwrite it; "
        "give a new or empty out_dir, or move the file"
    )
    assert snapshot(exp) == before


def test_resume_into_another_runs_folder_is_refused(finished, tmp_path, capsys) -> None:
    other = fake_run(tmp_path / "other")
    before = snapshot(tmp_path, finished)
    message = refusal(capsys, ["fit", "--config", GOAL, *TINY, "total_steps=1000", f"resume={finished}",
                               f"out_dir={other}"])
    assert message == (
        f"out_dir: '{other}' already holds another run (metrics.csv, checkpoints); "
        f"a resumed run continues in its own folder '{finished}' or in a new out_dir"
    )
    assert snapshot(tmp_path, finished) == before


def test_broken_checkpoint_is_one_line_error(tmp_path, capsys) -> None:
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"PK\x03\x04 not really a checkpoint")
    message = refusal(capsys, ["fit", "--config", GOAL, *TINY, f"resume={broken}"])
    assert message.startswith(f"resume: '{broken}' is not a readable checkpoint (")


def test_a_run_that_fails_before_training_leaves_no_folder(tmp_path, monkeypatch) -> None:
    import kfcpo.train

    def broken_module(cfg, registry=None):
        raise RuntimeError("injected failure while building the module")

    monkeypatch.setattr(kfcpo.train, "SafeRLModule", broken_module)
    with pytest.raises(RuntimeError, match="injected failure"):
        main(["fit", "--config", GOAL, *TINY, f"out_dir={tmp_path / 'new' / 'run'}"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (lambda tmp: ["fit", "--config", GOAL, f"out_dir={tmp / 'afile'}"],
         lambda tmp: f"out_dir: '{tmp / 'afile'}' is a file; {OUT_DIR_VALID}"),
        (lambda tmp: ["fit", "--config", str(ROOT / "conf")],
         lambda tmp: f"--config: '{ROOT / 'conf'}' is a folder; expected a YAML file of keys, "
         "e.g. conf/button.yaml (YAML files there: button.yaml, goal.yaml)"),
    ],
    ids=["out_dir a file", "config a folder"],
)
def test_path_refusals_in_a_fresh_process(argv, message, tmp_path) -> None:
    (tmp_path / "afile").write_text("not a folder\n")
    proc = subprocess.run([sys.executable, "-m", "kfcpo.cli", *argv(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"kfcpo: error: {message(tmp_path)}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


class FreshnessProbe(pl.Callback):
    """Records, at each training step, whether the batch came from the current policy."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int, bool]] = []

    def on_train_batch_start(self, trainer, module, rollout, batch_idx) -> None:
        batch = rollout.batch
        with torch.no_grad():
            logp_now = module.actor.log_prob(batch.obs, batch.act)
        same = torch.allclose(logp_now, batch.logp_old, atol=1e-5)
        self.seen.append((rollout.stats.policy_version, module.updates, same))


def test_each_epoch_trains_on_a_rollout_of_the_current_policy(tmp_path) -> None:
    cfg, _ = load_config(GOAL, [*TINY, "total_steps=1500", f"out_dir={tmp_path}"])
    module = SafeRLModule(cfg)
    trainer = build_trainer(cfg, tmp_path)
    probe = FreshnessProbe()
    trainer.callbacks.append(probe)
    trainer.fit(module)
    assert [(v, u) for v, u, _ in probe.seen] == [(0, 0), (1, 1), (2, 2)]
    assert all(same for _, _, same in probe.seen), probe.seen
