"""The CSV logger of a run: Lightning's, continuing a resumed run's `metrics.csv`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment

from kfcpo.run.layout import METRICS_FILE
from kfcpo.run.metrics import read_table, rows_through_epoch, write_table

# Lightning's CSVLogger writes <save_dir>/<name>/<version>/metrics.csv; empty name and
# version put it straight into the run folder.
FLAT = {"name": "", "version": ""}
# The kept rows' copy while Lightning's writer starts (see ContinuedCSVLogger).
KEPT_SUFFIX = ".kept"


class ContinuedCSVLogger(CSVLogger):
    """A CSVLogger that continues a run's metrics.csv instead of deleting it.

    Lightning's CSV writer removes an existing metrics.csv when it starts. Resuming in
    the same folder, the rows of the epochs the checkpoint covers are written back first;
    rows of later epochs (logged before a crash, after the checkpoint) are dropped, since
    the resumed run logs those epochs again. Between the delete and the write-back the
    rows live in `metrics.csv.kept`, so a run killed in that instant loses none: the next
    resume reads them from there. The kept rows are read under kfcpo.metrics_schema's keys,
    so an older run folder (bare column names) continues under the schema's names.
    """

    def __init__(self, save_dir: str, keep_through_epoch: int) -> None:
        super().__init__(save_dir=save_dir, **FLAT)
        path = Path(save_dir) / METRICS_FILE
        self._kept = path.with_name(path.name + KEPT_SUFFIX)
        header, rows = read_table(self._kept if self._kept.is_file() else path)
        # Sorted as Lightning's writer keeps its columns (it writes each new row in that
        # order): an older run's columns, renamed to the schema's keys, are not any more.
        self._header, self._rows = sorted(header), rows_through_epoch(rows, keep_through_epoch)

    @property
    @rank_zero_experiment  # other ranks get Lightning's dummy and write nothing
    def experiment(self) -> Any:
        """Lightning's experiment writer, started with the kept rows in its file."""
        if self._experiment is None:
            if self._header:
                write_table(self._kept, self._header, self._rows)
            writer = super().experiment  # deletes metrics.csv: write the kept rows back
            if self._header:
                write_table(Path(writer.metrics_file_path), self._header, self._rows)
                writer.metrics_keys = list(self._header)
                self._kept.unlink()
        return self._experiment


def csv_logger(out_dir: Path, resumed_epoch: int | None = None) -> CSVLogger:
    """The run's CSV logger: a fresh metrics.csv, or (`resumed_epoch`: the last epoch the
    resumed checkpoint covers) the folder's own continued through that epoch."""
    if resumed_epoch is None:
        return CSVLogger(save_dir=str(out_dir), **FLAT)
    return ContinuedCSVLogger(str(out_dir), resumed_epoch)
