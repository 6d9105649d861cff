"""`kfcpo eval` on a checkpoint from a real (tiny) training run: stats, videos, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from helpers import one_error_line

import kfcpo.evaluate as ev  # imported here so the envs' import-time notices are not captured
from kfcpo.cli import main
from kfcpo.run.checkpoint import CHECKPOINT_FORMAT
from kfcpo.video import VideoWriter

ROOT = Path(__file__).resolve().parents[1]
GOAL = str(ROOT / "conf" / "goal.yaml")
TINY = [
    "steps_per_epoch=500",
    "total_steps=500",
    "env.num_envs=1",
    "env.vector=sync",
    "update_iters=1",
    "model.critic_iters=1",
    "logger.wandb.mode=disabled",
]
STEPS = 4  # --max-steps: short episodes keep the (software-rendered) videos fast


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    assert main(["fit", "--config", GOAL, *TINY, f"out_dir={out}"]) == 0
    return out


@pytest.fixture
def ckpt(run: Path) -> Path:
    return run / "checkpoints" / "last.ckpt"


def gif_frames(path: Path, frame_ms: int) -> int:
    # Pillow merges identical consecutive GIF frames into one longer frame, so count
    # frames as total duration / frame duration.
    total = sum(iio.immeta(path, index=i)["duration"] for i in range(iio.improps(path).shape[0]))
    assert total % frame_ms == 0
    return total // frame_ms


def rewrite(ckpt: Path, dest: Path, edit) -> Path:
    data = torch.load(ckpt, map_location="cpu", weights_only=False)
    edit(data)
    torch.save(data, dest)
    return dest


@pytest.mark.slow
def test_eval_prints_stats_and_writes_mp4(ckpt: Path, tmp_path: Path, capsys) -> None:
    video = tmp_path / "sub" / "first.mp4"
    args = ["eval", str(ckpt), "--episodes", "1", "--max-steps", str(STEPS), "--deterministic"]
    assert main([*args, "--video", str(video)]) == 0
    out = capsys.readouterr().out
    assert "SafetyPointGoal1-v0: 1 episodes, mean actions" in out
    length_row = next(line for line in out.splitlines() if "length" in line)
    cells = [c.strip() for c in length_row.split("\u2502") if c.strip()]  # rich's box bars
    assert cells == ["length", f"{STEPS:.2f}", "0.00", f"{STEPS:.2f}", f"{STEPS:.2f}"]
    assert f"video: {video} ({STEPS + 1} frames)" in out
    frames = list(iio.imiter(video))
    assert len(frames) == STEPS + 1  # the reset frame and one per step
    assert frames[0].ndim == 3 and frames[0].shape[2] == 3
    assert np.ptp(frames[-1]) > 50  # a rendered scene, not a blank frame


@pytest.mark.slow
def test_eval_gif_of_two_episodes_and_stats(ckpt: Path, tmp_path: Path) -> None:
    video = tmp_path / "two.gif"
    result = ev.evaluate(ckpt, 3, video=video, video_episodes=2, max_steps=STEPS, seed=7)
    assert result["ep_len"] == [STEPS] * 3
    assert result["video_frames"] == 2 * (STEPS + 1)  # only the first two episodes
    writer_ms = VideoWriter(tmp_path / "probe.gif", fps=30).frame_ms
    assert gif_frames(video, writer_ms) == 2 * (STEPS + 1)
    assert result["ep_ret_mean"] == pytest.approx(np.mean(result["ep_ret"]))
    assert result["ep_ret_std"] == pytest.approx(np.std(result["ep_ret"]))
    assert result["ep_cost_mean"] == pytest.approx(np.mean(result["ep_cost"]))
    assert result["seed"] == 7 and result["env_id"] == "SafetyPointGoal1-v0"


def test_eval_is_reproducible_and_seeded(ckpt: Path) -> None:
    a = ev.evaluate(ckpt, 2, max_steps=20, seed=1)
    b = ev.evaluate(ckpt, 2, max_steps=20, seed=1)
    c = ev.evaluate(ckpt, 2, max_steps=20, seed=2)
    assert a["ep_ret"] == b["ep_ret"]
    assert a["ep_ret"][0] != a["ep_ret"][1]  # the second episode is a new one
    assert a["ep_ret"] != c["ep_ret"]
    det = ev.evaluate(ckpt, 1, max_steps=20, seed=1, deterministic=True)
    assert det["ep_ret"] != a["ep_ret"][:1]  # the mean action is not the sampled one


def test_policy_is_the_checkpoints_and_normalizer_is_frozen(ckpt: Path) -> None:
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    policy = ev.load_policy(ckpt)
    for name, tensor in policy.actor.state_dict().items():
        assert torch.equal(tensor, saved["state_dict"][f"actor.{name}"]), name
    norm = saved["kfcpo"]["normalizer"]
    assert policy.normalizer.rms.count == norm["rms"]["count"] > 0
    env = ev.make_eval_env(policy.config.env.id, seed=0, max_steps=20)
    try:
        ev.run_episodes(policy, env, 1, seed=0)
    finally:
        env.close()
    assert policy.normalizer.rms.count == norm["rms"]["count"]  # evaluation did not update it
    np.testing.assert_array_equal(policy.normalizer.rms.mean, norm["rms"]["mean"])


def test_missing_checkpoint(tmp_path: Path, capsys) -> None:
    assert main(["eval", str(tmp_path / "nope.ckpt")]) == 2
    assert "checkpoint: no such checkpoint file" in one_error_line(capsys)


@pytest.mark.slow
def test_missing_checkpoint_in_a_fresh_process_is_one_stderr_line(tmp_path: Path) -> None:
    # A fresh interpreter: import-time notices (gymnasium-robotics prints one) must not
    # add lines to the error.
    missing = tmp_path / "nope.ckpt"
    proc = subprocess.run([sys.executable, "-m", "kfcpo.cli", "eval", str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"kfcpo: error: checkpoint: no such checkpoint file '{missing}'; "
        "expected a checkpoint file, e.g. runs/<run>/checkpoints/last.ckpt"
    ]


def test_a_folder_is_not_a_checkpoint(run: Path, tmp_path: Path, capsys) -> None:
    assert main(["eval", str(run)]) == 2
    assert one_error_line(capsys) == (
        f"kfcpo: error: checkpoint: '{run}' is a folder; expected a checkpoint file, "
        f"e.g. '{run / 'checkpoints' / 'last.ckpt'}'"
    )
    assert main(["eval", str(tmp_path)]) == 2
    assert one_error_line(capsys) == (
        f"kfcpo: error: checkpoint: '{tmp_path}' is a folder; expected a checkpoint file (*.ckpt)"
    )


VIDEO_VALID = "expected a .mp4 or .gif file path in a folder that exists or can be made"


def test_video_path_that_cannot_be_written_is_refused_before_any_episode(
    ckpt: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    afile, folder = tmp_path / "afile", tmp_path / "clip.mp4"
    afile.write_text("not a folder\n")
    folder.mkdir()
    monkeypatch.setattr(ev, "make_eval_env", lambda *a, **k: pytest.fail("an env was made"))
    before = sorted(tmp_path.rglob("*"))
    under_a_file = f"'{afile}' is a file, not a folder; {VIDEO_VALID}"
    for video, message in [
        (afile / "v.mp4", f"cannot create '{afile / 'v.mp4'}': {under_a_file}"),
        (afile / "deeper" / "v.gif", f"cannot create '{afile / 'deeper' / 'v.gif'}': {under_a_file}"),
        (folder, f"'{folder}' is a folder; {VIDEO_VALID}"),
    ]:
        assert main(["eval", str(ckpt), "--max-steps", "2", "--video", str(video)]) == 2
        assert one_error_line(capsys) == f"kfcpo: error: --video: {message}"
    assert sorted(tmp_path.rglob("*")) == before


def test_unknown_camera_or_camera_without_video_is_refused_before_any_episode(
    ckpt: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(ev, "make_eval_env", lambda *a, **k: pytest.fail("an env was made"))
    video = tmp_path / "v.gif"
    assert main(["eval", str(ckpt), "--video", str(video), "--camera", "fixedfra"]) == 2
    line = one_error_line(capsys)
    assert line.startswith("kfcpo: error: --camera: ") and "has no camera 'fixedfra'; valid: " in line, line
    assert "fixedfar" in line
    assert main(["eval", str(ckpt), "--camera", "fixedfar"]) == 2
    assert one_error_line(capsys) == ("kfcpo: error: --camera: only used when recording; add --video PATH, "
                                      "or drop --camera")
    assert main(["eval", str(ckpt), "--seed", "-1"]) == 2
    seed_error = "kfcpo: error: eval: argument --seed: expected an integer in [0, "
    assert one_error_line(capsys).startswith(seed_error)
    assert not video.exists()


def test_truncated_checkpoint(ckpt: Path, tmp_path: Path, capsys) -> None:
    data = ckpt.read_bytes()
    half = tmp_path / "half.ckpt"
    half.write_bytes(data[: len(data) // 2])
    assert main(["eval", str(half)]) == 2
    assert "is not a readable checkpoint" in one_error_line(capsys)


def test_foreign_checkpoint(tmp_path: Path, capsys) -> None:
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, foreign)
    assert main(["eval", str(foreign)]) == 2
    assert "is not a kfcpo checkpoint" in one_error_line(capsys)


def test_other_format_or_mismatched_checkpoint(ckpt: Path, tmp_path: Path, capsys) -> None:
    def future(d: dict) -> None:
        d["kfcpo"]["format"] = 999

    assert main(["eval", str(rewrite(ckpt, tmp_path / "future.ckpt", future))]) == 2
    assert f"has checkpoint format 999; this kfcpo reads format {CHECKPOINT_FORMAT}" in one_error_line(capsys)

    def narrower(d: dict) -> None:
        d["hyper_parameters"]["config"]["model"]["hidden"] = [32]

    assert main(["eval", str(rewrite(ckpt, tmp_path / "narrow.ckpt", narrower))]) == 2
    assert "does not match its own config (RuntimeError" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--episodes", "0"], "--episodes: must be >= 1, got 0"),
        (["--max-steps", "-3"], "--max-steps: must be >= 1, got -3"),
        (["--video", "out.avi"], "--video: 'out.avi' must end in one of .mp4, .gif"),
    ],
)
def test_bad_options_are_one_line_errors(ckpt: Path, capsys, args: list[str], message: str) -> None:
    assert main(["eval", str(ckpt), *args]) == 2
    assert one_error_line(capsys) == f"kfcpo: error: {message}"


def test_wandb_skipped_when_run_did_not_use_it(ckpt: Path, run: Path, capsys) -> None:
    result = ev.evaluate(ckpt, 1, max_steps=5, wandb=True)
    assert result["wandb"] is False
    assert "logger.wandb.mode=disabled; nothing logged" in capsys.readouterr().err
    assert not (run / "wandb").exists()


@pytest.mark.slow
def test_wandb_offline_logs_the_video(ckpt: Path, run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    copy = tmp_path / "run"
    (copy / "checkpoints").mkdir(parents=True)
    (copy / "config.yaml").write_text((run / "config.yaml").read_text())

    def offline(d: dict) -> None:
        d["hyper_parameters"]["config"]["logger"]["wandb"]["mode"] = "offline"

    wb_ckpt = rewrite(ckpt, copy / "checkpoints" / "last.ckpt", offline)
    video = tmp_path / "v.gif"
    result = ev.evaluate(wb_ckpt, 1, max_steps=3, video=video, wandb=True)
    assert result["wandb"] is True
    offline_runs = list((copy / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert list(offline_runs[0].glob("files/media/videos/**/*.gif"))


def test_video_frames_are_capped(ckpt: Path, tmp_path: Path) -> None:
    policy = ev.load_policy(ckpt)
    env = ev.make_eval_env(policy.config.env.id, seed=0, max_steps=STEPS, render=True)
    try:
        with VideoWriter(tmp_path / "cap.mp4", fps=30, max_frames=3) as writer:
            ev.run_episodes(policy, env, 1, seed=0, video=writer)
    finally:
        env.close()
    assert (writer.frames, writer.dropped) == (3, STEPS + 1 - 3)
    assert len(list(iio.imiter(tmp_path / "cap.mp4"))) == 3
