#!/usr/bin/env bash
# `make lint`: ruff (lint rules in pyproject.toml [tool.ruff]) and mypy with django-stubs
# ([tool.mypy]: the typed modules, strict). Also run by scripts/test.sh before pytest.
#   ./scripts/lint.sh --fix     let ruff fix what it can (imports, pyupgrade) first
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${BOOTSTRAPPED:-0}" = 1 ] || ./scripts/bootstrap.sh dev

echo "==> ruff check"
.venv/bin/ruff check "$@" .
echo "==> mypy ($(.venv/bin/python -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml","rb"))["tool"]["mypy"]["files"]))'))"
# django-stubs imports portal.settings: development defaults, nothing production-only needed.
DEBUG=true SECRET_KEY=lint-only .venv/bin/mypy
