"""`kfcpo export` on a real (tiny) PointGoal1 run: the standalone TorchScript and ONNX
policies act as the checkpoint's policy does on observations of a real rollout, load in
a process where kfcpo cannot be imported, and bad checkpoints are one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import GOAL, ROOT, TINY_FIT, one_error_line

import kfcpo.evaluate as ev  # imported here so the envs' import-time notices are not captured
from kfcpo.cli import main
from kfcpo.run.checkpoint import CHECKPOINT_FORMAT
from kfcpo.version import version

TINY = [*TINY_FIT, "logger.wandb.mode=disabled"]
ROLLOUT_STEPS = 300
TOL = 1e-5
# Loads every exported file given on its command line and writes its actions on obs.npy;
# refuses to run if kfcpo (or Lightning) can be imported: the files must stand alone.
LOADER = r'''
import importlib.util, os, sys
root = os.path.realpath(sys.argv[1])
sys.path = [p for p in sys.path if os.path.realpath(p or ".") != root]  # not the repository
sys.meta_path = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
assert importlib.util.find_spec("kfcpo") is None, "kfcpo is importable"
import numpy as np
import onnxruntime
import torch

obs = np.load("obs.npy")
out = {}
for path in sys.argv[2:]:
    if path.endswith(".onnx"):
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        out[path] = session.run(None, {"obs": obs})[0]
    else:
        policy = torch.jit.load(path)
        with torch.no_grad():
            out[path] = policy(torch.from_numpy(obs)).numpy()
assert not [m for m in sys.modules if m.split(".")[0] in ("kfcpo", "lightning")]
np.savez("actions.npz", **{p.replace("/", "_"): a for p, a in out.items()})
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    assert main(["fit", "--config", GOAL, *TINY, f"out_dir={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def ckpt(run: Path) -> Path:
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def rollout(ckpt: Path) -> tuple[np.ndarray, np.ndarray]:
    """Observations of a real rollout (sampled actions, so states vary) and the checkpoint
    policy's deterministic actions on them, clipped to the action box as `kfcpo eval` does."""
    policy = ev.load_policy(ckpt)
    env = ev.make_eval_env(policy.config.env.id, seed=7)
    low, high = env.action_space.low, env.action_space.high
    generator = torch.Generator().manual_seed(0)
    observations, actions = [], []
    try:
        obs, _ = env.reset()
        for _ in range(ROLLOUT_STEPS):
            observations.append(obs)
            actions.append(np.clip(policy.act(obs, True, generator), low, high))
            obs, _, terminated, truncated, _ = env.step(np.clip(policy.act(obs, False, generator), low, high))
            if terminated or truncated:
                obs, _ = env.reset()
    finally:
        env.close()
    return np.asarray(observations, dtype=np.float64), np.asarray(actions, dtype=np.float32)


@pytest.fixture(scope="module")
def exported(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four files: {torchscript, onnx} x {mean, sampled}, made by the command line."""
    folder = tmp_path_factory.mktemp("exported")
    files = {}
    for name, args in {
        "mean.pt": ["--format", "torchscript"],
        "mean.onnx": [],  # the format from the suffix
        "sampled.pt": ["--stochastic"],
        "sampled.onnx": ["--format", "onnx", "--stochastic"],
    }.items():
        assert main(["export", str(ckpt), "-o", str(folder / name), *args]) == 0
        files[name] = folder / name
    return files


def test_the_normalizer_clip_matters_on_this_rollout(ckpt: Path, rollout) -> None:
    """The comparison below checks the folded normalizer for real: the rollout's
    observations move the statistics far from (0, 1), and some normalized values clip."""
    obs, _ = rollout
    norm = ev.load_policy(ckpt).normalizer
    z = (obs - norm.rms.mean) / np.sqrt(norm.rms.var + norm.epsilon)
    assert norm.enabled and norm.rms.count == 200
    assert (np.abs(z) > norm.clip).any()


@pytest.mark.slow
def test_exported_actions_equal_the_checkpoint_policy_without_kfcpo(
    exported: dict[str, Path], rollout, tmp_path: Path
) -> None:
    obs, expected = rollout
    np.save(tmp_path / "obs.npy", obs)
    (tmp_path / "loader.py").write_text(LOADER)
    files = [str(exported["mean.pt"]), str(exported["mean.onnx"])]
    # -I: no PYTHONPATH, no user site, no script folder; a bare environment.
    proc = subprocess.run(
        [sys.executable, "-I", "loader.py", str(ROOT), *files],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "actions.npz")
    for path in files:
        actions = got[path.replace("/", "_")]
        assert actions.shape == expected.shape and actions.dtype == np.float32
        np.testing.assert_allclose(actions, expected, rtol=0, atol=TOL, err_msg=path)


def test_torchscript_in_process_equals_the_checkpoint_policy(exported: dict[str, Path], rollout) -> None:
    obs, expected = rollout
    policy = torch.jit.load(str(exported["mean.pt"]))
    with torch.no_grad():
        np.testing.assert_allclose(policy(torch.from_numpy(obs)).numpy(), expected, rtol=0, atol=TOL)
        one = policy(torch.from_numpy(obs[:1])).numpy()  # a batch of one works too
    np.testing.assert_allclose(one, expected[:1], rtol=0, atol=TOL)


def test_stochastic_torchscript_is_mean_plus_std_noise_clipped(
    ckpt: Path, exported: dict[str, Path], rollout
) -> None:
    obs, _ = rollout
    actor = ev.load_policy(ckpt).actor
    sampled = torch.jit.load(str(exported["sampled.pt"]))
    mean = torch.jit.load(str(exported["mean.pt"]))
    x = torch.from_numpy(obs[:50])
    with torch.no_grad():
        unclipped = actor.distribution(torch.zeros(1, actor.obs_dim)).stddev[0]
        torch.manual_seed(3)  # TorchScript samples from torch's global generator
        got = sampled(x)
        torch.manual_seed(3)
        noise = torch.randn(50, actor.act_dim)
        mu = mean(x)  # clipped, but the mean of a fresh policy is far inside the box
    assert (mu.abs() < 0.9).all()
    low, high = float(got.min()), float(got.max())
    assert low >= -1.0 and high <= 1.0
    torch.testing.assert_close(got, torch.clamp(mu + unclipped * noise, -1.0, 1.0), rtol=0, atol=TOL)


@pytest.mark.parametrize("name", ["sampled.pt", "sampled.onnx"])
def test_sampled_actions_centre_on_the_mean_and_stay_in_the_box(
    exported: dict[str, Path], rollout, name: str
) -> None:
    """Clipping keeps the median (a monotone map), so the median of many samples for one
    observation is the deterministic action; std 1 at the start gives a standard error
    of about 1.25 / sqrt(n) = 0.02."""
    obs, expected = rollout
    batch = np.repeat(obs[:1], 4001, axis=0)
    if name.endswith(".onnx"):
        import onnxruntime

        actions = onnxruntime.InferenceSession(str(exported[name])).run(None, {"obs": batch})[0]
    else:
        with torch.no_grad():
            actions = torch.jit.load(str(exported[name]))(torch.from_numpy(batch)).numpy()
    assert actions.min() >= -1.0 and actions.max() <= 1.0
    assert (actions.std(axis=0) > 0.3).all()
    np.testing.assert_allclose(np.median(actions, axis=0), expected[0], atol=0.1)


def test_files_say_what_they_are(exported: dict[str, Path]) -> None:
    import onnxruntime

    extra = {"kfcpo.json": ""}
    torch.jit.load(str(exported["mean.pt"]), _extra_files=extra)
    meta = json.loads(extra["kfcpo.json"])
    props = onnxruntime.InferenceSession(str(exported["sampled.onnx"])).get_modelmeta().custom_metadata_map
    for got, action in ((meta, "mean"), (props, "sampled")):
        assert got["env_id"] == "SafetyPointGoal1-v0"
        assert got["action"] == action
        assert got["trained_with"] == got["exported_by"] == f"kfcpo {version()}"
        assert int(got["obs_dim"]) == 60 and int(got["act_dim"]) == 2


def test_missing_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "p.pt"
    assert main(["export", str(tmp_path / "nope.ckpt"), "-o", str(out)]) == 2
    assert "checkpoint: no such checkpoint file" in one_error_line(capsys)
    assert not out.exists()


def test_checkpoint_of_another_format_is_one_line(ckpt: Path, tmp_path: Path, capsys) -> None:
    d = torch.load(ckpt, map_location="cpu", weights_only=True)
    d["kfcpo"]["format"] = 999
    old = tmp_path / "old.ckpt"
    torch.save(d, old)
    out = tmp_path / "p.onnx"
    assert main(["export", str(old), "-o", str(out)]) == 2
    expected = f"has checkpoint format 999; this kfcpo reads format {CHECKPOINT_FORMAT}"
    assert one_error_line(capsys).endswith(expected)
    assert not out.exists()


def test_not_a_checkpoint_and_bad_output_are_one_line(ckpt: Path, tmp_path: Path, capsys) -> None:
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    assert main(["export", str(junk), "-o", str(tmp_path / "p.pt")]) == 2
    assert "is not a readable checkpoint" in one_error_line(capsys)
    assert main(["export", str(ckpt), "-o", str(tmp_path)]) == 2
    assert f"--output: '{tmp_path}' is a folder" in one_error_line(capsys)


def test_onnx_without_its_packages_names_them(ckpt: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # find_spec answers None: not installed
    assert main(["export", str(ckpt), "-o", str(tmp_path / "p.onnx")]) == 2
    line = one_error_line(capsys)
    assert "--format onnx: needs the 'onnxscript' package" in line
    assert "pip install 'kfcpo[export]'" in line


@pytest.mark.parametrize(("enabled", "clip"), [(False, None), (True, None), (True, 0.5)])
def test_every_normalizer_setting_folds_in(enabled: bool, clip: float | None, tmp_path: Path) -> None:
    """Without a run: a normalizer off, without a clip, or with a tight one; a ReLU actor."""
    import onnxruntime
    from omegaconf import OmegaConf

    from kfcpo.envs import ObsNormalizer
    from kfcpo.export import StandalonePolicy, to_onnx, to_torchscript
    from kfcpo.models import GaussianActor

    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    actor = GaussianActor(5, 3, [8], "relu", init_log_std=-1.0)
    torch.nn.init.normal_(actor.mean_net[-1].weight)
    # A narrow spread: float32 inputs would be off by far more than 1e-5 once normalized.
    norm = ObsNormalizer((5,), enabled=enabled, clip=clip)
    norm.update(rng.normal(3.0, 0.01, size=(50, 5)))
    policy = ev.Policy(actor, norm, OmegaConf.create({}))
    obs = rng.normal(3.0, 0.05, size=(64, 5))
    generator = torch.Generator()
    raw = np.stack([policy.act(o, True, generator) for o in obs])
    # A box the actions reach past on both sides, whatever the random weights give.
    low, high = (np.percentile(raw, q, axis=0).astype(np.float32) for q in (25, 75))
    expected = np.clip(raw, low, high)
    assert (expected == low).any() and (expected == high).any()
    assert ((low < expected) & (expected < high)).any()
    module = StandalonePolicy(policy, low, high, stochastic=False).eval()
    (tmp_path / "p.pt").write_bytes(to_torchscript(module, {}))
    (tmp_path / "p.onnx").write_bytes(to_onnx(module, {}))
    with torch.no_grad():
        scripted = torch.jit.load(str(tmp_path / "p.pt"))(torch.from_numpy(obs)).numpy()
    onnx_actions = onnxruntime.InferenceSession(str(tmp_path / "p.onnx")).run(None, {"obs": obs})[0]
    np.testing.assert_allclose(scripted, expected, rtol=0, atol=TOL)
    np.testing.assert_allclose(onnx_actions, expected, rtol=0, atol=TOL)
