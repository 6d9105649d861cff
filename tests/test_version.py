"""One version, pyproject.toml's: `kfcpo --version`, `kfcpo.__version__`, every run's config.yaml."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

import kfcpo
from kfcpo import version as v
from kfcpo.config import load_config
from kfcpo.run.folder import write_run_config

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_version_is_pyprojects() -> None:
    assert kfcpo.__version__ == v.version() == PYPROJECT_VERSION


def test_version_without_installed_metadata_reads_pyproject(monkeypatch) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(v.metadata, "version", not_installed)
    assert v.version.__wrapped__() == PYPROJECT_VERSION  # a checkout used without installing it
    monkeypatch.setattr(v, "SOURCE_ROOT", ROOT / "kfcpo")  # no pyproject.toml there
    assert v.version.__wrapped__() == v.UNKNOWN_VERSION


def test_cli_version() -> None:
    proc = subprocess.run([sys.executable, "-m", "kfcpo.cli", "--version"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"kfcpo {PYPROJECT_VERSION}")
    assert len(proc.stdout.splitlines()) == 1
    commit = v.git_commit()
    if commit is not None:  # a checkout names its commit
        assert f"(git {commit[:12]}" in proc.stdout


def test_installed_kfcpo_reports_no_commit(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(v, "SOURCE_ROOT", tmp_path)  # no .git beside the package
    assert v.git_commit.__wrapped__() is None


def test_run_config_records_the_version_and_reads_back_as_a_config(tmp_path: Path) -> None:
    cfg, _ = load_config(str(ROOT / "conf" / "goal.yaml"), ["seed=3"], check_env=False)
    path = tmp_path / "config.yaml"
    write_run_config(cfg, path)
    saved = yaml.safe_load(path.read_text())
    assert saved["kfcpo_version"] == PYPROJECT_VERSION
    assert saved["kfcpo_git_commit"] == v.git_commit()
    again, _ = load_config(str(path), check_env=False)  # a run's config.yaml given back as --config
    assert again == cfg


@pytest.mark.parametrize("override", ["kfcpo_version=9.9"])
def test_version_is_not_a_config_key(override: str) -> None:
    from kfcpo.config import ConfigError

    with pytest.raises(ConfigError, match="kfcpo_version: unknown key"):
        load_config(None, [override], check_env=False)
