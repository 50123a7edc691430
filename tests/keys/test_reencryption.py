"""Tests of keys/reencryption.py: the re-encryption job's batches, resumption, pause and
cancel, concurrent writes, unavailable versions, progress, and its Celery tasks.

Platform-managed versions need no KMS; BYOK versions run against moto in-process (the
``aws`` fixture and the ``make_byok`` helper of tests/factories.py). The runner is called directly with
throttle 0; the tasks are tested at the end. Its helpers (``put_records``,
``new_managed_version``, ``plaintexts``, ``counts``, ``run``) are in tests/factories.py.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections, transaction

from keys import crypto, kms, queue, tasks
from keys.services import records, reencryption
from keys.clock import now
from keys.models import AuditEvent, KeyRegistration, Record, ReencryptionJob
from keys.services.reencryption import Outcome, ReencryptionRefused
from tests.factories import (
    counts,
    keys,
    make_byok,
    new_managed_version,
    plaintexts,
    put_records,
    run,
    tamper,
    throttle,
)

Status = KeyRegistration.Status
JobStatus = ReencryptionJob.Status


# ---------------------------------------------------------------------------
# Helpers (shared)
# ---------------------------------------------------------------------------


def reload(job: ReencryptionJob) -> ReencryptionJob:
    return ReencryptionJob.objects.get(pk=job.pk)


@pytest.fixture
def rotated(environment, alice):
    """GIVEN 25 records under managed v1 and 10 under managed v2, and v3 active."""
    put_records(environment, keys(25, "a"))
    new_managed_version(environment, alice)
    put_records(environment, keys(10, "b"))
    target = new_managed_version(environment, alice)
    return target


# ---------------------------------------------------------------------------
# Moving records
# ---------------------------------------------------------------------------


def test_it_moves_every_record_of_older_versions_to_the_active_version_in_batches(environment, alice, rotated):
    before = plaintexts(environment)
    job = reencryption.reencryption_start(environment=environment, actor=alice)

    outcome = run(job, batch_size=7)

    job = reload(job)
    assert outcome == Outcome.FINISHED
    assert (job.status, job.records_total, job.records_moved, job.records_failed) == (JobStatus.DONE, 35, 35, 0)
    assert job.batches == 6  # v1: 7+7+7+4, v2: 7+3
    assert counts(environment) == {3: 35}
    assert set(Record.objects.filter(environment=environment).values_list("registration_id", flat=True)) == {rotated.pk}
    assert plaintexts(environment) == before
    assert job.finished_at and job.started_at and job.runner == ""
    done = AuditEvent.objects.filter(environment=environment, action="reencryption", after__status="done").get()
    assert done.actor_label == "job: re-encryption" and done.after["records_moved"] == 35


def test_it_keeps_every_record_readable_between_batches(environment, alice, rotated):
    before = plaintexts(environment)
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    seen: list[dict[int, int]] = []

    def read_all() -> None:
        assert plaintexts(environment) == before
        seen.append(counts(environment))

    run(job, batch_size=5, between_batches=read_all)

    assert len(seen) == 7
    assert seen[0] == {1: 20, 2: 10, 3: 5}
    assert [sum(v for k, v in c.items() if k != 3) for c in seen] == [30, 25, 20, 15, 10, 5, 0]


def test_it_passes_over_versions_that_never_served(environment, alice, rotated):
    """A version registered but not activated yet (valid) holds no records: it is neither
    probed for its data key nor reported as skipped."""
    pending = new_managed_version(environment, alice, activate=False)
    job = reencryption.reencryption_start(environment=environment, actor=alice)

    run(job)

    job = reload(job)
    assert (job.status, job.records_moved, job.skipped_versions) == (JobStatus.DONE, 35, {})
    assert pending.status == Status.VALID


def test_it_keeps_updated_at_and_binds_the_new_ciphertext_to_the_new_key_version(environment, alice, rotated):
    record = Record.objects.get(environment=environment, record_key="a00000")
    job = reencryption.reencryption_start(environment=environment, actor=alice)

    run(job)

    moved = Record.objects.get(pk=record.pk)
    assert moved.updated_at == record.updated_at
    assert bytes(moved.ciphertext) != bytes(record.ciphertext)
    assert crypto.envelope_key_version(bytes(moved.ciphertext)) == 3 == moved.key_version


def test_it_streams_batches_by_id_and_never_loads_the_table(environment, alice, rotated, monkeypatch):
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    real_select = reencryption._select_batch
    fetched: list[tuple[int, int, int]] = []

    def spy(run_, *, source_id, size):
        rows = real_select(run_, source_id=source_id, size=size)
        fetched.append((source_id, run_.cursors.get(source_id, 0), len(rows)))
        return rows

    monkeypatch.setattr(reencryption, "_select_batch", spy)
    run(job, batch_size=10)

    assert max(n for _, _, n in fetched) == 10
    assert sum(n for _, _, n in fetched) == 35
    cursors = [c for _, c, n in fetched if n]
    assert cursors[:3] == [0, *sorted(cursors[1:3])] and cursors[1] > 0  # each batch starts after the last id
    sql = " ".join(reencryption._SELECT_SQL.split())
    assert '"registration_id" = %s AND "id" > %s' in sql
    assert sql.endswith('ORDER BY "id" LIMIT %s FOR UPDATE SKIP LOCKED')


# ---------------------------------------------------------------------------
# Crashes, idempotence, resumption
# ---------------------------------------------------------------------------


def test_it_rolls_a_whole_batch_back_when_it_fails_midway_and_a_new_runner_finishes(environment, alice, rotated, monkeypatch):
    """GIVEN a job whose runner dies in its second batch, after encrypting 3 of 7 records
    WHEN the job's heartbeat goes stale and a new runner takes it over
    THEN the failed batch left nothing half-done (every record entirely old or new, the
    counters matching), and the new runner moves the rest: nothing lost, nothing twice."""
    before = plaintexts(environment)
    old_ciphertexts = dict(Record.objects.filter(environment=environment).values_list("record_key", "ciphertext"))
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    real_encrypt = crypto.RecordCipher.encrypt
    calls = {"n": 0}

    def dying_encrypt(self, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise SystemExit("worker killed")
        return real_encrypt(self, **kwargs)

    monkeypatch.setattr(crypto.RecordCipher, "encrypt", dying_encrypt)
    with pytest.raises(SystemExit):
        run(job, batch_size=7)

    crashed = reload(job)
    assert (crashed.status, crashed.records_moved, crashed.batches) == (JobStatus.RUNNING, 7, 1)
    assert counts(environment) == {1: 18, 2: 10, 3: 7}
    for key, ciphertext in Record.objects.filter(environment=environment, key_version=1).values_list("record_key", "ciphertext"):
        assert bytes(ciphertext) == bytes(old_ciphertexts[key])
    monkeypatch.setattr(crypto.RecordCipher, "encrypt", real_encrypt)

    assert run(job) == Outcome.NOT_CLAIMED  # its heartbeat is fresh: the "dead" runner still holds it
    ReencryptionJob.objects.filter(pk=job.pk).update(heartbeat_at=now() - timedelta(hours=1))
    assert run(job, batch_size=7) == Outcome.FINISHED

    job = reload(job)
    assert (job.status, job.records_moved) == (JobStatus.DONE, 35)
    assert counts(environment) == {3: 35}
    assert plaintexts(environment) == before
    assert AuditEvent.objects.filter(environment=environment, message__contains="previous worker stopped").count() == 1


def test_it_is_harmless_to_run_a_finished_job_again(environment, alice, rotated):
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    run(job)
    ciphertexts = dict(Record.objects.values_list("pk", "ciphertext"))

    assert run(job) == Outcome.NOT_CLAIMED

    assert dict(Record.objects.values_list("pk", "ciphertext")) == ciphertexts
    assert reload(job).records_moved == 35


def test_it_lets_only_one_runner_hold_a_job(environment, alice, rotated):
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    seen: list[str] = []

    run(job, batch_size=10, between_batches=lambda: seen.append(run(job)))

    assert set(seen) == {Outcome.NOT_CLAIMED}
    assert reload(job).records_moved == 35


def test_it_starts_at_most_one_unfinished_job_per_environment(environment, alice, carol, rotated):
    first = reencryption.reencryption_start(environment=environment, actor=alice)
    second = reencryption.reencryption_start(environment=environment, actor=carol)

    assert first.pk == second.pk
    assert ReencryptionJob.objects.count() == 1


def test_it_queues_the_job_once_the_transaction_commits(environment, alice, rotated, monkeypatch, django_capture_on_commit_callbacks):
    queued: list[int] = []
    monkeypatch.setattr(queue, "enqueue_reencryption", lambda job_id, **kw: queued.append(job_id))

    with django_capture_on_commit_callbacks(execute=True):
        job = reencryption.reencryption_start(environment=environment, actor=alice)
        assert queued == []

    assert queued == [job.pk]


def test_it_refuses_to_start_when_every_record_is_under_the_active_version(environment, alice):
    put_records(environment, keys(3))

    with pytest.raises(ReencryptionRefused, match="already under the active version v1"):
        reencryption.reencryption_start(environment=environment, actor=alice)
    assert not ReencryptionJob.objects.exists()


def test_it_gives_the_slice_back_and_continues_where_it_stopped(environment, alice, rotated):
    job = reencryption.reencryption_start(environment=environment, actor=alice)

    assert run(job, batch_size=5, slice_seconds=0.0) == Outcome.CONTINUE
    assert reload(job).status == JobStatus.QUEUED

    assert run(job, batch_size=5) == Outcome.FINISHED
    assert reload(job).records_moved == 35


# ---------------------------------------------------------------------------
# Pause, resume, cancel
# ---------------------------------------------------------------------------


def test_it_stops_after_the_batch_in_progress_when_paused_and_resumes(environment, alice, carol, rotated):
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    paused: list[ReencryptionJob] = []

    def pause_once() -> None:
        if not paused:
            paused.append(reencryption.reencryption_pause(job=reload(job), actor=carol))

    assert run(job, batch_size=10, between_batches=pause_once) == Outcome.FINISHED
    assert (reload(job).status, reload(job).records_moved) == (JobStatus.PAUSED, 10)

    reencryption.reencryption_resume(job=reload(job), actor=alice)
    assert reload(job).status == JobStatus.QUEUED
    run(job)

    assert (reload(job).status, reload(job).records_moved) == (JobStatus.DONE, 35)
    statuses = list(AuditEvent.objects.filter(action="reencryption").order_by("id").values_list("after__status", flat=True))
    assert statuses == ["queued", "paused", "queued", "done"]


def test_it_keeps_moved_records_and_the_others_readable_when_cancelled(environment, alice, rotated):
    before = plaintexts(environment)
    job = reencryption.reencryption_start(environment=environment, actor=alice)

    run(job, batch_size=10, between_batches=lambda: reencryption.reencryption_cancel(job=reload(job), actor=alice))

    job = reload(job)
    assert (job.status, job.records_moved) == (JobStatus.CANCELLED, 10)
    assert job.finished_at is not None
    assert counts(environment) == {1: 15, 2: 10, 3: 10}
    assert plaintexts(environment) == before
    with pytest.raises(ReencryptionRefused):
        reencryption.reencryption_resume(job=job, actor=alice)
    assert reencryption.reencryption_start(environment=environment, actor=alice).pk != job.pk


def test_it_refuses_to_pause_a_finished_job(environment, alice, rotated):
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    run(job)

    with pytest.raises(ReencryptionRefused, match="done re-encryption cannot be paused"):
        reencryption.reencryption_pause(job=reload(job), actor=alice)


# ---------------------------------------------------------------------------
# Concurrent data-plane writes
# ---------------------------------------------------------------------------


def test_it_skips_a_record_the_data_plane_rewrote_under_the_active_version(environment, alice, rotated):
    job = reencryption.reencryption_start(environment=environment, actor=alice)

    def rewrite() -> None:
        records.record_put(environment=environment, record_key="a00020", body={"rewritten": True})

    run(job, batch_size=10, between_batches=rewrite)

    job = reload(job)
    assert (job.status, job.records_moved) == (JobStatus.DONE, 34)
    assert records.record_get(environment=environment, record_key="a00020").body == {"rewritten": True}
    assert counts(environment) == {3: 35}


@pytest.mark.django_db(transaction=True)
def test_it_skips_a_row_locked_by_a_concurrent_write_and_moves_it_once_released(alice, org_a, monkeypatch):
    """GIVEN a record held by another transaction (FOR UPDATE, as a data-plane upsert holds it)
    WHEN the job runs
    THEN it moves every other record without waiting, looks again a few times, and hands the
    job back for later; once the lock is gone the next run moves that record too."""
    from environments.services import environment_create

    environment = environment_create(organization=org_a, name="locks", actor=alice)
    put_records(environment, keys(12))
    new_managed_version(environment, alice)
    monkeypatch.setattr(queue, "enqueue_reencryption", lambda job_id, **kw: None)  # this test runs it
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    monkeypatch.setattr(reencryption, "LOCKED_ROWS_WAIT_SECONDS", 0.01)
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        try:
            with transaction.atomic():
                Record.objects.select_for_update().get(environment=environment, record_key="r00005")
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        outcome = run(job, batch_size=4)
        assert outcome == Outcome.LATER
        assert counts(environment) == {1: 1, 2: 11}
        assert reload(job).status == JobStatus.QUEUED and "locked" in reload(job).last_error
    finally:
        release.set()
        holder.join(10)

    assert run(job) == Outcome.FINISHED
    assert counts(environment) == {2: 12}
    assert reload(job).records_moved == 12


# ---------------------------------------------------------------------------
# Unavailable versions and bad records
# ---------------------------------------------------------------------------


def test_it_skips_and_reports_the_records_of_an_inaccessible_version(environment, alice, rotated):
    KeyRegistration.objects.filter(environment=environment, version=1).update(
        status=Status.INACCESSIBLE, restore_status=Status.DECRYPT_ONLY, inaccessible_reason="disabled"
    )
    job = reencryption.reencryption_start(environment=environment, actor=alice)

    run(job)

    job = reload(job)
    assert (job.status, job.records_moved, job.skipped_versions) == (JobStatus.DONE, 10, {"1": "disabled"})
    assert counts(environment) == {1: 25, 3: 10}
    progress = reencryption.job_progress(environment=environment)
    assert {v.version: (v.records, v.skipped_reason) for v in progress.versions}[1] == (25, "disabled")
    assert progress.remaining == 25 and progress.percent == 28
    event = AuditEvent.objects.get(action="reencryption", after__status="done")
    assert "v1: disabled" in event.message


def test_it_skips_a_byok_version_kms_refuses_and_marks_it_inaccessible(environment, alice, aws, monkeypatch):  # noqa: F811
    source = make_byok(environment, aws).registration
    put_records(environment, keys(5))
    new_managed_version(environment, alice)
    from keys import cache

    cache.clear()
    monkeypatch.setattr(kms, "decrypt", lambda **kw: (_ for _ in ()).throw(
        kms.KmsPermanentError("disabled", operation="Decrypt", message="KMS Decrypt failed: disabled")))
    job = reencryption.reencryption_start(environment=environment, actor=alice)

    run(job)

    source.refresh_from_db()
    assert source.status == Status.INACCESSIBLE and source.inaccessible_reason == "disabled"
    assert reload(job).skipped_versions == {"2": "disabled"}
    assert reload(job).status == JobStatus.DONE
    assert counts(environment) == {2: 5}


def test_it_tries_again_later_when_kms_throttles(environment, alice, aws, monkeypatch):  # noqa: F811
    make_byok(environment, aws)
    put_records(environment, keys(5))
    new_managed_version(environment, alice)
    from keys import cache

    cache.clear()
    monkeypatch.setattr(kms, "decrypt", throttle)
    job = reencryption.reencryption_start(environment=environment, actor=alice)

    assert run(job) == Outcome.LATER

    assert reload(job).status == JobStatus.QUEUED
    assert "throttled" in reload(job).last_error
    assert reload(job).skipped_versions == {}
    monkeypatch.undo()
    cache.clear()  # the job runs again minutes later, past the transient-failure hold
    assert run(job) == Outcome.FINISHED
    assert counts(environment) == {3: 5}


def test_it_fails_the_job_when_the_active_version_becomes_inaccessible(environment, alice, rotated):
    job = reencryption.reencryption_start(environment=environment, actor=alice)

    def revoke() -> None:
        KeyRegistration.objects.filter(pk=rotated.pk).update(
            status=Status.INACCESSIBLE, restore_status=Status.ACTIVE, inaccessible_reason="access_denied"
        )

    run(job, batch_size=10, between_batches=revoke)

    job = reload(job)
    assert (job.status, job.records_moved) == (JobStatus.FAILED, 10)
    assert "access_denied" in job.last_error
    assert counts(environment) == {1: 15, 2: 10, 3: 10}


def test_it_follows_a_version_activated_while_it_runs(environment, alice, rotated):
    before = plaintexts(environment)
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    newer: list[KeyRegistration] = []

    def activate_v4() -> None:
        if not newer:
            newer.append(new_managed_version(environment, alice))

    run(job, batch_size=10, between_batches=activate_v4)

    job = reload(job)
    assert job.status == JobStatus.DONE and job.target_id == newer[0].pk
    assert counts(environment) == {4: 35}
    assert job.records_moved == 45  # the 10 moved to v3 first moved again, to v4
    assert plaintexts(environment) == before


def test_it_leaves_a_record_that_fails_its_integrity_check_and_reports_it(environment, alice, rotated):
    tamper(Record.objects.get(environment=environment, record_key="a00003"))
    job = reencryption.reencryption_start(environment=environment, actor=alice)

    run(job, batch_size=10)

    job = reload(job)
    assert (job.status, job.records_moved, job.records_failed) == (JobStatus.DONE, 34, 1)
    assert counts(environment) == {1: 1, 3: 34}
    assert "1 record(s) fail their integrity check" in AuditEvent.objects.get(action="reencryption", after__status="done").message


# ---------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------


def test_it_reports_records_per_version_percent_and_time_left(environment, alice, rotated):
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    snapshots = []

    run(job, batch_size=10, between_batches=lambda: snapshots.append(reencryption.job_progress(environment=environment)))

    first = snapshots[0]
    assert {v.version: v.records for v in first.versions} == {3: 10, 2: 10, 1: 15}
    assert (first.remaining, first.percent) == (25, 28)
    assert first.eta_seconds is not None and first.eta_seconds >= 1
    assert first.as_json()["job"]["status"] == "running" and first.as_json()["running"] is True
    last = reencryption.job_progress(environment=environment)
    assert (last.remaining, last.percent, last.eta_seconds, last.is_active) == (0, 100, None, False)


def test_it_words_the_time_left():
    assert reencryption.eta_text(None) == ""
    assert reencryption.eta_text(20) == "less than a minute left"
    assert reencryption.eta_text(130) == "about 3 min left"
    assert reencryption.eta_text(7300) == "about 2 h 2 min left"


# ---------------------------------------------------------------------------
# Celery tasks
# ---------------------------------------------------------------------------


def test_it_runs_the_whole_job_inline_in_eager_mode(environment, alice, rotated, settings):
    settings.REENCRYPTION_THROTTLE_SECONDS = 0
    job = reencryption.reencryption_start(environment=environment, actor=alice)

    tasks.reencrypt_environment.delay(job.pk)

    assert reload(job).status == JobStatus.DONE
    assert counts(environment) == {3: 35}


@pytest.mark.parametrize(("outcome", "countdown"), [(Outcome.CONTINUE, None), (Outcome.LATER, reencryption.RETRY_LATER_SECONDS)])
def test_it_queues_itself_again_in_a_worker_until_the_job_ends(outcome, countdown, monkeypatch):
    sent: list[tuple] = []
    monkeypatch.setattr(tasks, "reencryption_run", lambda **kw: outcome)
    monkeypatch.setattr(tasks.reencrypt_environment, "apply_async", lambda args, **kw: sent.append((args, kw)))
    task = tasks.reencrypt_environment

    task.push_request(is_eager=False, called_directly=False)  # as in a worker
    try:
        task.run(42)
    finally:
        task.pop_request()

    assert sent == [((42,), {"countdown": countdown})]


def test_it_does_not_queue_itself_again_once_the_job_ended(monkeypatch):
    sent: list[tuple] = []
    monkeypatch.setattr(tasks, "reencryption_run", lambda **kw: Outcome.FINISHED)
    monkeypatch.setattr(tasks.reencrypt_environment, "apply_async", lambda args, **kw: sent.append(args))
    task = tasks.reencrypt_environment

    task.push_request(is_eager=False, called_directly=False)
    try:
        task.run(42)
    finally:
        task.pop_request()

    assert sent == []


def test_it_queues_stale_jobs_again_from_celery_beat(environment, alice, rotated, monkeypatch):
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    ReencryptionJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, runner="dead", heartbeat_at=now() - timedelta(hours=1))
    sent: list[tuple] = []
    monkeypatch.setattr(tasks.reencrypt_environment, "apply_async", lambda args, **kw: sent.append(args))

    assert tasks.resume_stale_reencryption_jobs() == 1
    assert sent == [(job.pk,)]

    ReencryptionJob.objects.filter(pk=job.pk).update(heartbeat_at=now())
    assert tasks.resume_stale_reencryption_jobs() == 0


def test_it_has_the_resume_task_in_the_beat_schedule(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["resume-stale-reencryption-jobs"]
    assert entry["task"] == "keys.tasks.resume_stale_reencryption_jobs"
    assert entry["schedule"] == float(settings.REENCRYPTION_RESUME_INTERVAL_SECONDS)
