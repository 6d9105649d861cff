"""`kfcpo export`: a trained policy as one standalone file for robots and C++ stacks.

The file maps a batch of raw observations, float64 `(batch, obs_dim)`, to actions,
float32 `(batch, act_dim)`, doing what the run did between env and actor: normalize the
observations with the checkpoint's statistics and clip them as the run did
(`env.obs_clip`), the actor's mean action (or a sample with `stochastic=True`), clipped
to the task's action box. It loads with plain torch (`torch.jit.load`, TorchScript) or
onnxruntime (ONNX); neither needs kfcpo, Lightning or the envs.

Observations are taken as float64 because the run normalized them in float64: a feature
with a tiny spread (e.g. a near-constant sensor) amplifies the rounding of a float32
input far past the 1e-5 the exported actions are held to.
"""

# No `from __future__ import annotations`: TorchScript reads StandalonePolicy's Final
# annotations as real types, not strings.
import copy
import importlib.util
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from torch import nn

from kfcpo.config.errors import ConfigError
from kfcpo.config.validate import check_file_path
from kfcpo.evaluate import Policy, load_policy
from kfcpo.run.atomic import write_atomic
from kfcpo.version import version

FORMATS = ("torchscript", "onnx")
# The packages each format needs beyond torch: ONNX export is an optional extra
# (`pip install 'kfcpo[export]'`), so a library user without it still has everything else.
FORMAT_PACKAGES = {"torchscript": (), "onnx": ("onnx", "onnxscript")}
OUTPUT_VALID = "a file path (e.g. policy.pt or policy.onnx) in a folder that exists or can be made"
INPUT_NAME, OUTPUT_NAME = "obs", "action"
METADATA_FILE = "kfcpo.json"  # TorchScript: the metadata as an extra file in the archive
# The oldest opset torch's exporter writes without a lossy conversion; onnxruntime reads it
# since 1.14 (2023). The graph holds only MatMul/Gemm, Tanh/Relu/Elu, Sub/Div/Clip, Min/Max,
# Cast and (stochastic) RandomNormalLike.
ONNX_OPSET = 18


class StandalonePolicy(nn.Module):
    """Raw observations in, clipped actions out: the normalizer and the action box folded
    into the actor, in TorchScript- and torch.export-friendly code (no Python branches on
    data; the flags are constants of the exported graph)."""

    normalize: Final[bool]
    clip_obs: Final[bool]
    obs_clip: Final[float]
    stochastic: Final[bool]

    def __init__(self, policy: Policy, act_low: np.ndarray, act_high: np.ndarray, stochastic: bool) -> None:
        super().__init__()
        norm = policy.normalizer
        # A copy without gradients: the file holds constants, not the live actor's parameters.
        self.mean_net = copy.deepcopy(policy.actor.mean_net).requires_grad_(False)
        self.normalize = bool(norm.enabled)
        self.clip_obs = norm.clip is not None
        self.obs_clip = float(norm.clip) if norm.clip is not None else 0.0
        self.stochastic = bool(stochastic)
        # float64, computed as ObsNormalizer.normalize does, so normalized inputs are bit-equal.
        scale = np.sqrt(norm.rms.var + norm.epsilon)
        self.register_buffer("obs_mean", torch.as_tensor(norm.rms.mean, dtype=torch.float64))
        self.register_buffer("obs_scale", torch.as_tensor(scale, dtype=torch.float64))
        self.register_buffer("action_std", policy.actor.log_std.detach().exp().clone())
        self.register_buffer("act_low", torch.as_tensor(act_low, dtype=torch.float32))
        self.register_buffer("act_high", torch.as_tensor(act_high, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.to(torch.float64)
        if self.normalize:
            x = (x - self.obs_mean) / self.obs_scale
            if self.clip_obs:
                x = torch.clamp(x, -self.obs_clip, self.obs_clip)
        action = self.mean_net(x.to(torch.float32))
        if self.stochastic:
            action = action + self.action_std * torch.randn_like(action)
        # np.clip(a, low, high), as the rollout and `kfcpo eval` send actions to the env.
        return torch.minimum(torch.maximum(action, self.act_low), self.act_high)


def require_packages(fmt: str) -> None:
    """A one-line error naming the first package `fmt` needs that is not installed."""
    for package in FORMAT_PACKAGES[fmt]:
        if importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"--format {fmt}: needs the '{package}' package, which is not installed; "
                f"install it with: pip install 'kfcpo[export]'"
            )


def action_bounds(env_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The task's action box (float32), from one env built and closed again."""
    from kfcpo.envs import make_env

    env = make_env(env_id)
    try:
        space = env.action_space
        return np.asarray(space.low, dtype=np.float32), np.asarray(space.high, dtype=np.float32)
    finally:
        env.close()


def build(checkpoint: str | Path, stochastic: bool = False) -> tuple[StandalonePolicy, dict[str, Any]]:
    """The standalone policy of a kfcpo checkpoint and the metadata its file carries;
    ConfigError (one line) for a missing, foreign or incompatible checkpoint."""
    policy = load_policy(checkpoint)  # the same refusals as `kfcpo eval`
    cfg = policy.config
    low, high = action_bounds(cfg.env.id)
    module = StandalonePolicy(policy, low, high, stochastic).eval()
    trained_with = policy.trained_with
    meta = {
        "exported_by": f"kfcpo {version()}",
        "trained_with": f"kfcpo {trained_with}" if trained_with else "unknown (an older checkpoint)",
        "env_id": str(cfg.env.id),
        "algorithm": str(cfg.algorithm),
        "seed": int(cfg.seed),
        "obs_dim": int(policy.actor.obs_dim),
        "act_dim": int(policy.actor.act_dim),
        "action": "sampled" if stochastic else "mean",
        "input": f"{INPUT_NAME}: float64 (batch, {policy.actor.obs_dim}), raw observations",
        "output": f"{OUTPUT_NAME}: float32 (batch, {policy.actor.act_dim}), clipped to the action box",
        "action_low": low.tolist(),
        "action_high": high.tolist(),
    }
    return module, meta


def to_torchscript(module: StandalonePolicy, meta: dict[str, Any]) -> bytes:
    """The TorchScript archive, the metadata as its extra file METADATA_FILE."""
    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; it is still what C++ (libtorch) loads.
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        scripted = torch.jit.script(module)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer, _extra_files={METADATA_FILE: json.dumps(meta, indent=1)})
    return buffer.getvalue()


def to_onnx(module: StandalonePolicy, meta: dict[str, Any]) -> bytes:
    """The ONNX model (torch.export-based exporter; the TorchScript-based one is deprecated),
    the metadata as its metadata_props (strings; lists as JSON)."""
    import onnx

    example = torch.zeros(2, module.obs_mean.numel(), dtype=torch.float64)  # batch 2: 0/1 specialize
    batch = torch.export.Dim("batch")
    # The exporter logs a warning per torchvision operator it cannot register (kfcpo uses none).
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            program = torch.onnx.export(
                module, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes={INPUT_NAME: {0: batch}}, opset_version=ONNX_OPSET, verbose=False,
            )
    finally:
        registration.setLevel(level)
    proto = program.model_proto
    onnx.helper.set_model_props(
        proto, {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    )
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export(
    checkpoint: str | Path, output: str | Path, fmt: str = "torchscript", *, stochastic: bool = False
) -> Path:
    """Write the standalone policy of `checkpoint` to `output` (atomically); returns its path."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: got '{fmt}'; expected one of {', '.join(FORMATS)}")
    require_packages(fmt)
    out = check_file_path(output, "--output", OUTPUT_VALID)
    module, meta = build(checkpoint, stochastic)
    data = to_torchscript(module, meta) if fmt == "torchscript" else to_onnx(module, meta)
    write_atomic(out, lambda f: f.write(data))
    return out
