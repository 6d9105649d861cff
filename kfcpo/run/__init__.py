"""Persistence in one place: the run folder, and what kfcpo writes into it and reads back.

- `layout`: the names of a run folder's files and the path arithmetic between them.
- `folder`: the refusals and the setup of the folder `kfcpo fit` writes into.
- `atomic`: writing a file so that a crash leaves the old one or the new one.
- `checkpoint`: the checkpoint format, reading, finding and compatibility.
- `resume_rules`: which config keys a resumed run may change.
- `encoding`: what a checkpoint holds that is not a tensor, stored as tensors.
- `checkpoint_io`: Lightning's side of writing checkpoints (atomic, every epoch).
- `metrics`: reading `metrics.csv` rows (and folding a stash older kfcpo left).
- `csv_logger`: the CSV logger that continues a resumed run's `metrics.csv`.
- `history`: finished run folders read back as curves for tables and plots.

The modules import only what they need (`layout`, `atomic` and `metrics` the standard
library alone; only `checkpoint_io` and `csv_logger` load Lightning), so import the
submodules: this package itself imports none of them.
"""
