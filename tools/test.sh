#!/usr/bin/env bash
# Set up (or update) .venv, then run the whole test suite, slow tests included.
# Developers can skip the slow ones locally: bash tools/test.sh -m "not slow"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup.sh"
cd "$ROOT"
.venv/bin/ruff check kfcpo tests tools
exec .venv/bin/python -m pytest -q "$@"
