#!/usr/bin/env bash
# `make bench`: print the benchmark figures (not a test). Everything runs on 127.0.0.1.
#   ./scripts/bench.sh                 all benchmarks
#   ./scripts/bench.sh --quick         shorter data-plane runs
#   BENCH=dataplane ./scripts/bench.sh only the data-plane benchmark (BENCH=crypto: only crypto)
#   The re-encryption job benchmark runs with BENCH=all (the default) or BENCH=reencryption.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/bootstrap.sh dev
./scripts/services.sh

# wrk (Debian package) drives the HTTP load; without it the benchmark uses Python threads.
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null; } \
    || echo "(wrk could not be installed: the HTTP load comes from Python threads)"
fi

BENCH="${BENCH:-all}"
if [ "$BENCH" != dataplane ] && [ -f bench/bench_crypto.py ]; then
  echo "==> Record encryption (bench/bench_crypto.py)"
  .venv/bin/python bench/bench_crypto.py
fi
if [ "$BENCH" != crypto ]; then
  echo "==> Data plane: gunicorn + PostgreSQL + moto KMS (bench/bench_dataplane.py)"
  .venv/bin/python -m bench.bench_dataplane "$@"
fi
if [ "$BENCH" = all ] || [ "$BENCH" = reencryption ]; then
  echo "==> Re-encryption job: 10,000 and 100,000 records, PostgreSQL (bench/bench_reencryption.py)"
  .venv/bin/python -m bench.bench_reencryption
fi
