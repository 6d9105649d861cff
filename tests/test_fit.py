"""`kfcpo fit` end to end on a real Safety Gymnasium task with a real Lightning Trainer."""

import csv
import math
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


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_fit_writes_metrics_and_checkpoints_then_resumes(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["fit", "--config", GOAL, *TINY, "total_steps=1000", f"out_dir={run}"]) == 0
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert [float(r["env_steps"]) for r in rows] == [500.0, 1000.0]
    for key in ("ep_ret", "ep_cost", "ep_len", "kl", "steps_per_s", "update_s"):
        assert all(r[key] != "" for r in rows), key
    # PointGoal1 episodes last 1000 steps: none finished in epoch 0, so no made-up 0 is logged.
    assert [float(r["episodes"]) for r in rows] == [0.0, 1.0]
    assert math.isnan(float(rows[0]["ep_ret"])) and math.isnan(float(rows[0]["ep_cost"]))
    assert float(rows[1]["ep_len"]) == 1000.0 and math.isfinite(float(rows[1]["ep_ret"]))
    assert float(rows[-1]["kl"]) > 0  # the policy moved
    assert (run / "config.yaml").is_file()
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file()

    resumed = tmp_path / "resumed"
    overrides = [*TINY, "total_steps=1500", f"out_dir={resumed}", f"resume={last}"]
    assert main(["fit", "--config", GOAL, *overrides]) == 0
    rows = read_metrics(resumed)
    assert [r["epoch"] for r in rows] == ["2"]
    assert float(rows[0]["env_steps"]) == 1500.0  # counters continue from the checkpoint
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


def test_resume_from_another_config_is_refused(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    main(["fit", "--config", GOAL, *TINY, "total_steps=500", f"out_dir={run}"])
    capsys.readouterr()
    ckpt = run / "checkpoints" / "last.ckpt"
    code = main(["fit", "--config", GOAL, *TINY, "model.hidden=[32]", f"resume={ckpt}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "resume: checkpoint was trained with model.hidden=[64, 64]" in err


def test_missing_or_broken_checkpoint_is_one_line_error(tmp_path, capsys) -> None:
    assert main(["fit", "--config", GOAL, *TINY, f"resume={tmp_path / 'nope.ckpt'}"]) == 2
    assert "resume: no such checkpoint file" in capsys.readouterr().err
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"PK\x03\x04 not really a checkpoint")
    assert main(["fit", "--config", GOAL, *TINY, f"resume={broken}"]) == 2
    assert "is not a readable checkpoint" in capsys.readouterr().err


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
