#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1; start them if installed but stopped.
set -euo pipefail

pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "==> Starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  else
    echo "PostgreSQL is not installed: apt-get install postgresql, or set DATABASE_URL to a reachable server." >&2
  fi
fi
if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "==> Starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
  else
    echo "Redis is not installed: apt-get install redis-server." >&2
  fi
fi
for _ in $(seq 1 30); do
  if pg_up && redis_up; then exit 0; fi
  sleep 1
done
pg_up || { echo "PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }
redis_up || { echo "Redis does not answer on 127.0.0.1:6379" >&2; exit 1; }
