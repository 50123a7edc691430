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

# nginx (Debian package) for the front-proxy test, and envsubst (gettext-base) that renders its
# configuration (docker/nginx/entrypoint.sh).
if [ ! -x /usr/sbin/nginx ] || ! command -v envsubst >/dev/null 2>&1; then
  echo "==> Installing nginx and gettext-base (Debian packages) for the front-proxy test"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx gettext-base >/dev/null
  # Only the binary is needed: the tests start their own nginx on loopback ports.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx; then
    $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi

./scripts/services.sh

echo "==> Running the test suite against PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379)"
set +e
# Two processes (pytest-xdist) on this 2-core machine; pytest-django gives each its own
# test database (test_…_gw0, test_…_gw1). PYTEST_WORKERS=0 runs in one process.
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "No tests were collected." >&2
fi
exit "$rc"
