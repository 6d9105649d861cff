"""Which kfcpo made a run: the version (pyproject.toml's, the one source of truth) and,
for a source checkout, the git commit. Light on purpose: `kfcpo --version` and every
run read it, and neither should wait on torch."""

from __future__ import annotations

import functools
import re
import subprocess
from importlib import metadata
from pathlib import Path

DIST_NAME = "kfcpo"
UNKNOWN_VERSION = "0+unknown"
# The package's parent: in a source checkout, the repository root (pyproject.toml, .git).
SOURCE_ROOT = Path(__file__).resolve().parents[1]
# The code whose changes change a run: a commit with edits here is flagged as modified.
RUN_CODE = ("kfcpo", "registry", "conf")
# What a run's config.yaml records beside the resolved config. Not config keys: `kfcpo fit
# --config` drops them from a file, so a run's config.yaml can be given back as --config.
RUN_INFO_KEYS = ("kfcpo_version", "kfcpo_git_commit")
GIT_TIMEOUT_S = 5


# Hex digits of a commit shown where git cannot abbreviate it (or for one line).
SHORT_HASH_LEN = 12

def _pyproject_version(root: Path) -> str | None:
    """The version pyproject.toml declares, if `root` holds kfcpo's own pyproject.toml."""
    import tomllib

    try:
        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return str(project["version"]) if project.get("name") == DIST_NAME and "version" in project else None


@functools.cache
def version() -> str:
    """kfcpo's version: the installed distribution's metadata (written from pyproject.toml
    at install time), else pyproject.toml beside the package (a checkout used without
    installing it), else UNKNOWN_VERSION."""
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        return _pyproject_version(SOURCE_ROOT) or UNKNOWN_VERSION


def _git(*words: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), *words],
            capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def git_commit() -> str | None:
    """The commit of the kfcpo source this process runs, suffixed `+modified` when
    kfcpo/, registry/ or conf/ differ from it; None for an installed (non-checkout) kfcpo.

    Only a `.git` right beside the package counts: an installed kfcpo inside some other
    repository (a venv in a project folder) must not report that project's commit."""
    if not (SOURCE_ROOT / ".git").exists():
        return None
    commit = _git("rev-parse", "HEAD")
    if not commit or not re.fullmatch(r"[0-9a-f]{40,64}", commit):
        return None
    changed = _git("status", "--porcelain", "--", *RUN_CODE)
    return f"{commit}+modified" if changed else commit


def short_commit(commit: str) -> str:
    """git's abbreviation of `commit` (as long as this repository needs, as `git rev-parse
    --short` gives it), else its first 12 hex digits."""
    return _git("rev-parse", "--short", commit) or commit[:SHORT_HASH_LEN]


def run_info() -> dict[str, str | None]:
    """What every run records about the code that made it (keys: RUN_INFO_KEYS)."""
    return dict(zip(RUN_INFO_KEYS, (version(), git_commit()), strict=True))


def describe() -> str:
    """One line for `kfcpo --version`: `kfcpo 0.1.0`, plus the commit of a checkout."""
    commit = git_commit()
    if commit is None:
        return f"{DIST_NAME} {version()}"
    short, _, modified = commit.partition("+")
    return f"{DIST_NAME} {version()} (git {short[:SHORT_HASH_LEN]}{', modified' if modified else ''})"


__version__ = version()
