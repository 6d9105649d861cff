"""The top-level command line: a missing command names the commands, an option before the
command that kfcpo does not have is named as such (argparse would report the missing
command instead), each as one `kfcpo: error:` line with exit code 2."""

from __future__ import annotations

import pytest
from helpers import ERROR_PREFIX

from kfcpo import cli
from kfcpo.cli import EXIT_CONFIG, EXIT_INTERRUPTED, _parser, main
from kfcpo.tools.commands import subcommands


def test_a_missing_command_names_every_command(cli_error) -> None:
    assert main([]) == EXIT_CONFIG
    line = cli_error().removeprefix(ERROR_PREFIX)
    commands = list(subcommands(_parser()))
    assert {"fit", "eval", "benchmark", "bench"} <= set(commands)
    assert line == f"a command is required, one of: {', '.join(commands)}; see 'kfcpo --help'"


@pytest.mark.parametrize("argv", [["--bogus"], ["--bogus", "fit"], ["-x", "registry"]])
def test_an_unknown_option_before_the_command_is_named(argv: list[str], cli_error) -> None:
    assert main(argv) == EXIT_CONFIG
    assert cli_error().removeprefix(ERROR_PREFIX) == (
        f"unrecognized option {argv[0]} before the command; valid: --help, -h, --version "
        "or a command; see 'kfcpo --help'")


def test_the_top_options_still_work(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("kfcpo ")


def test_ctrl_c_ends_with_one_line_and_exit_130(capsys, monkeypatch) -> None:
    def interrupted(family: str | None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_print_registry", interrupted)
    assert main(["registry"]) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "kfcpo: interrupted\n"
