"""Every config mistake is one line on stderr, exit code 2, no traceback, before any env."""

import subprocess
import sys
from pathlib import Path

import pytest

from kfcpo.cli import EXIT_CONFIG, main
from kfcpo.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
GOAL = str(ROOT / "conf" / "goal.yaml")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["bogus=1"], "bogus: unknown key; valid keys here:"),
        (["env.colour=red"], "env.colour: unknown key; valid keys here:"),
        (["preconditioner.name=kfa"], "preconditioner.name: unknown preconditioner 'kfa'"),
        (["blender.name=nope"], "valid:"),
        (["algorithm=ppo_lagg"], "algorithm: unknown algorithm 'ppo_lagg' (did you mean 'ppo_lag'?)"),
        (["guard.bogus=1"], "guard.bogus: unknown parameter of guard 'early_stop'; valid: name, target_kl"),
        (["guard.target_kl=high"], "guard.target_kl: expected float"),
        (["guard.target_kl=-1.0"], "guard 'early_stop': target_kl: got -1.0"),
        (["seed=abc"], "seed:"),
        (["seed=-1"], "seed: got -1; expected an integer in [0, 2147483647]"),
        ([f"seed={2**31}"], "seed: got 2147483648; expected an integer in [0, 2147483647]"),
        (["gamma=1.5"], "gamma: got 1.5; expected in (0, 1]"),
        (["env.vector=threads"], "env.vector: got 'threads'; expected one of sync, async"),
        (["env.workers=-1"], "env.workers: got -1; expected an integer >= 0 (0 = one worker process"),
        (["env.workers=two"], "env.workers:"),
        (["env.engine=threads"], "env.engine: got 'threads'; expected one of step, worker"),
        (["env.num_envs=3"], "steps_per_epoch: 20000 is not a multiple of env.num_envs=3"),
        (["env.id=SafetyPointButon1-v0"], "env.id: unknown env id 'SafetyPointButon1-v0'"),
        (["trainer.max_epochs=3"], "trainer.max_epochs: set by kfcpo from total_steps / steps_per_epoch"),
        (["trainer.devicez=2"], "trainer.devicez: not an argument of lightning.pytorch.Trainer"),
        (["logger.wandb.mode=sometimes"], "logger.wandb.mode: got 'sometimes'"),
        (["num_envs"], "override 'num_envs': expected key=value"),
        (["logger.wandb=false"], "logger.wandb: got False; expected a section with keys mode, project,"),
        (["env=3"], "env: got 3; expected a section with keys id,"),
        (["model=[64,64]"], "model: got [64, 64]; expected a section with keys"),
        (["model.hidden=[64,"], "override 'model.hidden=[64,': not a valid value ("),
        (["model.hidden=[1]", "model.hidden.x=2"], "overrides: they do not combine ("),
        (["seed=${foo}"], "Interpolation key 'foo' not found; an interpolation names another key"),
        (["cost_limit=inf"], "cost_limit: got inf; expected a finite number"),
        (["env.id="], "env.id: a value is required (nothing after '='); e.g. env.id=SafetyPointGoal1-v0"),
        (["model.hidden=abc"], "model.hidden: expected a list, e.g. model.hidden=[64,64]"),
        (["model.critic_lr=inf"], "model.critic_lr: got inf; expected a finite number"),
        (["guard.target_kl=nan"], "guard.target_kl: got 'nan'; expected a finite number"),
    ],
)
def test_config_errors_are_one_line_with_exit_2(overrides, expected, capsys) -> None:
    code = main(["fit", "--config", GOAL, *overrides])
    err = capsys.readouterr().err
    assert code == EXIT_CONFIG
    assert err.startswith("kfcpo: error: ")
    assert err.count("\n") == 1, err
    assert expected in err, err


def test_unknown_env_lists_close_matches(capsys) -> None:
    main(["fit", "--config", GOAL, "env.id=SafetyPointButon1-v0"])
    assert "SafetyPointButton1-v0" in capsys.readouterr().err


CONFIG_VALID = "expected a YAML file of keys, e.g. conf/button.yaml"


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        ("none.yaml", None, "no such file '{path}'; " + CONFIG_VALID),
        ("conf", "folder", "'{path}' is a folder; " + CONFIG_VALID + " (YAML files there: a.yaml)"),
        ("empty", "empty folder", "'{path}' is a folder; " + CONFIG_VALID),
        ("model.ckpt", b"PK\x03\x04\xff\xfe binary",
         "'{path}' is not a text file (not UTF-8); " + CONFIG_VALID),
        ("broken.yaml", b"env: [1\n", "'{path}' is not valid YAML (line 2, column 1): expected ',' or ']', "
         "but got '<stream end>'"),
        ("notes.txt", b"just a sentence\n",
         "'{path}' must hold a mapping of keys (as conf/button.yaml), not str"),
    ],
    ids=["missing", "folder", "empty folder", "binary", "broken YAML", "not a mapping"],
)
def test_bad_config_file_is_one_line(name, make, problem, capsys, tmp_path) -> None:
    path = tmp_path / name
    if make == "folder":
        path.mkdir()
        (path / "a.yaml").write_text("seed: 1\n")
    elif make == "empty folder":
        path.mkdir()
    elif make is not None:
        path.write_bytes(make)
    before = sorted(tmp_path.rglob("*"))
    assert main(["fit", "--config", str(path), "out_dir=" + str(tmp_path / "run")]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.splitlines() == [f"kfcpo: error: --config: {problem.format(path=path)}"], err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.devices=3"], "steps_per_epoch: 20000 is not a multiple of the 3 ranks"),
        (["trainer.devices=2", "env.num_envs=32"],
         "steps_per_epoch: 10000 per rank (20000 over 2 ranks) is not a multiple of env.num_envs=32"),
    ],
)
def test_rank_split_is_checked_before_the_run_starts(overrides, expected, tmp_path) -> None:
    """With the devices named, checked with the rest of the config: the error is the only
    line, before Lightning starts, and no run folder is made."""
    args = ["fit", "--config", GOAL, "env.vector=sync", "trainer.accelerator=cpu", "trainer.strategy=ddp",
            *overrides, f"out_dir={tmp_path / 'run'}"]
    proc = subprocess.run([sys.executable, "-m", "kfcpo.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("kfcpo: error: ") and expected in line, proc.stderr
    assert not (tmp_path / "run").exists()


def test_rank_split_of_auto_devices_is_checked_once_the_trainer_exists(tmp_path, monkeypatch) -> None:
    """devices 'auto': the world size is only known once the Trainer exists; the error
    then comes before any rank or env starts, and the run folder made is removed again."""
    import kfcpo.train

    real = kfcpo.train.build_trainer

    def three_ranks(*args, **kwargs):
        trainer = real(*args, **kwargs)
        monkeypatch.setattr(type(trainer), "world_size", property(lambda self: 3))
        return trainer

    monkeypatch.setattr(kfcpo.train, "build_trainer", three_ranks)
    cfg, registry = load_config(GOAL, ["env.vector=sync", "env.num_envs=1", "steps_per_epoch=200",
                                       "total_steps=200", "logger.wandb.mode=disabled",
                                       f"out_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match="steps_per_epoch: 200 is not a multiple of the 3 ranks"):
        kfcpo.train.fit(cfg, registry)
    assert not (tmp_path / "run").exists()


def test_cli_process_exits_2_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kfcpo.cli", "fit", "--config", GOAL, "preconditioner.name=kfa"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("kfcpo: error: preconditioner.name")


def test_layers_compose_in_order() -> None:
    cfg, _ = load_config(GOAL, ["env.num_envs=2", "guard.target_kl=0.05"])
    assert cfg.env.id == "SafetyPointGoal1-v0"  # experiment file
    assert cfg.update_iters == 40  # preset (ppo_lag)
    assert cfg.env.num_envs == 2  # command line over file
    assert cfg.guard.target_kl == 0.05  # command line over registry default
    assert cfg.blender.clip == 0.2  # registry default


def test_switching_a_component_resets_its_parameters(tmp_path) -> None:
    extra = tmp_path / "preconditioner"
    extra.mkdir()
    (extra / "plain.yaml").write_text(
        "description: test double\ntarget: kfcpo.preconditioner.identity.Identity\nparams: {lr: 0.5}\n"
    )
    cfg, _ = load_config(
        GOAL, [f"registry_paths=[{tmp_path}]", "preconditioner.lr=0.1", "preconditioner.name=plain"]
    )
    # lr=0.1 was given next to the preset's component in the same layer as the switch:
    # the switch happens first in that layer, then its parameters apply.
    assert cfg.preconditioner.name == "plain"
    assert cfg.preconditioner.lr == 0.1
    cfg, _ = load_config(GOAL, [f"registry_paths=[{tmp_path}]", "preconditioner.name=plain"])
    assert cfg.preconditioner.lr == 0.5


def test_print_config_prints_resolved_yaml(capsys) -> None:
    assert main(["fit", "--config", GOAL, "--print-config", "seed=7"]) == 0
    out = capsys.readouterr().out
    assert "seed: 7" in out
    assert "name: early_stop" in out
