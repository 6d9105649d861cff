"""wandb as its users drive it: WANDB_* environment variables honoured, the config winning
only where it sets a value; seeds of one algorithm and task in one group; the resolved
config, kfcpo version and commit in the run config (read back from an offline run)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import GOAL, ROOT, TINY_FIT
from omegaconf import DictConfig

from kfcpo.cli import main
from kfcpo.config import ConfigError, load_config
from kfcpo.train import build_loggers
from kfcpo.version import run_info, version
from kfcpo.wandb_run import KfcpoWandbLogger, default_group, resolve

TINY = TINY_FIT
NO_KEY: dict[str, str] = {}  # an environment without WANDB_* (and no API key: auto is offline)


@pytest.fixture(autouse=True)
def no_netrc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `auto` looks for an API key in ~/.netrc too: a developer's own must not decide these tests.
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(name)


def config(*overrides: str) -> DictConfig:
    cfg, _ = load_config(GOAL, [*TINY, *overrides], check_env=False)
    return cfg


def test_wandb_mode_disabled_turns_off_an_auto_config(tmp_path: Path) -> None:
    assert resolve(config(), tmp_path, {"WANDB_MODE": "disabled"}) is None
    assert resolve(config(), tmp_path, NO_KEY).mode == "offline"  # auto without an API key
    assert resolve(config(), tmp_path, {"WANDB_API_KEY": "x" * 40}).mode == "online"


@pytest.mark.parametrize(
    ("configured", "env", "expected"),
    [
        ("auto", "offline", "offline"),
        ("auto", "online", "online"),
        ("auto", "dryrun", "offline"),  # wandb's older spelling
        ("offline", "disabled", "offline"),  # set in the config: the config wins
        ("online", "offline", "online"),
        ("disabled", "online", None),
    ],
)
def test_mode_precedence(tmp_path: Path, configured: str, env: str, expected: str | None) -> None:
    setup = resolve(config(f"logger.wandb.mode={configured}"), tmp_path, {"WANDB_MODE": env})
    assert (setup.mode if setup else None) == expected


def test_a_mode_wandb_would_refuse_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    with pytest.raises(ConfigError, match=r"^WANDB_MODE: got 'sometimes'; expected one of online, "):
        resolve(config(), tmp_path, {"WANDB_MODE": "sometimes"})
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    out = tmp_path / "run"
    assert main(["fit", "--config", GOAL, *TINY, f"out_dir={out}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kfcpo: error: WANDB_MODE: got 'sometimes'")
    assert not out.exists()


def test_environment_fills_what_the_config_leaves_unset(tmp_path: Path) -> None:
    env = {"WANDB_PROJECT": "robots", "WANDB_ENTITY": "lab", "WANDB_RUN_GROUP": "sweep-3",
           "WANDB_TAGS": "nightly, point ,", "WANDB_DIR": str(tmp_path / "wb"), "WANDB_MODE": "offline"}
    setup = resolve(config(), tmp_path / "run", env)
    assert setup.init_kwargs() == {
        "mode": "offline", "project": "robots", "entity": "lab", "group": "sweep-3",
        "tags": ["nightly", "point"], "dir": str(tmp_path / "wb"),
    }
    explicit = config("logger.wandb.project=mine", "logger.wandb.entity=me", "logger.wandb.group=g",
                      "logger.wandb.tags=[t]")
    setup = resolve(explicit, tmp_path / "run", env)
    assert (setup.project, setup.entity, setup.group, setup.tags) == ("mine", "me", "g", ["t"])
    assert setup.dir == str(tmp_path / "wb")  # no config key for it: WANDB_DIR or the run folder


def test_seeds_of_one_algorithm_and_task_share_a_group(tmp_path: Path) -> None:
    groups = {resolve(config(f"seed={s}"), tmp_path, NO_KEY).group for s in range(3)}
    assert groups == {"ppo_lag-SafetyPointGoal1-v0"} == {default_group(config())}
    assert resolve(config("algorithm=cpo"), tmp_path, NO_KEY).group == "cpo-SafetyPointGoal1-v0"
    defaults = resolve(config(), tmp_path / "run", NO_KEY)
    assert (defaults.project, defaults.entity, defaults.tags, defaults.dir) == (
        "kfcpo", None, [], str(tmp_path / "run"))


def test_loggers_follow_wandb_mode(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert [type(lg).__name__ for lg in build_loggers(config(), tmp_path)] == ["CSVLogger"]
    monkeypatch.setenv("WANDB_MODE", "offline")
    loggers = build_loggers(config(), tmp_path)
    assert isinstance(loggers[-1], KfcpoWandbLogger)
    assert "anonymous" not in loggers[-1]._wandb_init  # deprecated in wandb: never passed


# ------------------------------------------------------------ an offline run, read back
BLOCK = 32768  # the .wandb file is a LevelDB-style log of protobuf records in 32 KiB blocks


def wandb_records(path: Path) -> Iterator[object]:
    """The records of an offline run's `run-<id>.wandb` (wandb 0.31 no longer ships a reader)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, chunks = 7, b""  # after the 7-byte file header
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunks += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a record is complete
            record = pb.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


@pytest.mark.slow
def test_offline_run_records_env_settings_group_config_and_version(tmp_path: Path) -> None:
    run, wandb_dir = tmp_path / "run", tmp_path / "wb"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_MODE="offline", WANDB_PROJECT="robots", WANDB_TAGS="a,b",
               WANDB_DIR=str(wandb_dir), WANDB_SILENT="true")
    proc = subprocess.run(
        [sys.executable, "-m", "kfcpo.cli", "fit", "--config", GOAL, *TINY, "seed=4", f"out_dir={run}"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "anonymous" not in proc.stdout + proc.stderr
    assert not (run / "wandb").exists()  # WANDB_DIR, not the run folder
    (log,) = wandb_dir.glob("wandb/offline-run-*/run-*.wandb")
    records = list(wandb_records(log))
    (header,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (header.project, header.run_group, list(header.tags)) == (
        "robots", "ppo_lag-SafetyPointGoal1-v0", ["a", "b"])
    logged = {item.key: json.loads(item.value_json) for item in header.config.update}
    for r in records:  # later config updates, if any
        if r.WhichOneof("record_type") == "config":
            logged.update({item.key: json.loads(item.value_json) for item in r.config.update})
    assert logged["algorithm"] == "ppo_lag" and logged["seed"] == 4
    assert logged["env"]["id"] == "SafetyPointGoal1-v0" and logged["steps_per_epoch"] == 200
    assert logged["logger"]["wandb"]["mode"] == "auto"  # the resolved config, as given
    assert {k: logged[k] for k in run_info()} == run_info()
    assert logged["kfcpo_version"] == version()
    assert "config" not in logged  # the hyperparameters are not logged a second time, nested
    assert f"kfcpo_version: {version()}" in (run / "config.yaml").read_text()
