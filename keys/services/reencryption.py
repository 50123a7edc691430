"""Re-encryption after a key rotation: move every record of an environment's older key
versions to its active version, in batches, resumably (docs/architecture.md, "Rotation and revocation").

The batch (:func:`_move_batch`), one transaction:

1. lock the job row (``FOR UPDATE``): the batch goes ahead only while the job is
   ``running`` under this runner's token, so "Pause", "Cancel" and a takeover by another
   runner take effect between two batches;
2. lock the environment's active version (``FOR NO KEY UPDATE``): a status change of the
   target (another activation, a KMS refusal) waits for the batch, so nothing is ever
   written under a version that stopped being active meanwhile;
3. select the next rows of one older version, ``registration = S AND id > cursor ORDER BY
   id LIMIT n FOR UPDATE SKIP LOCKED`` (index ``record_by_version``): a row a data-plane
   write holds is skipped, and a row the data plane rewrote under the active version no
   longer matches;
4. decrypt each with S's data key and encrypt it with the target's (same environment and
   record key, the target's key version: ``keys.crypto``'s associated data);
5. one ``UPDATE … FROM unnest(ids, ciphertexts)`` of ciphertext, registration and key
   version, guarded by ``registration = S``;
6. the job's counters and heartbeat, in the same transaction.

A crash (or SIGKILL) anywhere rolls the whole batch back: every record is entirely under
its old version or entirely under the new one, and the counters always match the records.
Rows are streamed by id, a batch at a time: memory stays flat whatever the table size.

The runner (:func:`reencryption_run`) claims the job (compare-and-set ``queued → running``,
or takes over a ``running`` job whose heartbeat is stale), moves batches for one slice of
time with ``settings.REENCRYPTION_THROTTLE_SECONDS`` between them, then puts the job back
to ``queued`` for the task to re-queue itself. Running it twice is harmless: the second
runner finds the job taken (or finished) and does nothing. A job whose worker died is
found by :func:`reencryption_jobs_to_resume` (Celery beat) and taken over.

Records of a version whose data key is unavailable for good (inaccessible, KMS refuses)
are skipped and reported per version; records that fail their integrity check are left
as they are and counted. Neither fails the job.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q, Value
from django.db.models.functions import Coalesce
from django.views.decorators.debug import sensitive_variables

from environments.models import Environment
from keys import crypto, queue
from keys.clock import now
from keys.models import AuditEvent, KeyRegistration, Record, ReencryptionJob
from keys.services.audit import audit
from keys.services.records import KeyUnavailable, active_registration, data_key_for, record_cipher_for
from keys.services.refusals import Refused

log = logging.getLogger(__name__)

Status = ReencryptionJob.Status
KeyStatus = KeyRegistration.Status

JOB = "job: re-encryption"
# How long one task run moves batches before it re-queues the job (seconds): a worker is
# never held for long, and a paused or cancelled job is let go at the next boundary anyway.
SLICE_SECONDS = 30.0
# After a transient KMS failure (throttling, outage), try again this much later (seconds).
RETRY_LATER_SECONDS = 30
# Rows locked by data-plane writes when a pass ends: look again after a pause, at most
# this many times per run, then re-queue later.
LOCKED_ROWS_WAIT_SECONDS = 1.0
LOCKED_ROWS_PASSES = 5
# Records failing their integrity check remembered per job (beyond this the job fails:
# something is badly wrong with the table).
MAX_FAILED_RECORDS = 1000
# Weight of the latest batch in the throughput estimate.
RATE_SMOOTHING = 0.3


# The statuses a version holding records can have: it was active once (a version only
# gets records while active) and is not retired (retirement needs zero records).
SOURCE_STATUSES = frozenset({KeyStatus.DECRYPT_ONLY, KeyStatus.INACCESSIBLE})


class ReencryptionRefused(Refused):
    """The request cannot be done now; ``str()`` says why, in words for the page."""


# ---------------------------------------------------------------------------
# Owner and admin actions
# ---------------------------------------------------------------------------


def reencryption_start(*, environment: Environment, actor) -> ReencryptionJob:
    """Queue a re-encryption of ``environment``'s records to its active version (after
    commit). An unfinished job is returned as it is (queued again if its worker died):
    starting twice is harmless.

    Raises :class:`ReencryptionRefused` when there is no usable active version or no
    record under another version.
    """
    existing = _unfinished_job(environment)
    if existing is not None:
        if existing.status != Status.PAUSED and is_stale(existing):
            _enqueue_after_commit(existing.pk)
        return existing
    try:
        target = active_registration(environment=environment)
    except KeyUnavailable as e:
        raise ReencryptionRefused(f"Nothing can be re-encrypted now: {e}") from e
    total = Record.objects.filter(environment=environment).exclude(registration=target).count()
    if not total:
        raise ReencryptionRefused(f"Every record is already under the active version v{target.version}.")
    try:
        with transaction.atomic():
            job = ReencryptionJob.objects.create(
                environment=environment, target=target, status=Status.QUEUED, records_total=total,
                created_by=_user(actor), heartbeat_at=now(),
            )
            audit(
                action=AuditEvent.Action.REENCRYPTION, environment=environment, registration=target, actor=actor,
                after={"job": str(job.public_id), "status": job.status, "target_version": target.version, "records": total},
                message=f"Re-encryption of {total} record(s) to version {target.version} started.",
            )
            _enqueue_after_commit(job.pk)
    except IntegrityError:
        # Another request started one at the same moment (one unfinished job per environment).
        job = _unfinished_job(environment)
        if job is None:
            raise
    return job


def reencryption_pause(*, job: ReencryptionJob, actor) -> ReencryptionJob:
    """Pause a queued or running job; its runner stops after the batch in progress."""
    return _change(job, actor, to=Status.PAUSED, allowed=(Status.QUEUED, Status.RUNNING), verb="paused")


def reencryption_resume(*, job: ReencryptionJob, actor) -> ReencryptionJob:
    """Resume a paused or failed job (versions skipped earlier are tried again), or queue
    again a queued/running job whose worker died."""
    if job.status in (Status.QUEUED, Status.RUNNING):
        if not is_stale(job):
            raise ReencryptionRefused("The re-encryption is already running.")
        # Back to queued without a runner: the silent runner, should it wake up, finds its
        # token gone at its next batch and stops; the task queued here claims the job.
        requeued = ReencryptionJob.objects.filter(pk=job.pk, status=job.status, heartbeat_at=job.heartbeat_at).update(
            status=Status.QUEUED, runner="", heartbeat_at=now()
        )
        if not requeued:
            raise ReencryptionRefused("The re-encryption changed state meanwhile; look again.")
        _enqueue_after_commit(job.pk)
        audit(
            action=AuditEvent.Action.REENCRYPTION, environment=job.environment, registration=job.target, actor=actor,
            before={"status": job.status}, after={"status": Status.QUEUED, "job": str(job.public_id)},
            message="Re-encryption queued again: its worker had stopped.",
        )
        job.refresh_from_db()
        return job
    with transaction.atomic():
        job = _change(
            job, actor, to=Status.QUEUED, allowed=(Status.PAUSED, Status.FAILED), verb="resumed",
            updates={"skipped_versions": {}, "last_error": "", "finished_at": None},
        )
        _enqueue_after_commit(job.pk)
    return job


def reencryption_cancel(*, job: ReencryptionJob, actor) -> ReencryptionJob:
    """Cancel a job. Records already moved stay under the active version (each batch is
    complete); the others stay readable under their old versions."""
    return _change(
        job, actor, to=Status.CANCELLED, allowed=ReencryptionJob.UNFINISHED, verb="cancelled",
        updates={"finished_at": now()},
    )


def _change(job: ReencryptionJob, actor, *, to: str, allowed, verb: str, updates: dict | None = None) -> ReencryptionJob:
    before = job.status
    if before not in allowed:
        raise ReencryptionRefused(f"A {job.get_status_display().lower()} re-encryption cannot be {verb}.")
    # Compare-and-set; a runner holding the job row in a batch makes this wait for the
    # batch's end, and its next batch sees the new status.
    changed = ReencryptionJob.objects.filter(pk=job.pk, status=before).update(
        status=to, heartbeat_at=now(), **(updates or {})
    )
    if not changed:
        raise ReencryptionRefused("The re-encryption changed state meanwhile; look again.")
    job.refresh_from_db()
    audit(
        action=AuditEvent.Action.REENCRYPTION, environment=job.environment, registration=job.target, actor=actor,
        before={"status": before}, after={"status": to, "job": str(job.public_id)},
        message=f"Re-encryption to version {job.target.version} {verb}.",
    )
    return job


def _unfinished_job(environment: Environment) -> ReencryptionJob | None:
    return ReencryptionJob.objects.filter(environment=environment, status__in=ReencryptionJob.UNFINISHED).first()


def is_stale(job: ReencryptionJob) -> bool:
    """Whether an unfinished job showed no sign of life for ``REENCRYPTION_STALE_AFTER_SECONDS``."""
    cutoff = now() - timedelta(seconds=settings.REENCRYPTION_STALE_AFTER_SECONDS)
    return job.heartbeat_at is None or job.heartbeat_at < cutoff


def _user(actor):
    return actor if getattr(actor, "is_authenticated", False) else None


def _enqueue_after_commit(job_id: int) -> None:
    transaction.on_commit(lambda: queue.enqueue_reencryption(job_id))


# ---------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------


class Outcome:
    """What :func:`reencryption_run` asks of its task."""

    FINISHED = "finished"  # done, failed, paused or cancelled: nothing more to do
    CONTINUE = "continue"  # slice used up: queue the job again now
    LATER = "later"  # KMS unreachable or rows locked: queue it again after RETRY_LATER_SECONDS
    NOT_CLAIMED = "not_claimed"  # another runner holds it, or it vanished


@dataclass
class _Run:
    """One runner's state while it holds the job (in memory only; the database has the rest)."""

    job_id: int
    token: str
    environment: Environment
    environment_id: str
    skipped: dict[str, str]
    failed_ids: list[int]
    cursors: dict[int, int] = field(default_factory=dict)
    exhausted: set[int] = field(default_factory=set)
    last_commit: float = 0.0


@dataclass(frozen=True)
class _Batch:
    kind: str  # "moved", "exhausted", "stop", "retarget", "unavailable"
    moved: int = 0
    failed: tuple[int, ...] = ()
    last_id: int = 0
    error: KeyUnavailable | None = None
    source_id: int | None = None


def reencryption_run(
    *,
    job_id: int,
    slice_seconds: float | None = SLICE_SECONDS,
    batch_size: int | None = None,
    throttle_seconds: float | None = None,
    between_batches: Callable[[], None] | None = None,
) -> str:
    """Run job ``job_id`` for up to ``slice_seconds`` (None: until it ends). Returns an
    :class:`Outcome` value. ``batch_size`` and ``throttle_seconds`` default to the settings
    ``REENCRYPTION_BATCH_SIZE`` and ``REENCRYPTION_THROTTLE_SECONDS``; ``between_batches``
    is called after each committed batch (tests read every record there)."""
    run = _claim(job_id)
    if run is None:
        return Outcome.NOT_CLAIMED
    size = batch_size or settings.REENCRYPTION_BATCH_SIZE
    throttle = settings.REENCRYPTION_THROTTLE_SECONDS if throttle_seconds is None else throttle_seconds
    deadline = None if slice_seconds is None else time.monotonic() + slice_seconds
    idle_passes = 0
    moved_this_pass = 0
    run.last_commit = time.monotonic()
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            return _release(run, Outcome.CONTINUE)
        # One query per batch for every version of the environment: the target (the
        # active version) and the next older version with records, fresh for the cache.
        versions = list(KeyRegistration.objects.filter(environment=run.environment).order_by("version"))
        target = next((r for r in versions if r.status == KeyStatus.ACTIVE), None)
        if target is None:
            try:
                active_registration(environment=run.environment)  # raises, saying why
            except KeyUnavailable as e:
                return _target_unavailable(run, e)
            continue  # activated meanwhile
        source = _next_source(run, target, versions)
        if source is None:
            # End of a pass over every older version.
            if not _movable_remaining(run, target):
                return _finish(run, target)
            idle_passes = idle_passes + 1 if not moved_this_pass else 0
            if idle_passes >= LOCKED_ROWS_PASSES:
                return _release(run, Outcome.LATER, error="Some records are locked by other writes; trying again shortly.")
            if idle_passes:
                time.sleep(LOCKED_ROWS_WAIT_SECONDS)
            run.cursors.clear()
            run.exhausted.clear()
            moved_this_pass = 0
            continue
        unavailable = _warm(target, source)
        if unavailable is not None:
            outcome = _key_unavailable(run, target, unavailable)
            if outcome is not None:
                return outcome
            continue
        batch = _move_batch(run, target_id=target.pk, source=source, size=size)
        if batch.kind == "stop":
            return Outcome.FINISHED
        if batch.kind == "exhausted":
            run.exhausted.add(source.pk)
        elif batch.kind == "unavailable":
            assert batch.error is not None
            outcome = _key_unavailable(run, target, (batch.source_id, batch.error))
            if outcome is not None:
                return outcome
        elif batch.kind == "moved":
            run.cursors[source.pk] = batch.last_id
            moved_this_pass += batch.moved
            if batch.failed and len(run.failed_ids) > MAX_FAILED_RECORDS:
                return _fail(run, f"More than {MAX_FAILED_RECORDS} records fail their integrity check; stopped.")
            if between_batches is not None:
                between_batches()
            if throttle > 0:
                time.sleep(throttle)


def _claim(job_id: int) -> _Run | None:
    """Take the job: ``queued → running``, or a ``running`` one whose runner went silent
    for ``REENCRYPTION_STALE_AFTER_SECONDS`` (its worker died). None if not ours to run."""
    token = uuid.uuid4().hex
    at = now()
    claimed = ReencryptionJob.objects.filter(pk=job_id, status=Status.QUEUED).update(
        status=Status.RUNNING, runner=token, heartbeat_at=at, started_at=Coalesce(F("started_at"), Value(at))
    )
    took_over = False
    if not claimed:
        stale = at - timedelta(seconds=settings.REENCRYPTION_STALE_AFTER_SECONDS)
        claimed = ReencryptionJob.objects.filter(
            Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True), pk=job_id, status=Status.RUNNING
        ).update(runner=token, heartbeat_at=at)
        took_over = bool(claimed)
    if not claimed:
        return None
    job = ReencryptionJob.objects.select_related("environment", "target").get(pk=job_id)
    if took_over:
        log.warning("re-encryption job %s: taking over from a runner that stopped", job_id)
        audit(
            action=AuditEvent.Action.REENCRYPTION, environment=job.environment, registration=job.target,
            actor_label=JOB, before={"status": "running"}, after={"status": "running", "job": str(job.public_id)},
            message="Re-encryption resumed: its previous worker stopped without finishing.",
        )
    return _Run(
        job_id=job.pk, token=token, environment=job.environment, environment_id=str(job.environment.public_id),
        skipped=dict(job.skipped_versions), failed_ids=list(job.failed_record_ids),
    )


def _next_source(run: _Run, target: KeyRegistration, versions: list[KeyRegistration]) -> KeyRegistration | None:
    """The oldest other version of the environment that may still hold records for this
    pass (decrypt-only or inaccessible, not skipped, not found empty past this pass's
    cursor). Versions that never served (pending, valid, …) hold none and are not probed."""
    skipped_versions = {int(v) for v in run.skipped}
    for registration in versions:
        if (
            registration.pk != target.pk
            and registration.status in SOURCE_STATUSES
            and registration.version not in skipped_versions
            and registration.pk not in run.exhausted
        ):
            return registration
    return None


def _movable_remaining(run: _Run, target: KeyRegistration) -> bool:
    """Whether records remain that this job could still move (not under a skipped
    version, not failing their integrity check)."""
    qs = Record.objects.filter(environment=run.environment, registration__status__in=SOURCE_STATUSES)
    qs = qs.exclude(registration=target)
    if run.skipped:
        qs = qs.exclude(registration__version__in=[int(v) for v in run.skipped])
    if run.failed_ids:
        qs = qs.exclude(pk__in=run.failed_ids)
    return qs.exists()


def _warm(target: KeyRegistration, source: KeyRegistration) -> tuple[int, KeyUnavailable] | None:
    """Load both data keys into this process's cache outside the batch transaction, so a
    KMS call (and a KMS refusal marking a version inaccessible) never happens while the
    batch holds its locks. Returns ``(registration id, error)`` for the one unavailable."""
    for registration in (target, source):
        try:
            with data_key_for(registration):
                pass
        except KeyUnavailable as e:
            return registration.pk, e
    return None


@sensitive_variables("plaintext")
def _move_batch(run: _Run, *, target_id: int, source: KeyRegistration, size: int) -> _Batch:
    """Move the next ``size`` records of version ``source`` to ``target_id`` in one
    transaction (steps 1–6 of the module docstring). ``source`` was read just before (its
    status and generation are what the data-key cache checks)."""
    source_id = source.pk
    started = time.monotonic()
    with transaction.atomic():
        _asynchronous_commit()
        job = ReencryptionJob.objects.select_for_update().filter(pk=run.job_id).first()
        if job is None or job.status != Status.RUNNING or job.runner != run.token:
            return _Batch("stop")
        target = KeyRegistration.objects.select_for_update(no_key=True).filter(pk=target_id).first()
        if target is None or target.status != KeyStatus.ACTIVE:
            return _Batch("retarget")  # another version was activated: follow it
        rows = _select_batch(run, source_id=source_id, size=size)
        if not rows:
            return _Batch("exhausted")
        moved: list[tuple[int, bytes]] = []
        failed: list[int] = []
        try:
            with record_cipher_for(source) as source_cipher, record_cipher_for(target) as target_cipher:
                for record_id, record_key, ciphertext, key_version in rows:
                    try:
                        if key_version != source.version:
                            raise crypto.RecordIntegrityError("key version of the row and its registration differ")
                        plaintext = source_cipher.decrypt(
                            envelope=ciphertext, environment_id=run.environment_id,
                            record_key=record_key, key_version=key_version,
                        )
                    except crypto.RecordIntegrityError:
                        failed.append(record_id)
                        continue
                    moved.append((record_id, target_cipher.encrypt(
                        plaintext=plaintext, environment_id=run.environment_id,
                        record_key=record_key, key_version=target.version,
                    )))
        except KeyUnavailable as e:
            # Evicted or refused since _warm: nothing was written; the runner decides.
            which = source_id if e.key_version == source.version else target_id
            return _Batch("unavailable", error=e, source_id=which)
        if moved:
            _update_records(moved, source_id=source_id, target=target)
        if failed:
            log.warning("re-encryption job %s: %s record(s) fail their integrity check", run.job_id, len(failed))
            run.failed_ids.extend(failed)
        _record_batch(run, job, target, moved=len(moved), started=started)
    return _Batch("moved", moved=len(moved), failed=tuple(failed), last_id=rows[-1][0])


def _asynchronous_commit() -> None:
    """PostgreSQL: commit this batch without waiting for its WAL flush (``SET LOCAL
    synchronous_commit = off``). Safe here: a server crash can lose only the last few
    batches, each entirely (the records stay under their old version, readable, and the
    counters with them: they commit together), and the job moves them again. Anything
    that depends on a batch — retiring the old version — commits synchronously, and
    flushing its WAL flushes every earlier batch's too (the WAL is sequential).
    https://www.postgresql.org/docs/current/wal-async-commit.html"""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")


def _select_batch(run: _Run, *, source_id: int, size: int) -> list[tuple[int, str, bytes, int]]:
    """Lock and read the next ``size`` rows of version ``source_id`` after this pass's
    cursor: ``(id, record_key, ciphertext, key_version)``, ordered by id.

    PostgreSQL: one statement (:data:`_SELECT_SQL`) with results in binary format, so each
    ciphertext arrives as its bytes rather than as hex text twice its size that Django's
    cursor would have to parse (about a third of the job's time at 1 KiB per record)."""
    cursor_id = run.cursors.get(source_id, 0)
    if connection.vendor != "postgresql":
        return list(
            Record.objects.select_for_update(skip_locked=True)
            .filter(environment=run.environment, registration_id=source_id, id__gt=cursor_id)
            .exclude(pk__in=run.failed_ids)
            .order_by("id")
            .values_list("id", "record_key", "ciphertext", "key_version")[:size]
        )
    connection.ensure_connection()
    params = [run.environment.pk, source_id, cursor_id, list(run.failed_ids), size]
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_SELECT_SQL, params, binary=True)
        return cursor.fetchall()


# The index record_by_version (registration_id, id) serves this directly: the scan starts
# at the pass's cursor, so rows moved earlier (dead until vacuumed) are never walked again.
_SELECT_SQL = (
    'SELECT "id", "record_key", "ciphertext", "key_version" FROM "keys_record" '
    'WHERE "environment_id" = %s AND "registration_id" = %s AND "id" > %s AND NOT ("id" = ANY(%s::bigint[])) '
    'ORDER BY "id" LIMIT %s FOR UPDATE SKIP LOCKED'
)


def _update_records(moved: list[tuple[int, bytes]], *, source_id: int, target: KeyRegistration) -> None:
    """Write the new ciphertexts, registration and key version of the rows (locked by
    the caller) in one statement; ``updated_at`` stays: re-encryption is not a change of
    the record."""
    if connection.vendor != "postgresql":
        Record.objects.bulk_update(
            [Record(pk=pk, ciphertext=c, registration_id=target.pk, key_version=target.version) for pk, c in moved],
            ["ciphertext", "registration", "key_version"],
        )
        return
    connection.ensure_connection()
    params = [target.pk, target.version, [pk for pk, _ in moved], [c for _, c in moved], source_id]
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_UPDATE_SQL, params)


_UPDATE_SQL = (
    'UPDATE "keys_record" AS r SET "ciphertext" = t.ciphertext, "registration_id" = %s, "key_version" = %s '
    "FROM unnest(%s::bigint[], %b::bytea[]) AS t(id, ciphertext) "
    'WHERE r."id" = t.id AND r."registration_id" = %s'
)


def _record_batch(run: _Run, job: ReencryptionJob, target: KeyRegistration, *, moved: int, started: float) -> None:
    """The job's counters, heartbeat, throughput and target, in the batch's transaction."""
    at = time.monotonic()
    elapsed = max(at - run.last_commit, at - started, 1e-6)
    run.last_commit = at
    rate = moved / elapsed
    updates: dict[str, Any] = {
        "records_moved": F("records_moved") + moved,
        "batches": F("batches") + 1,
        "heartbeat_at": now(),
        "records_per_second": rate if not job.records_per_second else
        RATE_SMOOTHING * rate + (1 - RATE_SMOOTHING) * job.records_per_second,
        "skipped_versions": dict(run.skipped),
        "failed_record_ids": list(run.failed_ids),
    }
    if job.target_id != target.pk:
        updates["target_id"] = target.pk
        audit(
            action=AuditEvent.Action.REENCRYPTION, environment=run.environment, registration=target, actor_label=JOB,
            before={"target_version": job.target.version}, after={"target_version": target.version, "job": str(job.public_id)},
            message=f"Version {target.version} was activated during re-encryption: records now move to it.",
        )
    ReencryptionJob.objects.filter(pk=job.pk).update(**updates)


def _key_unavailable(run: _Run, target: KeyRegistration, failure: tuple[int | None, KeyUnavailable]) -> str | None:
    """A data key could not be had: skip a source version for good, wait for a transient
    failure, fail the job if the target is refused. None means "go on"."""
    registration_id, error = failure
    if registration_id == target.pk:
        return _target_unavailable(run, error)
    if error.transient:
        return _release(run, Outcome.LATER, error=f"KMS could not be reached ({error.reason}); retrying shortly.")
    source = KeyRegistration.objects.filter(pk=registration_id).first()
    if source is not None:
        log.warning("re-encryption job %s: skipping version %s (%s)", run.job_id, source.version, error.reason)
        run.skipped[str(source.version)] = error.reason
        ReencryptionJob.objects.filter(pk=run.job_id, runner=run.token).update(
            skipped_versions=dict(run.skipped), heartbeat_at=now()
        )
    return None


def _target_unavailable(run: _Run, error: KeyUnavailable) -> str:
    if error.transient:
        return _release(run, Outcome.LATER, error=f"KMS could not be reached ({error.reason}); retrying shortly.")
    return _fail(run, f"The active key version cannot encrypt: {error}")


def _release(run: _Run, outcome: str, *, error: str = "") -> str:
    """Back to ``queued`` (for the task to queue it again), if this runner still holds it."""
    released = ReencryptionJob.objects.filter(pk=run.job_id, status=Status.RUNNING, runner=run.token).update(
        status=Status.QUEUED, runner="", heartbeat_at=now(), last_error=error[:500],
        skipped_versions=dict(run.skipped), failed_record_ids=list(run.failed_ids),
    )
    return outcome if released else Outcome.FINISHED


def _finish(run: _Run, target: KeyRegistration) -> str:
    return _end(run, target, Status.DONE, "")


def _fail(run: _Run, error: str) -> str:
    job = ReencryptionJob.objects.select_related("target").get(pk=run.job_id)
    return _end(run, job.target, Status.FAILED, error)


def _end(run: _Run, target: KeyRegistration, status: str, error: str) -> str:
    with transaction.atomic():
        job = ReencryptionJob.objects.select_for_update().get(pk=run.job_id)
        if job.status != Status.RUNNING or job.runner != run.token:
            return Outcome.FINISHED
        ReencryptionJob.objects.filter(pk=job.pk).update(
            status=status, runner="", finished_at=now(), heartbeat_at=now(), last_error=error[:500],
            skipped_versions=dict(run.skipped), failed_record_ids=list(run.failed_ids), target_id=target.pk,
        )
        job.refresh_from_db()
        skipped = ", ".join(f"v{v}: {reason}" for v, reason in sorted(run.skipped.items()))
        message = (
            f"Re-encryption to version {target.version} {'done' if status == Status.DONE else 'failed'}: "
            f"{job.records_moved} record(s) moved"
            + (f"; records of {skipped} skipped" if skipped else "")
            + (f"; {len(run.failed_ids)} record(s) fail their integrity check" if run.failed_ids else "")
            + (f". {error}" if error else ".")
        )
        audit(
            action=AuditEvent.Action.REENCRYPTION, environment=run.environment, registration=target, actor_label=JOB,
            before={"status": Status.RUNNING},
            after={"status": status, "job": str(job.public_id), "records_moved": job.records_moved,
                   "skipped_versions": dict(run.skipped), "records_failed": len(run.failed_ids)},
            message=message,
        )
    return Outcome.FINISHED


def reencryption_jobs_to_resume() -> list[int]:
    """Ids of jobs whose worker died: ``running`` or ``queued`` with no sign of life for
    ``REENCRYPTION_STALE_AFTER_SECONDS``. Their heartbeat is bumped for a queued one so
    the next beat tick does not queue it again while its task waits in the queue."""
    cutoff = now() - timedelta(seconds=settings.REENCRYPTION_STALE_AFTER_SECONDS)
    stale = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True)
    ids = list(ReencryptionJob.objects.filter(stale, status__in=[Status.QUEUED, Status.RUNNING]).values_list("pk", flat=True))
    ReencryptionJob.objects.filter(pk__in=ids, status=Status.QUEUED).update(heartbeat_at=now())
    return ids


# ---------------------------------------------------------------------------
# What the page shows
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionProgress:
    """One key version's records: how many remain under it, and why they wait if they do."""

    registration: KeyRegistration
    records: int
    skipped_reason: str = ""

    @property
    def version(self) -> int:
        return self.registration.version


@dataclass(frozen=True)
class Progress:
    """The environment's re-encryption state for the page and its JSON endpoint.

    ``remaining``: records under versions other than the active one; ``percent`` (0–100)
    of the latest job's records moved, None without a job; ``eta_seconds`` only while a
    job is queued or running and its throughput is known."""

    job: ReencryptionJob | None
    active: KeyRegistration | None
    versions: list[VersionProgress]
    remaining: int
    percent: int | None
    eta_seconds: int | None

    @property
    def is_active(self) -> bool:
        return self.job is not None and self.job.status in (Status.QUEUED, Status.RUNNING)

    @property
    def eta_text(self) -> str:
        return eta_text(self.eta_seconds)

    def as_json(self) -> dict[str, Any]:
        job = self.job
        return {
            "job": None if job is None else {
                "id": str(job.public_id), "status": job.status, "status_display": job.get_status_display(),
                "records_total": job.records_total, "records_moved": job.records_moved,
                "records_failed": job.records_failed,
                "target_version": job.target.version, "last_error": job.last_error,
            },
            "active_version": self.active.version if self.active else None,
            "versions": [{"version": v.version, "status": v.registration.status, "records": v.records, "skipped_reason": v.skipped_reason} for v in self.versions],
            "remaining": self.remaining,
            "percent": self.percent,
            "eta_seconds": self.eta_seconds,
            "eta_text": self.eta_text,
            "running": self.is_active,
        }


def job_progress(*, environment: Environment, registrations: list[KeyRegistration] | None = None) -> Progress:
    """Per-version record counts (one grouped count over the environment's records) and
    the latest job's progress and time-left estimate.

    ``registrations``: the environment's key versions, newest first, when the caller
    already loaded them (the environment page), so that every panel of one page shows each
    version's status from the same read; loaded here otherwise."""
    if registrations is None:
        registrations = list(KeyRegistration.objects.filter(environment=environment).order_by("-version"))
    counts = dict(
        Record.objects.filter(environment=environment).values_list("registration_id").annotate(n=Count("id")).values_list("registration_id", "n")
    )
    job = ReencryptionJob.objects.filter(environment=environment).select_related("target").first()
    skipped = dict(job.skipped_versions) if job is not None and job.status != Status.CANCELLED else {}
    active = next((r for r in registrations if r.status == KeyStatus.ACTIVE), None)
    versions = [VersionProgress(r, counts.get(r.pk, 0), skipped.get(str(r.version), "")) for r in registrations]
    remaining = sum(v.records for v in versions if active is None or v.registration.pk != active.pk)
    percent = eta = None
    if job is not None:
        total = max(job.records_total, job.records_moved + remaining, 1)
        percent = 100 if remaining == 0 else min(99, math.floor(100 * (total - remaining) / total))
        if job.status in (Status.QUEUED, Status.RUNNING) and job.records_per_second > 0:
            movable = sum(v.records for v in versions if not v.skipped_reason and (active is None or v.registration.pk != active.pk))
            eta = math.ceil(movable / job.records_per_second)
    return Progress(job, active, versions, remaining, percent, eta)


def eta_text(seconds: int | None) -> str:
    """"about 3 min left", "less than a minute left", or "" when unknown."""
    if seconds is None:
        return ""
    if seconds < 60:
        return "less than a minute left"
    if seconds < 3600:
        return f"about {math.ceil(seconds / 60)} min left"
    return f"about {seconds // 3600} h {math.ceil(seconds % 3600 / 60)} min left"
