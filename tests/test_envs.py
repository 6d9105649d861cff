"""kfcpo.envs on real Safety Gymnasium tasks, with tiny budgets."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kfcpo.envs as envs
from kfcpo.envs import (
    DEFAULT_CLIP,
    ObsNormalizer,
    RunningMeanStd,
    UnknownEnvError,
    make_env,
    make_vector_env,
)
from kfcpo.envs.ids import EXAMPLE_IDS

GOAL = "SafetyPointGoal1-v0"
# Driving straight ahead leaves Circle1's safe band within ~60-140 steps, which
# gives a cost on a chosen step without any search.
CIRCLE = "SafetyPointCircle1-v0"
FORWARD = np.array([1.0, 0.0])
VECTOR_KINDS = ["sync", "async"]


# --- compatibility shim -------------------------------------------------------


def test_fresh_process_imports_safety_gymnasium_and_picks_headless_gl() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    code = "import kfcpo.envs, safety_gymnasium, os; print(os.environ['MUJOCO_GL'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] in {"egl", "osmesa"}


def test_array_defaults_are_kept_for_safety_gymnasium_only() -> None:
    from safety_gymnasium.assets.color import COLOR
    from safety_gymnasium.assets.geoms import Goal

    color = {f.name: f for f in dataclasses.fields(Goal)}["color"]
    assert color.default is COLOR["goal"]
    with pytest.raises(ValueError, match="mutable default"):

        @dataclasses.dataclass
        class Elsewhere:
            color: np.ndarray = np.zeros(3)  # noqa: RUF009


def test_shim_is_idempotent() -> None:
    import gymnasium.envs.mujoco.mujoco_rendering as rendering

    before = (dataclasses._get_field, rendering.BaseRender._add_marker_to_scene)
    envs.compat._allow_array_defaults_in_safety_gymnasium()
    envs.compat._fix_marker_drawing()
    assert (dataclasses._get_field, rendering.BaseRender._add_marker_to_scene) == before


def test_navigation_task_renders_rgb_frame_headless() -> None:
    env = make_env(GOAL, seed=0, render_mode="rgb_array", camera_name="fixedfar")
    try:
        env.reset()
        env.step(env.action_space.sample())
        frame = env.render()  # draws lidar markers: the call mujoco >= 3.2 broke
    finally:
        env.close()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 10


# --- fast reset -------------------------------------------------------------------


def _rollout(steps: int = 5) -> tuple[list[np.ndarray], int]:
    env = make_env(GOAL, seed=0)
    observations = [env.reset()[0]]
    observations += [env.step(np.array([0.5, -0.3]))[0] for _ in range(steps)]
    texture_bytes = env.unwrapped.task.model.ntexdata
    env.close()
    return observations, texture_bytes


def test_gradient_skybox_shrinks_model_and_leaves_observations_alone() -> None:
    try:
        envs.fast_reset.install(star_skybox=True)
        stars, star_bytes = _rollout()
    finally:
        envs.fast_reset.install()
    plain, plain_bytes = _rollout()
    assert star_bytes > 100e6 > 1e6 > plain_bytes
    np.testing.assert_array_equal(np.stack(stars), np.stack(plain))


# --- single env and ids --------------------------------------------------------


def test_single_env_steps_gymnasium_5_tuple_with_cost_and_list_actions() -> None:
    env = make_env(GOAL, seed=1)
    obs, _ = env.reset()
    result = env.step([0.0, 0.0])  # a list: numpy 2 rejected it inside safety_gymnasium
    env.close()
    assert len(result) == 5
    assert obs.shape == env.observation_space.shape
    assert isinstance(result[4]["cost"], float)


def test_unknown_env_id_names_close_matches() -> None:
    with pytest.raises(UnknownEnvError) as err:
        make_env("SafetyPointButon1-v0")
    message = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in message
    assert message.startswith("unknown env id 'SafetyPointButon1-v0'; close matches: ")
    assert "SafetyPointButton1-v0" in message
    with pytest.raises(UnknownEnvError) as err:
        make_vector_env("NoSuchTask-v0", 2)
    # Nothing close: say what an id looks like, with examples that exist.
    assert str(err.value).startswith("unknown env id 'NoSuchTask-v0'; expected a Safety Gymnasium id, e.g. ")
    assert set(EXAMPLE_IDS) <= set(envs.env_ids())


def test_env_ids_and_space_dims() -> None:
    ids = envs.env_ids()
    assert GOAL in ids and "SafetyPointButton1-v0" in ids and ids == sorted(ids)
    env = make_env(GOAL)
    expected = (env.observation_space.shape[0], env.action_space.shape[0])
    env.close()
    assert envs.space_dims(GOAL) == expected == (60, 2)


# --- vector envs -----------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTOR_KINDS)
def test_vector_env_shapes_and_cost_array(vector: str) -> None:
    venv = make_vector_env(GOAL, num_envs=3, seed=0, vector=vector)
    try:
        obs, _ = venv.reset()
        obs2, reward, terminated, truncated, info = venv.step(venv.action_space.sample())
    finally:
        venv.close()
    assert obs.shape == obs2.shape == (3, 60)
    assert reward.shape == terminated.shape == truncated.shape == (3,)
    assert info["cost"].shape == (3,) and info["cost"].dtype == np.float64
    assert info["_cost"].all()


def _first_obs(vector: str, seed: int, num_envs: int = 2) -> np.ndarray:
    venv = make_vector_env(GOAL, num_envs=num_envs, seed=seed, vector=vector)
    try:
        return venv.reset()[0]
    finally:
        venv.close()


@pytest.mark.parametrize("vector", VECTOR_KINDS)
def test_vector_env_seeding(vector: str) -> None:
    first = _first_obs(vector, seed=5)
    np.testing.assert_array_equal(first, _first_obs(vector, seed=5))
    assert not np.allclose(first[0], first[1])  # env i gets seed + i
    assert not np.allclose(first, _first_obs(vector, seed=6))
    # env 1 of seed 5 is env 0 of seed 6
    np.testing.assert_array_equal(first[1], _first_obs(vector, seed=6, num_envs=1)[0])


def test_sync_async_and_explicit_reset_seed_agree() -> None:
    venv = make_vector_env(GOAL, num_envs=2, seed=0)
    try:
        explicit = venv.reset(seed=5)[0]
    finally:
        venv.close()
    np.testing.assert_array_equal(explicit, _first_obs("sync", seed=5))
    np.testing.assert_array_equal(explicit, _first_obs("async", seed=5))


def _reference_run(seed: int, steps: int, limit: int) -> tuple[list, list, list]:
    """Single env driven like a vector env: autoreset without a seed."""
    env = make_env(CIRCLE, seed=seed, max_episode_steps=limit)
    env.reset()
    observations, costs, truncations = [], [], []
    for _ in range(steps):
        obs, _, terminated, truncated, info = env.step(FORWARD)
        observations.append(obs)
        costs.append(info["cost"])
        truncations.append(truncated)
        if terminated or truncated:
            env.reset()
    env.close()
    return observations, costs, truncations


@pytest.mark.parametrize("vector", VECTOR_KINDS)
def test_truncation_exposes_final_observation_and_cost(vector: str) -> None:
    _, costs, _ = _reference_run(seed=0, steps=300, limit=1000)
    limit = 1 + int(np.flatnonzero(costs)[0])  # the episode ends on a costly step
    steps = limit + 3
    references = [_reference_run(seed=i, steps=steps, limit=limit) for i in range(2)]

    venv = make_vector_env(CIRCLE, num_envs=2, seed=0, vector=vector, max_episode_steps=limit)
    try:
        venv.reset()
        for t in range(steps):
            obs, _, _, truncated, info = venv.step(np.stack([FORWARD, FORWARD]))
            for i, (ref_obs, ref_cost, ref_trunc) in enumerate(references):
                assert info["cost"][i] == ref_cost[t]
                assert truncated[i] == ref_trunc[t]
                if truncated[i]:
                    np.testing.assert_allclose(info["final_observation"][i], ref_obs[t])
                    assert not np.allclose(obs[i], ref_obs[t])  # obs is the reset obs
                else:
                    np.testing.assert_allclose(obs[i], ref_obs[t])
    finally:
        venv.close()
    assert references[0][2][limit - 1] and references[0][1][limit - 1] > 0


def test_step_costs_reads_final_info_for_finished_envs() -> None:
    info = {
        "cost": np.array([0.5, 0.0, 0.0]),
        "_cost": np.array([True, False, True]),
        "final_info": np.array([None, {"cost": 2.0}, None], dtype=object),
        "_final_info": np.array([False, True, False]),
    }
    np.testing.assert_array_equal(envs.step_costs(info, 3), [0.5, 2.0, 0.0])
    del info["final_info"], info["_final_info"]
    with pytest.raises(KeyError, match=r"\[1\]"):
        envs.step_costs(info, 3)


def test_bad_vector_kind() -> None:
    with pytest.raises(ValueError, match="sync"):
        make_vector_env(GOAL, 1, vector="threads")  # type: ignore[arg-type]


# --- normalization -------------------------------------------------------------


def _batches(rng: np.random.Generator) -> list[np.ndarray]:
    # Large offset and mixed sizes: a naive sum-of-squares update loses digits here.
    return [1e6 + rng.normal(size=(n, 4)) * [1, 10, 1e-3, 0] for n in (1, 7, 300, 50)]


def test_running_mean_std_matches_numpy_on_concatenated_batches() -> None:
    batches = _batches(np.random.default_rng(0))
    rms = RunningMeanStd((4,))
    for batch in batches:
        rms.update(batch)
    whole = np.concatenate(batches)
    assert rms.count == len(whole)
    np.testing.assert_allclose(rms.mean, whole.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(rms.var, whole.var(axis=0), rtol=1e-7, atol=1e-12)


def test_merge_of_two_halves_equals_whole() -> None:
    batches = _batches(np.random.default_rng(1))
    left, right, whole = RunningMeanStd((4,)), RunningMeanStd((4,)), RunningMeanStd((4,))
    for batch in batches[:2]:
        left.update(batch)
    for batch in batches[2:]:
        right.update(batch)
    for batch in batches:
        whole.update(batch)
    left.merge(right.count, right.mean, right.var)
    assert left.count == whole.count
    np.testing.assert_allclose(left.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(left.var, whole.var, rtol=1e-7, atol=1e-12)


def test_normalizer_state_round_trips_through_json() -> None:
    norm = ObsNormalizer((3,), clip=5.0)
    norm.update(np.random.default_rng(2).normal(3.0, 2.0, size=(100, 3)))
    restored = ObsNormalizer((3,))
    restored.load_state_dict(json.loads(json.dumps(norm.state_dict())))
    obs = np.array([1.0, 3.0, 20.0])
    np.testing.assert_array_equal(restored.normalize(obs), norm.normalize(obs))
    with pytest.raises(ValueError, match="shape"):
        ObsNormalizer((4,)).load_state_dict(norm.state_dict())


def test_normalizer_clip_and_disable() -> None:
    norm = ObsNormalizer((2,))
    norm.update(np.random.default_rng(3).normal(size=(1000, 2)))
    far = np.array([[1e3, -1e3]])
    out = norm.normalize(far)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[DEFAULT_CLIP, -DEFAULT_CLIP]])
    np.testing.assert_array_equal(norm.normalize(far, clip=3.0), [[3.0, -3.0]])
    assert np.abs(norm.normalize(far, clip=np.inf)).min() > 100
    near = np.array([[0.5, -0.5]])
    np.testing.assert_allclose(
        norm.normalize(near), (near - norm.rms.mean) / np.sqrt(norm.rms.var), rtol=1e-5
    )

    off = ObsNormalizer((2,), enabled=False)
    off.update(far)
    assert off.rms.count == 0
    np.testing.assert_array_equal(off.normalize(far), far.astype(np.float32))
