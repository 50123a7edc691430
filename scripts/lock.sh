#!/usr/bin/env bash
# `make lock`: re-resolve requirements/*.txt from pyproject.toml, every file with its sha256 hashes.
#   make lock                 keep the pinned versions that still satisfy pyproject.toml
#   UPGRADE=1 make lock       move every package to its newest allowed version
# The locks are universal (any OS/architecture, Python 3.11) and resolved against PyPI
# (UV_INDEX_URL picks another registry); they name no index, so an install uses whatever
# registry that machine is configured for, and the hashes make sure it gets the same files.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh dev >/dev/null 2>&1 || {
  # First lock on a machine without .venv or with a broken lock: uv alone is enough.
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install --quiet --require-hashes --no-deps -r requirements/uv.txt
}
upgrade=()
[ "${UPGRADE:-0}" = 1 ] && upgrade=(--upgrade)
compile() {  # compile OUTPUT [uv pip compile arguments...]
  local out=$1; shift
  echo "==> $out"
  .venv/bin/python -m uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    "${upgrade[@]}" --custom-compile-command "make lock" -o "$out" "$@"
}
compile requirements/prod.txt pyproject.toml
compile requirements/demo.txt pyproject.toml --extra demo
compile requirements/dev.txt pyproject.toml --extra dev
compile requirements/uv.txt requirements/uv.in
