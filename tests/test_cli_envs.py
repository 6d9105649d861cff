"""`kfcpo envs [TEXT]`: the registered env ids, filtered; a filter that matches nothing
is a one-line error; a closed stdout (`kfcpo envs | head`) ends quietly."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfcpo import cli
from kfcpo.cli import EXIT_BROKEN_PIPE, EXIT_CONFIG, main
from kfcpo.envs import env_ids


def test_lists_every_id_or_those_containing_the_text(capsys) -> None:
    assert main(["envs"]) == 0
    assert capsys.readouterr().out.splitlines() == env_ids()
    assert main(["envs", "pointgoal1"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert "SafetyPointGoal1-v0" in listed and all("pointgoal1" in i.lower() for i in listed)
    assert len(listed) < len(env_ids())


def test_text_matching_nothing_is_one_error_line(capsys) -> None:
    assert main(["envs", "NoSuchTask"]) == EXIT_CONFIG
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("kfcpo: error: envs: no env id contains 'NoSuchTask'; ")
    assert captured.err.count("\n") == 1


def test_a_closed_stdout_ends_quietly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def reader_gone(text: str | None) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_print_env_ids", reader_gone)
    with open(tmp_path / "stdout", "w") as stdout:  # a real file descriptor for the redirect
        monkeypatch.setattr("sys.stdout", stdout)
        assert main(["envs"]) == EXIT_BROKEN_PIPE
    assert capsys.readouterr().err == ""
