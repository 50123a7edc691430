#!/usr/bin/env bash
# Create .venv and install the project's Python packages (again only when pyproject.toml changed).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> Creating virtualenv in .venv"
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "==> Installing Python packages (.[${extras}])"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[${extras}]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
