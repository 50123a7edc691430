#!/usr/bin/env bash
# `make run`: set up and run the whole product on embedded defaults:
#   * the portal (Django runserver, SQLite db.sqlite3, DEBUG on),
#   * a local KMS emulator (moto in server mode on 127.0.0.1:$KMS_PORT) instead of AWS,
#   * Celery tasks run eagerly in the web process, or, with WITH_WORKER=1 and Redis
#     answering on 127.0.0.1:6379, a Celery worker with beat (logs in .local/worker.log).
# Then it plays the customer's AWS side against the emulator (manage.py customer_demo) and
# prints the portal's URL, a login and the five items to paste into "Register a BYOK key".
# It runs until Ctrl-C; if one of its processes exits (the emulator, the worker, the portal)
# it says which, shows the end of its log and stops the others.
#
#   PORT=8001 KMS_PORT=4567 make run     other ports
#   WITH_WORKER=1 make run               real worker + beat (REDIS_DB picks the broker's database, default 0)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

./scripts/bootstrap.sh demo

export DEBUG="${DEBUG:-true}"
# This checkout is a development one from now on: later `manage.py` commands (migrate,
# createsuperuser, makemigrations) read DEBUG=true from .env instead of refusing to start
# without production secrets. .env is git-ignored; exported variables still win.
if [ ! -f .env ]; then
  printf '# Written by make run: this checkout runs on development defaults.\nDEBUG=true\n' > .env
fi
PORT="${PORT:-8000}"
KMS_PORT="${KMS_PORT:-4566}"
LOCAL_EMULATOR="http://127.0.0.1:${KMS_PORT}"
# Every AWS endpoint the portal calls (settings' AWS_*_ENDPOINT_URL; tests/test_run_script.py
# checks that none is missing): KMS, and STS for role mode, which is on when
# PLATFORM_AWS_PRINCIPAL_ARN is set (README, "Role mode under make run").
export AWS_KMS_ENDPOINT_URL="${AWS_KMS_ENDPOINT_URL:-$LOCAL_EMULATOR}"
export AWS_STS_ENDPOINT_URL="${AWS_STS_ENDPOINT_URL:-$LOCAL_EMULATOR}"
# Nothing of this run may reach real AWS with someone's own credentials.
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
export PYTHONUNBUFFERED=1
mkdir -p .local
ITEMS=.local/customer-demo.json

# Each process runs in a session of its own (setsid: its id is its process group's id), so
# that stopping it stops its children too (runserver's autoreloader, the worker's beat).
pids=()
names=()  # what each of pids is, for the message when one exits
logs=()   # where its output went ("" = this terminal)
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_free() {
  .venv/bin/python - "$1" <<'PY'
import socket, sys
s = socket.socket()
# As a server binds (runserver, moto): connections of an earlier run waiting out TIME_WAIT
# on the port do not make it busy; a listener does.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}
require_port() {  # require_port PORT VARIABLE WHAT
  if ! port_free "$1"; then
    echo "" >&2
    echo "Port $1 on 127.0.0.1 is already in use, so $3 cannot start there." >&2
    echo "Stop whatever uses it (another \`make run\`? see: ss -ltnp 'sport = :$1'), or pick another port:" >&2
    echo "    $2=$(( $1 + 1 )) make run" >&2
    exit 1
  fi
}
wait_http() {  # wait_http URL SECONDS PID: 0 once URL answers 200, 1 on timeout or if PID exits
  .venv/bin/python - "$1" "$2" "$3" <<'PY'
import os, sys, time, urllib.request
url, seconds, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit(1)
PY
}

require_port "$PORT" PORT "the portal"
if [ "$AWS_KMS_ENDPOINT_URL" = "$LOCAL_EMULATOR" ] || [ "$AWS_STS_ENDPOINT_URL" = "$LOCAL_EMULATOR" ]; then
  require_port "$KMS_PORT" KMS_PORT "the local KMS emulator"
  # The emulator does not enforce IAM policies, so every DryRun succeeds there and the
  # validation's excess-privilege check would warn about every key: it proves nothing here.
  export VALIDATION_CHECK_EXCESS_PRIVILEGE="${VALIDATION_CHECK_EXCESS_PRIVILEGE:-false}"
  echo "==> Starting the local KMS emulator (moto) on 127.0.0.1:${KMS_PORT} (log: .local/kms-emulator.log)"
  setsid .venv/bin/moto_server -H 127.0.0.1 -p "$KMS_PORT" >.local/kms-emulator.log 2>&1 &
  pids+=($!) names+=("The local KMS emulator (moto on 127.0.0.1:${KMS_PORT})") logs+=(.local/kms-emulator.log)
  if ! wait_http "${LOCAL_EMULATOR}/moto-api/" 30 "${pids[-1]}"; then
    echo "The KMS emulator did not start; its log (.local/kms-emulator.log) ends with:" >&2
    tail -n 20 .local/kms-emulator.log >&2
    exit 1
  fi
fi

echo "==> Preparing the database (SQLite: db.sqlite3)"
.venv/bin/python manage.py migrate --no-input -v0
.venv/bin/python manage.py seed_demo

echo "==> Playing the customer's side in AWS against the emulator (manage.py customer_demo)"
rm -f "$ITEMS"
.venv/bin/python manage.py customer_demo --json-file "$ITEMS"

worker_note="Celery tasks run eagerly in the web process (WITH_WORKER=1 starts a worker and beat)."
if [ "${WITH_WORKER:-0}" = 1 ]; then
  broker="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/${REDIS_DB:-0}}"
  if .venv/bin/python -c "import redis,sys; sys.exit(0 if redis.Redis.from_url(sys.argv[1], socket_timeout=2).ping() else 1)" \
      "$broker" 2>/dev/null; then
    export CELERY_BROKER_URL="$broker"
    echo "==> Starting a Celery worker with beat on ${broker} (log: .local/worker.log)"
    # --pool solo: one task at a time, which suits SQLite's single writer.
    setsid .venv/bin/celery -A portal worker --beat --pool solo -l info --without-mingle --without-gossip \
      --schedule .local/celerybeat-schedule >.local/worker.log 2>&1 &
    pids+=($!) names+=("The Celery worker") logs+=(.local/worker.log)
    worker_note="Celery worker + beat on ${broker} (log: .local/worker.log)."
  else
    echo "==> Redis does not answer at ${broker}: tasks run eagerly in the web process instead." >&2
    worker_note="Celery tasks run eagerly: Redis did not answer at ${broker}."
  fi
fi

echo "==> Starting the portal on http://127.0.0.1:${PORT}/"
setsid .venv/bin/python manage.py runserver "127.0.0.1:${PORT}" &
pids+=($!) names+=("The portal (manage.py runserver)") logs+=("")
if ! wait_http "http://127.0.0.1:${PORT}/healthz" 60 "${pids[-1]}"; then
  echo "The portal did not answer http://127.0.0.1:${PORT}/healthz within 60 s (see the output above)." >&2
  exit 1
fi

{
  echo ""
  echo "  BYOK Portal is ready on http://127.0.0.1:${PORT}/   (ready $(( $(date +%s) - started )) s after make run started)"
  echo "  Sign in as demo / demo-password-1"
  echo "  KMS emulator: ${AWS_KMS_ENDPOINT_URL}   STS (role mode): ${AWS_STS_ENDPOINT_URL}"
  if [ -n "${PLATFORM_AWS_PRINCIPAL_ARN:-}" ]; then
    echo "  Role mode is on for ${PLATFORM_AWS_PRINCIPAL_ARN} (customer_demo --role <environment ID>)."
  fi
  echo "  ${worker_note}"
  echo ""
  echo "  Then: New environment › open it › Register a BYOK key, and paste these five items"
  echo "  (also in ${ITEMS}):"
  echo ""
  .venv/bin/python - "$ITEMS" <<'PY'
import json, sys
items = json.load(open(sys.argv[1]))
width = max(map(len, items))
for label, value in items.items():
    print(f"    {label.ljust(width)}  {value}")
PY
  echo ""
  echo "  Stop with Ctrl-C."
  echo ""
} 2>&1

# Until Ctrl-C, or until one of the processes exits: then say which, and stop the others.
# The emulator is not restarted: a new one starts empty, so every key registered so far
# would be unknown to it (validation and BYOK reads would fail with not_found); `make run`
# again starts the whole set afresh.
wait -n || true
for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[$i]}" 2>/dev/null; then
    status=0
    wait "${pids[$i]}" || status=$?
    {
      echo ""
      echo "${names[$i]} exited (status ${status}), so make run stops everything."
      if [ -n "${logs[$i]}" ]; then
        echo "Its log (${logs[$i]}) ends with:"
        tail -n 15 "${logs[$i]}" | sed 's/^/    /'
      fi
      echo "Start again with: make run"
    } >&2
  fi
done
exit 1
