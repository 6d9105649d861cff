"""What every report a tool writes says about where its numbers come from: the code
and the time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from kfcpo.version import RUN_CODE, RUN_INFO_KEYS, SOURCE_ROOT, git_commit, short_commit, version

GIT_COMMIT_KEY = RUN_INFO_KEYS[1]  # where a run's config.yaml records the commit that made it


def code_version() -> str:
    """The git commit of the code the runs execute, flagged when kfcpo/, registry/ or
    conf/ differ from it (a report's own tool edits do not change a run)."""
    commit = git_commit()
    if commit is None:
        return f"kfcpo {version()} from {SOURCE_ROOT} (not a git checkout)"
    full, _, modified = commit.partition("+")
    changes = " with uncommitted changes to " + ", ".join(RUN_CODE) if modified else ""
    return f"git commit {short_commit(full)}{changes}"


def runs_code(configs: Iterable[dict]) -> str:
    """The code the runs themselves record (each config.yaml's commit), most runs first,
    e.g. "runs made at git commit ec874ca (9 runs), 7843ffb (3 runs); report written at
    git commit 54d6647". A report written later or from another checkout than the one that
    trained must not pass its own commit off as the runs'. Runs that record none (made
    before runs recorded it, or from an installed kfcpo) are counted as unrecorded; with
    no run recording a commit it is `code_version()` alone."""
    counts = Counter(config.get(GIT_COMMIT_KEY) for config in configs)
    recorded = [(c, n) for c, n in counts.most_common() if c]
    if not recorded:
        return code_version()
    parts = []
    for commit, n in recorded:
        full, _, modified = str(commit).partition("+")
        flag = " with uncommitted changes" if modified else ""
        parts.append(f"{short_commit(full)}{flag} ({n} run{'s' * (n != 1)})")
    if counts.get(None):
        parts.append(f"not recorded ({counts[None]} run{'s' * (counts[None] != 1)})")
    return f"runs made at git commit {', '.join(parts)}; report written at {code_version()}"


def timestamp() -> str:
    """The local date and time with its zone, as reports print it."""
    return f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
