"""Re-encryption through a real Celery worker that is killed (SIGKILL) in the middle of the
job; a new worker, with Celery beat's "resume stale jobs", finishes it.

Same processes as test_worker_validation.py (fixtures of tests/worker/conftest.py): a moto
server as the customer's KMS, ``celery -A portal worker --pool solo`` on a Redis database
of its own, against this run's PostgreSQL test database.
"""

from __future__ import annotations

import signal
import time

import pytest
from django.conf import settings as django_settings

from keys import cache, kms
from keys.models import AuditEvent, KeyRegistration, Record, ReencryptionJob
from keys.services import records
from keys.services.reencryption import reencryption_start
from keys.services.validation import registration_activate
from tests.factories import counts, keys, plaintexts, put_records
from tests.keys.moto_customer import register
from tests.support import wait_for
from tests.worker.waits import wait_status

pytestmark = [pytest.mark.worker]

Status = KeyRegistration.Status
JobStatus = ReencryptionJob.Status
RECORDS = 400
BATCH = 20
THROTTLE_SECONDS = 0.25  # about 20 batches of 20 records: 5 s or more, so the kill lands mid-job
STALE_AFTER_SECONDS = 3


@pytest.fixture
def slow_reencryption(monkeypatch, settings, moto_server):
    """Settings for the worker processes (they inherit this environment) and this one."""
    monkeypatch.setenv("REENCRYPTION_BATCH_SIZE", str(BATCH))
    monkeypatch.setenv("REENCRYPTION_THROTTLE_SECONDS", str(THROTTLE_SECONDS))
    monkeypatch.setenv("REENCRYPTION_STALE_AFTER_SECONDS", str(STALE_AFTER_SECONDS))
    monkeypatch.setenv("REENCRYPTION_RESUME_INTERVAL_SECONDS", "1")
    settings.AWS_KMS_ENDPOINT_URL = moto_server  # this process reads BYOK records too
    settings.REENCRYPTION_STALE_AFTER_SECONDS = STALE_AFTER_SECONDS
    cache.set_cache(None)
    kms.clear_clients()
    yield
    cache.set_cache(None)
    kms.clear_clients()


def _job() -> ReencryptionJob:
    return ReencryptionJob.objects.get()


def test_it_finishes_a_job_whose_worker_was_killed_mid_way_losing_and_repeating_nothing(
    slow_reencryption, start_worker, customer, alice, environment
):
    """GIVEN 400 records under platform-managed v1, and BYOK v2 (validated by the worker) active
    WHEN a re-encryption job runs in a worker (batches of 20, 0.25 s apart) and the worker is
    killed with SIGKILL after some batches
    THEN every batch committed before the kill is whole (the job's counter equals the records
    under v2), nothing is half-done; a new worker (with Celery beat) takes the stale job over
    and finishes it; every record decrypts to the same plaintext as before, none lost or
    duplicated, and the counter says exactly 400."""
    first = start_worker()
    put_records(environment, keys(RECORDS))
    v2 = register(environment, alice, customer)
    wait_status(v2.pk, Status.VALID, first)
    registration_activate(registration=KeyRegistration.objects.get(pk=v2.pk), actor=alice)
    before = plaintexts(environment)
    assert len(before) == RECORDS

    reencryption_start(environment=environment, actor=alice)
    wait_for(lambda: _job().records_moved >= 5 * BATCH, timeout=30, what="five batches moved")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)

    crashed = _job()
    assert crashed.status == JobStatus.RUNNING, first.output()[-3000:]
    moved = counts(environment).get(2, 0)
    assert 5 * BATCH <= moved < RECORDS
    assert crashed.records_moved == moved  # counters commit with their batch
    assert moved % BATCH == 0  # whole batches only
    time.sleep(1)
    assert counts(environment).get(2, 0) == moved  # nobody is working on it now

    second = start_worker(beat_every=600)
    wait_for(lambda: _job().status == JobStatus.DONE, timeout=90, what="the job to finish in the new worker")

    job = _job()
    assert (job.records_moved, job.records_failed, job.skipped_versions) == (RECORDS, 0, {})
    assert counts(environment) == {2: RECORDS}
    assert Record.objects.filter(environment=environment).count() == RECORDS
    assert len(set(Record.objects.values_list("record_key", flat=True))) == RECORDS
    cache.clear()
    assert plaintexts(environment) == before
    assert AuditEvent.objects.filter(environment=environment, message__contains="previous worker stopped").exists()
    assert customer.secret_access_key not in first.output() + second.output()
    assert django_settings.SEALING_KEYS[0].split(":", 1)[1] not in second.output()
    assert records.record_get(environment=environment, record_key="r00000").key_version == 2
