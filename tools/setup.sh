#!/usr/bin/env bash
# Create or update the project's virtual environment at .venv (repo root).
# Every install step is constrained by requirements.lock (pip -c): the exact tested version
# of everything installed, direct and transitive, test tools and setuptools included, so a
# fresh machine gets the stack the tests passed on. requirements.txt lists the direct needs.
# Idempotent: when requirements.txt, requirements.lock, pyproject.toml and this script are
# unchanged since the last successful run, it returns in well under a second.
#
#   bash tools/setup.sh            set up .venv (KFCPO_VENV=/some/dir sets up a venv there instead)
#   bash tools/setup.sh --relock   resolve requirements.txt afresh (no lock) in a throwaway venv
#                                  and rewrite requirements.lock from its pip freeze
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KFCPO_VENV:-$ROOT/.venv}"
LOCK="$ROOT/requirements.lock"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

# install_stack VENV [extra pip options, e.g. -c LOCK]: the dependencies, in this order.
install_stack() {
  local venv="$1"
  shift
  [[ -x "$venv/bin/python" ]] || "$PY" -m venv "$venv"
  local pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q "$@")
  # torch first, pinned: the CPU build where pip's find-links hold it (the CI machines); an
  # unpinned torch would pull the newest multi-GB CUDA build.
  "${pip[@]}" "torch==2.13.0"
  "${pip[@]}" -r "$ROOT/requirements.txt"
  # safety-gymnasium 1.0.0 hard-pins gymnasium 0.28.1, mujoco 2.3.3 and pygame 2.1.0 (no
  # wheel for 3.11); its real needs are satisfied above, so install it without its pins.
  "${pip[@]}" --no-deps "safety-gymnasium==1.0.0"
}

if [[ $# -gt 1 || ( $# -eq 1 && "$1" != "--relock" ) ]]; then
  echo "usage: bash tools/setup.sh [--relock]" >&2
  exit 2
fi
if [[ "${1:-}" == "--relock" ]]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  install_stack "$tmp/venv"
  {
    cat <<'EOF'
# The exact tested stack, direct and transitive (Python 3.11, Linux x86_64).
# tools/setup.sh installs every step with `-c requirements.lock`, so nothing floats.
# Do not edit by hand: change requirements.txt, then `bash tools/setup.sh --relock`
# (a fresh unconstrained install in a throwaway venv, then pip freeze; see README).
# torch==2.13.0 resolves to the CPU build 2.13.0+cpu; safety-gymnasium is installed with
# --no-deps (its own pins gymnasium 0.28.1 / mujoco 2.3.3 / pygame 2.1.0 are not met).
EOF
    # --all: setuptools too (torch needs it, so it is upgraded in the venv); pip is the venv's
    # own and not installed here. The local label (+cpu) is dropped: the pin is torch==2.13.0.
    "$tmp/venv/bin/python" -m pip freeze --all --exclude-editable | grep -v '^pip==' |
      sed -E 's/^torch==([^+]+)\+cpu$/torch==\1/'
  } > "$tmp/requirements.lock"
  mv "$tmp/requirements.lock" "$LOCK"
  echo "wrote $LOCK; review it (git diff), then run: bash tools/setup.sh && bash tools/test.sh"
  exit 0
fi

[[ -f "$LOCK" ]] || { echo "error: $LOCK is missing (bash tools/setup.sh --relock makes one)" >&2; exit 1; }
STAMP="$VENV/.kfcpo-setup"
digest="$(cat "$ROOT/requirements.txt" "$LOCK" "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
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
install_stack "$VENV" -c "$LOCK"
# Built with the venv's own (locked) setuptools, not a newest one fetched for an isolated build.
"$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$ROOT"
echo "$digest" > "$STAMP"
