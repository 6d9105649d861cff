"""What every report a tool writes says about where its numbers come from: the code
and the time."""

from __future__ import annotations

from datetime import datetime

from kfcpo.version import RUN_CODE, SOURCE_ROOT, git_commit, short_commit, version


def code_version() -> str:
    """The git commit of the code the runs execute, flagged when kfcpo/, registry/ or
    conf/ differ from it (a report's own tool edits do not change a run)."""
    commit = git_commit()
    if commit is None:
        return f"kfcpo {version()} from {SOURCE_ROOT} (not a git checkout)"
    full, _, modified = commit.partition("+")
    changes = " with uncommitted changes to " + ", ".join(RUN_CODE) if modified else ""
    return f"git commit {short_commit(full)}{changes}"


def timestamp() -> str:
    """The local date and time with its zone, as reports print it."""
    return f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
