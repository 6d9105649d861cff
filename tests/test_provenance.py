"""A report names the code its runs recorded, not only the code that wrote it."""

from __future__ import annotations

import pytest

from kfcpo.tools import provenance

A, B = "a" * 40, "b" * 40


@pytest.fixture(autouse=True)
def fixed_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provenance, "short_commit", lambda commit: commit[:7])
    monkeypatch.setattr(provenance, "code_version", lambda: "git commit ccccccc")


def test_commits_counted_most_runs_first_then_the_report_own() -> None:
    configs = [{"kfcpo_git_commit": A}, {"kfcpo_git_commit": B}, {"kfcpo_git_commit": B}]
    assert provenance.runs_code(configs) == (
        "runs made at git commit bbbbbbb (2 runs), aaaaaaa (1 run); report written at git commit ccccccc"
    )


def test_modified_and_unrecorded_runs_are_named() -> None:
    configs = [{"kfcpo_git_commit": f"{A}+modified"}, {"seed": 0}, {"kfcpo_git_commit": None}]
    assert provenance.runs_code(configs) == (
        "runs made at git commit aaaaaaa with uncommitted changes (1 run), not recorded (2 runs); "
        "report written at git commit ccccccc"
    )


def test_no_recorded_commit_falls_back_to_the_report_code() -> None:
    assert provenance.runs_code([{"seed": 0}]) == "git commit ccccccc"
    assert provenance.runs_code([]) == "git commit ccccccc"
