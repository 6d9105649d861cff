"""Moved to `kfcpo bench presets`; this shim keeps `python tools/bench_presets.py` (cited in
docs/algorithm.md) working with the same flags until those citations name the command."""

import sys

from kfcpo.cli import main

sys.exit(main(["bench", "presets", *sys.argv[1:]]))
