"""The metrics schema: every key namespaced and declared once, every component's keys
declared, and run folders of an older kfcpo (bare column names) read and continued under
the schema's keys."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from kfcpo.blender import cpo, margin, pcpo, penalty, pid_multiplier
from kfcpo.guard import line_search
from kfcpo.metrics_schema import (
    BLENDER,
    CURVE_METRICS,
    EPISODE_COST,
    EPISODE_RETURN,
    GUARD,
    LEGACY_ALIASES,
    NAMESPACES,
    SCHEMA,
    STEP_KEY,
    canonical_row,
)
from kfcpo.run.csv_logger import ContinuedCSVLogger
from kfcpo.run.history import read_run
from kfcpo.run.metrics import reached_steps, read_rows
from kfcpo.tools.ablate import DIAGNOSTICS
from kfcpo.tools.results import final_value

# A metrics.csv as kfcpo wrote it before the schema (columns of a real old run folder).
OLD_HEADER = ["committed_frac", "critic_loss", "critic_s", "env_steps", "ep_cost", "ep_len", "ep_ret",
              "episodes", "epoch", "jc", "kl", "log_std", "rollback_frac", "rollout_s", "step", "steps_per_s",
              "update_s", "w_c"]


def old_rows(epochs: int) -> list[dict[str, str]]:
    return [{k: str(float(e + 1)) for k in OLD_HEADER} | {"epoch": str(e), "step": str(e),
                                                          "env_steps": str(100.0 * (e + 1))}
            for e in range(epochs)]


def write_old_run(folder: Path, epochs: int = 3) -> Path:
    folder.mkdir(parents=True)
    config = {"algorithm": "kfcpo", "env": {"id": "E"}, "seed": 0, "cost_limit": 25.0}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    with open(folder / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=OLD_HEADER)
        writer.writeheader()
        writer.writerows(old_rows(epochs))
    return folder


def test_every_key_is_namespaced_and_described() -> None:
    for key, metric in SCHEMA.items():
        assert key == metric.key and metric.namespace in NAMESPACES, key
        assert metric.meaning and metric.unit, key
    # One key per old name: an old column never splits into two.
    assert len(LEGACY_ALIASES) == len({m.legacy for m in SCHEMA.values()})


@pytest.mark.parametrize(
    ("namespace", "keys"),
    [(BLENDER, margin.METRIC_KEYS), (BLENDER, cpo.METRIC_KEYS), (BLENDER, pcpo.METRIC_KEYS),
     (BLENDER, penalty.METRIC_KEYS), (BLENDER, pid_multiplier.METRIC_KEYS), (GUARD, line_search.METRIC_KEYS)],
)
def test_component_keys_are_declared(namespace: str, keys: tuple[str, ...]) -> None:
    assert {f"{namespace}/{k}" for k in keys} <= set(SCHEMA)


def test_old_and_new_names_in_one_row_keep_the_value() -> None:
    assert canonical_row({"ep_ret": "1", "episode/return": ""}) == {"episode/return": "1"}
    assert canonical_row({"ep_ret": "1", "episode/return": "2"}) == {"episode/return": "2"}
    assert canonical_row({"epoch": "0", "other": "x"}) == {"epoch": "0", "other": "x"}


def test_an_old_run_folder_reads_under_the_schema_keys(tmp_path: Path) -> None:
    run = read_run(write_old_run(tmp_path / "old"))
    assert run.steps.tolist() == [100.0, 200.0, 300.0]
    for key, _ in CURVE_METRICS:
        assert run.metrics[key].tolist() == [1.0, 2.0, 3.0]
    assert final_value(run, EPISODE_RETURN) == 3.0 and final_value(run, EPISODE_COST) == 3.0
    for key in DIAGNOSTICS:
        assert run.metrics[key].tolist() == [1.0, 2.0, 3.0], key
    assert not set(run.metrics) & set(LEGACY_ALIASES)
    assert reached_steps(tmp_path / "old") == 300.0


def test_an_old_run_resumed_continues_under_the_schema_keys(tmp_path: Path) -> None:
    folder = write_old_run(tmp_path / "old")
    logger = ContinuedCSVLogger(str(folder), keep_through_epoch=1)
    logger.log_metrics({STEP_KEY: 300.0, EPISODE_RETURN: 7.0}, step=2)
    logger.save()
    with open(folder / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        header, rows = list(reader.fieldnames or []), list(reader)
    assert not set(header) & set(LEGACY_ALIASES), header  # kept rows rewritten, no old column
    assert [r["epoch"] for r in rows] == ["0", "1", ""]  # epochs through the checkpoint, then the new row
    assert [float(r[EPISODE_RETURN]) for r in rows] == [1.0, 2.0, 7.0]
    assert [float(r[STEP_KEY]) for r in read_rows(folder / "metrics.csv")] == [100.0, 200.0, 300.0]
