#!/usr/bin/env bash
# Create or update the project's virtual environment at .venv (repo root).
# Idempotent: when requirements.txt, pyproject.toml and this script are unchanged
# since the last successful run, it returns in well under a second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
STAMP="$VENV/.kfcpo-setup"
digest="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$digest" ]]; then
  exit 0
fi
# Headless MuJoCo rendering needs an EGL driver (Debian: libegl1 + Mesa); install it
# only when it is missing and we may (root with apt), otherwise leave it to the user.
if ! ldconfig -p 2>/dev/null | grep -q "libEGL.so.1"; then
  if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
  else
    echo "note: no libEGL found; headless rendering (videos) needs libegl1 and Mesa" >&2
  fi
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# torch first, pinned: 2.13.0 is the CPU build; an unpinned torch pulls a multi-GB CUDA build.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -r "$ROOT/requirements.txt"
# safety-gymnasium 1.0.0 hard-pins gymnasium 0.28.1, mujoco 2.3.3 and pygame 2.1.0 (no
# wheel for 3.11); its real needs are satisfied above, so install it without its pins.
"${PIP[@]}" --no-deps "safety-gymnasium==1.0.0"
"${PIP[@]}" --no-deps -e "$ROOT"
echo "$digest" > "$STAMP"
