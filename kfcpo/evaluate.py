"""`kfcpo eval`: run a trained policy from a checkpoint, report return, cost and length
over N episodes, and optionally record a video of the first ones.

The normalizer's statistics are those saved with the checkpoint and are not updated:
evaluation must not move the input scaling the policy was trained with.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from kfcpo.config.errors import ConfigError
from kfcpo.config.validate import check_file_path
from kfcpo.envs import COST_KEY, ObsNormalizer, UnknownEnvError, make_env, space_dims
from kfcpo.models import GaussianActor
from kfcpo.run.checkpoint import CHECKPOINT_KEY, VERSION_KEY, read_checkpoint, saved_config
from kfcpo.run.layout import checkpoint_run_dir
from kfcpo.seeding import EVAL_SEED_OFFSET
from kfcpo.video import VideoWriter, check_video_path

if TYPE_CHECKING:
    # Not imported at run time before kfcpo.envs: importing gymnasium first would print
    # gymnasium-robotics' import notice, which kfcpo.envs' shim keeps quiet.
    import gymnasium

# Navigation tasks (built by safety_gymnasium's Builder) default to the robot's own
# "vision" camera; "fixedfar" shows the whole arena. Other tasks keep their default
# (the velocity tasks' camera tracks the agent; they have no "fixedfar").
NAV_ENTRY_POINT = "safety_gymnasium.builder:Builder"
NAV_CAMERA = "fixedfar"
DEFAULT_FPS = 30
KEY = "checkpoint"  # the name errors give the checkpoint argument
VIDEO_VALID = "a .mp4 or .gif file path in a folder that exists or can be made"
METRICS = (("ep_ret", "return"), ("ep_cost", "cost"), ("ep_len", "length"))


@dataclass
class Policy:
    """A trained policy: its actor, the normalizer it saw observations through, the
    config it trained with, and the kfcpo that wrote its checkpoint (None: unknown)."""

    actor: GaussianActor
    normalizer: ObsNormalizer
    config: DictConfig
    trained_with: str | None = None

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool, generator: torch.Generator) -> np.ndarray:
        """The action for one raw observation: the mean, or a sample drawn with `generator`."""
        x = torch.as_tensor(self.normalizer.normalize(obs[None]), dtype=torch.float32)
        dist = self.actor.distribution(x)
        if deterministic:
            return dist.mean[0].numpy()
        # Drawn from our own generator so a --seed reproduces the episodes exactly.
        noise = torch.randn(dist.mean.shape, generator=generator)
        return (dist.mean + dist.stddev * noise)[0].numpy()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def load_policy(path: str | Path) -> Policy:
    """The actor and normalizer of a kfcpo checkpoint; ConfigError (one line) otherwise."""
    ckpt = read_checkpoint(path, key=KEY)  # also checks the kfcpo checkpoint format
    state = ckpt[CHECKPOINT_KEY]
    try:
        cfg = saved_config(ckpt)
        obs_dim, act_dim = space_dims(cfg.env.id)
        actor = GaussianActor(obs_dim, act_dim, list(cfg.model.hidden), cfg.model.activation)
        prefix = "actor."
        weights = {k.removeprefix(prefix): v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        actor.load_state_dict(weights)
        normalizer = ObsNormalizer((obs_dim,))
        normalizer.load_state_dict(state["normalizer"])
    except UnknownEnvError as err:
        raise ConfigError(f"{KEY}: '{path}' was trained on {err}") from None
    except (KeyError, AttributeError, TypeError, ValueError, RuntimeError) as err:
        # Missing keys, shapes that differ from the config: the file is not one this
        # kfcpo can rebuild a policy from.
        raise ConfigError(f"{KEY}: '{path}' does not match its own config ({_first_line(err)})") from None
    actor.eval()
    return Policy(actor, normalizer, cfg, ckpt.get(VERSION_KEY))


def default_camera(env_id: str) -> str | None:
    """The camera videos of `env_id` use by default: the far fixed view on navigation
    tasks, None (the env's own) otherwise."""
    from gymnasium.envs import registry  # already loaded (quietly) by kfcpo.envs

    spec = registry.get(env_id)
    return NAV_CAMERA if spec is not None and spec.entry_point == NAV_ENTRY_POINT else None


def make_eval_env(
    env_id: str, seed: int, max_steps: int | None = None, render: bool = False,
    camera: str | None = None,
) -> gymnasium.Env:
    """One env for evaluation, seeded; with `render`, rendering RGB frames from `camera`
    (default: `default_camera`). `max_steps` caps an episode (None: the env's limit)."""
    kwargs: dict[str, Any] = {}
    if render:
        # Only build a renderer when recording: rendering is the slowest part of a step.
        kwargs = {"render_mode": "rgb_array"}
        camera = camera or default_camera(env_id)
        if camera:
            kwargs["camera_name"] = camera
    return make_env(env_id, seed=seed, max_episode_steps=max_steps, **kwargs)


def check_camera(env_id: str, camera: str) -> None:
    """Raise ConfigError unless ``camera`` is one of the task's cameras: MuJoCo renders an
    unknown name from its free camera, so a typo would silently record another view. A
    throwaway env (its model exists after a reset), so the evaluation env's seeding is
    untouched."""
    probe = make_env(env_id)
    try:
        probe.reset(seed=0)
        inner = probe.unwrapped
        model = getattr(getattr(inner, "task", None), "model", None) or inner.model  # navigation or velocity
        names = [model.camera(i).name for i in range(model.ncam)]
    finally:
        probe.close()
    if camera not in names:
        raise ConfigError(f"--camera: {env_id} has no camera {camera!r}; valid: {', '.join(names)}")


def run_episodes(
    policy: Policy,
    env: gymnasium.Env,
    episodes: int,
    *,
    seed: int,
    deterministic: bool = False,
    video: VideoWriter | None = None,
    video_episodes: int = 1,
) -> dict[str, list[float]]:
    """Per-episode return, cost and length; renders the first `video_episodes` into `video`."""
    low, high = env.action_space.low, env.action_space.high
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, list[float]] = {"ep_ret": [], "ep_cost": [], "ep_len": []}

    def frame(writer: VideoWriter) -> None:
        # Checked before rendering: past the cap a render would be wasted time.
        if writer.full:
            writer.dropped += 1
        else:
            writer.append(env.render())

    for episode in range(episodes):
        obs, _ = env.reset()  # the env's first reset takes its seed, later ones continue its RNG
        record = video if video is not None and episode < video_episodes else None
        if record is not None:
            frame(record)
        ret = cost = 0.0
        length, done = 0, False
        while not done:
            action = np.clip(policy.act(obs, deterministic, generator), low, high)
            obs, reward, terminated, truncated, info = env.step(action)
            ret, cost, length = ret + reward, cost + info[COST_KEY], length + 1
            done = terminated or truncated
            if record is not None:
                frame(record)
        for key, value in zip(out, (ret, cost, length), strict=True):
            out[key].append(float(value))
    return out


def summarize(episodes: dict[str, list[float]]) -> dict[str, float]:
    """Mean, population std, min and max of each metric over the episodes."""
    stats: dict[str, float] = {}
    for key, values in episodes.items():
        arr = np.asarray(values, dtype=np.float64)
        for name, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
            stats[f"{key}_{name}"] = float(fn(arr))
    return stats


def print_table(result: dict[str, Any], console: Console | None = None) -> None:
    """Print an evaluation's result as a header line and a table of its metrics' mean,
    std, min and max over the episodes."""
    console = console or Console()
    mode = "mean" if result["deterministic"] else "sampled"
    # A header line, not a table title: rich wraps titles to the (narrow) table width.
    console.print(
        f"[bold]{result['env_id']}[/]: {result['episodes']} episodes, {mode} actions, "
        f"seed {result['seed']}, cost limit {result['cost_limit']:g}"
    )
    table = Table(caption="std over episodes (ddof 0)")
    table.add_column("metric")
    for col in ("mean", "std", "min", "max"):
        table.add_column(col, justify="right")
    for key, label in METRICS:
        table.add_row(label, *(f"{result[f'{key}_{c}']:.2f}" for c in ("mean", "std", "min", "max")))
    console.print(table)


def log_to_wandb(result: dict[str, Any], cfg: DictConfig, run_dir: Path) -> bool:
    """Log the stats (and video) to wandb if the training run used it; False if not.

    The run's own project, entity, group and tags, under the same WANDB_* environment
    variables as training (kfcpo.wandb_run), so the eval lands beside its training run."""
    from dataclasses import replace

    # lightning and wandb only when asked for
    from kfcpo.wandb_run import auto_mode, resolve, resolve_mode, run_config

    mode, source = resolve_mode(cfg)
    if mode == "disabled":
        said = f"the run had {source}=disabled" if source.startswith("logger.") else f"{source}=disabled"
        print(f"kfcpo: note: {said}; nothing logged to wandb", file=sys.stderr)
        return False
    import wandb

    setup = resolve(cfg, run_dir)
    assert setup is not None  # the mode is not disabled
    if source == "logger.wandb.mode" and mode == "online":
        # The run's own `online` may come from another machine: online here only with an
        # API key, so an eval never waits on a login (an explicit WANDB_MODE still wins).
        setup = replace(setup, mode=auto_mode())
    kwargs = setup.init_kwargs()
    run = wandb.init(
        **{**kwargs, "tags": [*kwargs["tags"], "eval"]}, job_type="eval", config=run_config(cfg),
    )
    data: dict[str, Any] = {f"eval/{k}": v for k, v in result.items() if k.endswith(("_mean", "_std"))}
    if result["video"]:
        data["eval/video"] = wandb.Video(result["video"], format=Path(result["video"]).suffix[1:])
    run.log(data)
    run.finish()
    return True


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{name}: must be >= 1, got {value}")


def evaluate(
    checkpoint: str | Path,
    episodes: int,
    *,
    video: str | Path | None = None,
    video_episodes: int = 1,
    deterministic: bool = False,
    seed: int | None = None,
    max_steps: int | None = None,
    camera: str | None = None,
    wandb: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint, print a table, return the stats (and per-episode values)."""
    for name, value in (("--episodes", episodes), ("--video-episodes", video_episodes),
                        ("--max-steps", max_steps)):
        _check_positive(name, value)
    if video is not None:
        try:
            check_video_path(video)
        except ValueError as err:
            raise ConfigError(f"--video: {err}") from None
        # Missing folders are made when the video is written; one that cannot be is refused now.
        check_file_path(video, "--video", VIDEO_VALID)
    if camera is not None and video is None:
        raise ConfigError("--camera: only used when recording; add --video PATH, or drop --camera")
    policy = load_policy(checkpoint)
    cfg = policy.config
    if camera is not None:
        check_camera(cfg.env.id, camera)
    if wandb:  # a WANDB_MODE wandb would refuse: the one-line error before any episode runs
        from kfcpo.wandb_run import resolve_mode

        resolve_mode(cfg)
    seed = int(cfg.seed) + EVAL_SEED_OFFSET if seed is None else seed
    env = make_eval_env(cfg.env.id, seed, max_steps, render=video is not None, camera=camera)
    writer = None
    try:
        if video is not None:
            writer = VideoWriter(video, fps=env.metadata.get("render_fps") or DEFAULT_FPS)
        per_episode = run_episodes(
            policy, env, episodes, seed=seed, deterministic=deterministic,
            video=writer, video_episodes=video_episodes,
        )
    finally:
        env.close()
        if writer is not None:
            writer.close()
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint), "env_id": cfg.env.id, "episodes": episodes, "seed": seed,
        "deterministic": deterministic, "cost_limit": float(cfg.cost_limit),
        **summarize(per_episode), **per_episode,
        "video": str(writer.path) if writer else None,
        "video_frames": writer.frames if writer else 0,
    }
    print_table(result, console)
    if writer is not None:
        capped = f", {writer.dropped} more left out by the cap" if writer.dropped else ""
        print(f"video: {writer.path} ({writer.frames} frames{capped})")
    if wandb:
        result["wandb"] = log_to_wandb(result, cfg, checkpoint_run_dir(Path(checkpoint)))
    return result
