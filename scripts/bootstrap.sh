#!/usr/bin/env bash
# Create .venv and install the locked Python packages (again only when the lock changed).
#   scripts/bootstrap.sh dev    requirements/dev.txt: production + demo + test and lint tools (make test, make lint)
#   scripts/bootstrap.sh demo   requirements/demo.txt: production + the KMS emulator (make run)
#   scripts/bootstrap.sh prod   requirements/prod.txt: what production runs (docker/Dockerfile)
# The locks pin every package with its hashes (uv pip compile; `make lock` updates them), so
# every machine installs the same files and nothing is re-resolved here.
set -euo pipefail
cd "$(dirname "$0")/.."
lockname="${1:-dev}"
lock="requirements/${lockname}.txt"
if [ ! -f "$lock" ]; then
  echo "No lock file $lock (choose prod, demo or dev)." >&2
  exit 2
fi
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> Creating virtualenv in .venv"
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$lockname-$(cat "$lock" requirements/uv.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  # uv installs the locked wheels in seconds where pip takes minutes; it is itself pinned by hash.
  if ! .venv/bin/python -m uv --version 2>/dev/null | grep -qxF "uv $(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements/uv.txt)"; then
    echo "==> Installing uv (requirements/uv.txt)"
    .venv/bin/python -m pip install --quiet --require-hashes --no-deps -r requirements/uv.txt
  fi
  echo "==> Installing Python packages ($lock)"
  # `install`, not `sync`: packages someone added to this .venv by hand stay.
  .venv/bin/python -m uv pip install --quiet --python .venv/bin/python --require-hashes -r "$lock"
  rm -f .venv/.installed-"$lockname"-*
  touch "$stamp"
fi
