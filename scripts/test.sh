#!/usr/bin/env bash
# `make test`: install what the tests need, run `make lint`, make sure PostgreSQL and Redis run, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/bootstrap.sh dev

# Lint and types first (LINT=0 skips them, e.g. while iterating on one test).
if [ "${LINT:-1}" = 1 ]; then
  BOOTSTRAPPED=1 ./scripts/lint.sh
fi

if [ ! -x /usr/bin/chromium ]; then
  echo "==> Installing Chromium (Debian package) for the browser tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

./scripts/services.sh

echo "==> Running the test suite against PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379)"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "No tests were collected." >&2
fi
exit "$rc"
