"""What a built wheel holds: every package under kfcpo/ is listed in pyproject.toml (the
list is explicit, so a new sub-package is easy to forget), and what the tools import at
run time is a dependency, not a dev extra."""

from __future__ import annotations

import re
import tomllib

from helpers import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_under_kfcpo_ships() -> None:
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "kfcpo").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_the_tools_needs_are_dependencies() -> None:
    names = {re.split(r"[<>=!~ ]", dep)[0] for dep in PYPROJECT["project"]["dependencies"]}
    assert "matplotlib" in names  # kfcpo plot, benchmark and ablate
