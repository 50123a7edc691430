"""gunicorn configuration for the benchmark: each worker writes its counters to
$BENCH_STATS_DIR/worker-<pid>.json when it exits, so the benchmark can count KMS
Decrypt calls per process."""

import json
import os

bind = os.environ.get("BENCH_BIND", "127.0.0.1:8765")
workers = int(os.environ.get("BENCH_WORKERS", "2"))
worker_class = os.environ.get("BENCH_WORKER_CLASS", "gthread")
threads = int(os.environ.get("BENCH_THREADS", "16"))
keepalive = 30
backlog = 2048
accesslog = None
loglevel = "warning"
graceful_timeout = 10
control_socket_disable = True  # as docker/gunicorn.conf.py: no shared ~/.gunicorn/gunicorn.ctl


def worker_exit(server, worker):
    directory = os.environ.get("BENCH_STATS_DIR")
    if not directory:
        return
    from bench.views import worker_stats

    with open(os.path.join(directory, f"worker-{os.getpid()}.json"), "w") as f:
        json.dump(worker_stats(), f)
