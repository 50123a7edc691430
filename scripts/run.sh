#!/usr/bin/env bash
# `make run`: set up and run the portal on embedded defaults: SQLite, Celery tasks run
# eagerly, and a local KMS emulator (moto in server mode) on loopback instead of AWS.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/bootstrap.sh dev

export DEBUG="${DEBUG:-true}"
PORT="${PORT:-8000}"
KMS_PORT="${KMS_PORT:-4566}"
export AWS_KMS_ENDPOINT_URL="${AWS_KMS_ENDPOINT_URL:-http://127.0.0.1:${KMS_PORT}}"
mkdir -p .local

if [ "$AWS_KMS_ENDPOINT_URL" = "http://127.0.0.1:${KMS_PORT}" ]; then
  echo "==> Starting the local KMS emulator (moto) on 127.0.0.1:${KMS_PORT}"
  .venv/bin/moto_server -H 127.0.0.1 -p "$KMS_PORT" >.local/kms-emulator.log 2>&1 &
  emulator=$!
  trap 'kill $emulator 2>/dev/null || true' EXIT
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/${KMS_PORT}") 2>/dev/null && break
    sleep 0.2
  done
fi

echo "==> Preparing the database (SQLite: db.sqlite3)"
.venv/bin/python manage.py migrate --no-input -v0
.venv/bin/python manage.py seed_demo

if .venv/bin/python manage.py help customer_demo >/dev/null 2>&1; then
  echo "==> Playing the customer's side in AWS against the emulator"
  .venv/bin/python manage.py customer_demo
fi

cat <<MSG

  BYOK Portal is starting on http://127.0.0.1:${PORT}/
  Sign in as demo / demo-password-1
  KMS emulator: ${AWS_KMS_ENDPOINT_URL}
  Stop with Ctrl-C.

MSG
.venv/bin/python manage.py runserver "127.0.0.1:${PORT}"
