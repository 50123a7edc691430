"""Re-encryption benchmark: records/s and peak memory of the re-encryption job for 10,000
and 100,000 records of 1 KiB, in process, against PostgreSQL on 127.0.0.1.

Run from the repository root (``make bench`` does)::

    .venv/bin/python -m bench.bench_reencryption [--sizes 10000,100000] [--batch-size 500]

Prints figures; it is not a test and asserts nothing. For each size, in an environment of
its own:

1. seed: the records are written under platform-managed v1 through the data plane's bulk
   write (``records_put_batch``, 1,000 per call), then a new platform-managed v2 is
   activated;
2. timed run: ``keys.services.reencryption.reencryption_run`` moves every record to v2 with
   throttle 0 and the given batch size; records/s, and the process's peak RSS during the
   job (VmHWM, reset before the job through /proc/self/clear_refs; ``ru_maxrss`` where
   that is not available);
3. traced run: v3 is activated and the records are moved again with ``tracemalloc`` on;
   peak Python allocation during the job (tracing slows Python down: not timed).

Memory is flat when the peaks for 100,000 records are those for 10,000: the job streams
batches by id and never holds more than one batch.

It uses its own database (``byok_bench_reencryption``, dropped and created afresh, dropped
at the end) and a generated sealing key. Platform-managed keys need no KMS: a BYOK
version's data key is cached after one KMS Decrypt, so the job's cost is the same.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

DB_NAME = "byok_bench_reencryption"
RECORD_BODY = {"data": "x" * 1000}  # about 1 KiB of JSON per record
WRITE_CHUNK = 1000


def configure_environment() -> None:
    database_url = os.environ.get("BENCH_DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{DB_NAME}")
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-secret-key",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_COOKIES": "false",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": database_url,
        "SEALING_KEYS": "bench:" + base64.b64encode(os.urandom(32)).decode(),
        "LOG_LEVEL": "WARNING",
    })
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.pop("REDIS_URL", None)


def recreate_database() -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')


def drop_database() -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    url = os.environ["DATABASE_URL"]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------


def seed(org, user, size: int):
    from environments.services import environment_create
    from keys.services import records

    environment = environment_create(organization=org, name=f"reencrypt-{size}", actor=user)
    started = time.perf_counter()
    for start in range(0, size, WRITE_CHUNK):
        records.records_put_batch(
            environment=environment,
            records=[(f"rec-{i:07d}", RECORD_BODY) for i in range(start, min(size, start + WRITE_CHUNK))],
        )
    return environment, time.perf_counter() - started


def rotate(environment, user):
    from keys.services.lifecycle import managed_version_create
    from keys.services.validation import registration_activate

    registration = managed_version_create(environment=environment, actor=user)
    return registration_activate(registration=registration, actor=user)


def reencrypt(environment, user, batch_size: int) -> tuple[float, int]:
    from keys import queue
    from keys.models import ReencryptionJob
    from keys.services.reencryption import reencryption_run, reencryption_start

    # No broker here (Celery would run the job eagerly, throttled, inside the start call):
    # this process runs the job itself, timed, as one worker would.
    queue.enqueue_reencryption = lambda job_id, **kwargs: None
    job = reencryption_start(environment=environment, actor=user)
    started = time.perf_counter()
    reencryption_run(job_id=job.pk, slice_seconds=None, batch_size=batch_size, throttle_seconds=0)
    elapsed = time.perf_counter() - started
    job = ReencryptionJob.objects.get(pk=job.pk)
    assert job.status == "done", (job.status, job.last_error)
    return elapsed, job.records_moved


def run_size(org, user, size: int, batch_size: int) -> dict:
    from django.db import connection

    environment, seed_seconds = seed(org, user, size)
    rotate(environment, user)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE keys_record")  # as autovacuum would have, after a bulk load

    rss_reset = reset_peak_rss()
    rss_before = (_status_kib("VmRSS") or 0) / 1024
    elapsed, moved = reencrypt(environment, user, batch_size)
    rss_peak = peak_rss_mib()

    rotate(environment, user)
    tracemalloc.start()
    tracemalloc.reset_peak()
    _, moved_again = reencrypt(environment, user, batch_size)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert moved == moved_again == size
    return {
        "size": size, "seed_s": seed_seconds, "seconds": elapsed, "rate": moved / elapsed,
        "rss_before": rss_before, "rss_peak": rss_peak, "rss_reset": rss_reset,
        "traced_peak_mib": traced_peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="record counts, comma separated")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    configure_environment()
    recreate_database()
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from environments.models import Membership, Organization

    try:
        call_command("migrate", verbosity=0)
        user = get_user_model().objects.create_user("bench", "bench@example.org", "bench-password-1")
        org = Organization.objects.create(name="Bench Corp")
        Membership.objects.create(user=user, organization=org, role=Membership.Role.OWNER)

        print(f"Re-encryption job, in process; PostgreSQL on 127.0.0.1; batch {args.batch_size}, throttle 0; "
              f"1 KiB records; Python {platform.python_version()}, {os.cpu_count()} CPUs")
        results = [run_size(org, user, size, args.batch_size) for size in sizes]
        print()
        print(f"{'records':>9} {'seed s':>8} {'job s':>8} {'records/s':>10} {'RSS before MiB':>15} "
              f"{'peak RSS in job MiB':>20} {'tracemalloc peak MiB':>21}")
        for r in results:
            print(f"{r['size']:>9,} {r['seed_s']:8.1f} {r['seconds']:8.2f} {r['rate']:10,.0f} {r['rss_before']:15.1f} "
                  f"{r['rss_peak']:20.1f} {r['traced_peak_mib']:21.2f}")
        if len(results) > 1:
            first, last = results[0], results[-1]
            print()
            print(f"peak RSS growth during the job, {first['size']:,} -> {last['size']:,} records: "
                  f"{last['rss_peak'] - last['rss_before']:+.1f} MiB vs {first['rss_peak'] - first['rss_before']:+.1f} MiB; "
                  f"tracemalloc peak {first['traced_peak_mib']:.2f} -> {last['traced_peak_mib']:.2f} MiB")
        if not all(r["rss_reset"] for r in results):
            print("(VmHWM could not be reset: peak RSS is the process's lifetime peak, ru_maxrss)")
    finally:
        drop_database()


if __name__ == "__main__":
    main()
