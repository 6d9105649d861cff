"""Reading a run's `metrics.csv`: one row per epoch, written by Lightning's CSV logger
(kfcpo.run.csv_logger continues it on resume), read back by the benchmark and the plots.

Columns are read under kfcpo.metrics_schema's keys: a run folder of an older kfcpo, whose
columns are the bare names (`ep_ret`, `jc`, `w_c`), reads as if written now, and a resumed
one continues its metrics.csv under the schema's keys.

Standard library only, so it costs nothing to import.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from kfcpo.metrics_schema import EPOCH_COLUMN, STEP_KEY, canonical_header, canonical_row
from kfcpo.run.atomic import write_atomic
from kfcpo.run.layout import METRICS_FILE

# Where `kfcpo benchmark` of an older kfcpo kept a run's rows while resuming it; the
# resumed fit continues metrics.csv itself now, but a folder may still hold one.
PRIOR_METRICS_FILE = "metrics.prior.csv"

Row = dict[str, str]


def read_table(path: Path) -> tuple[list[str], list[Row]]:
    """The header and rows of a metrics.csv (none of either if the file does not exist),
    columns under the schema's keys (an older run folder's bare names mapped)."""
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [canonical_row(r) for r in reader]
        return canonical_header(list(reader.fieldnames or [])), rows


def read_rows(path: Path) -> list[Row]:
    """The rows of a metrics.csv (none if the file does not exist)."""
    return read_table(path)[1]


def write_table(path: Path, fields: Sequence[str], rows: Sequence[Row]) -> None:
    """Write a metrics.csv atomically: a crash leaves the old rows or the new ones."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    data = text.getvalue().encode()
    write_atomic(path, lambda f: f.write(data))


def rows_through_epoch(rows: Sequence[Row], epoch: int) -> list[Row]:
    """The rows of epochs up to and including `epoch` (rows without an epoch dropped)."""
    return [r for r in rows if r.get(EPOCH_COLUMN, "") != "" and int(r[EPOCH_COLUMN]) <= epoch]


def cell_value(text: str | None) -> float:
    """A cell as a number; NaN for an empty one (Lightning's CSV leaves a cell empty for
    a metric not logged that epoch)."""
    return float(text) if text not in (None, "") else math.nan


def reached_steps(run_dir: Path) -> float:
    """The largest env-step count in the run's metrics.csv (0 without one)."""
    steps = [float(r[STEP_KEY]) for r in read_rows(run_dir / METRICS_FILE) if r.get(STEP_KEY)]
    return max(steps, default=0.0)


def merge_prior_metrics(run_dir: Path) -> None:
    """Fold a stash of earlier attempts' rows (PRIOR_METRICS_FILE) back into metrics.csv,
    one row per epoch (the latest attempt's wins), and drop the stash."""
    prior = run_dir / PRIOR_METRICS_FILE
    if not prior.is_file():
        return
    by_epoch = {r[EPOCH_COLUMN]: r for r in read_rows(prior) + read_rows(run_dir / METRICS_FILE)}
    rows = sorted(by_epoch.values(), key=lambda r: int(r[EPOCH_COLUMN]))
    fields = sorted({k for r in rows for k in r})  # Lightning's CSVLogger sorts its columns too
    write_table(run_dir / METRICS_FILE, fields, rows)
    prior.unlink()
