"""Thin Celery tasks: fetch by id, call a service. Arguments are ids (JSON).

Tasks import services, never the reverse: services enqueue through ``keys.queue`` by the
explicit task names given here (stable for beat schedules and messages already queued)."""

import random
from datetime import timedelta

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from keys import queue
from keys.services.reencryption import (
    RETRY_LATER_SECONDS,
    SLICE_SECONDS,
    Outcome,
    reencryption_jobs_to_resume,
    reencryption_run,
)
from keys.services.validation import (
    TransientValidationError,
    registration_validate,
    registration_validate_inline,
    registration_validation_timed_out,
    registrations_due_for_revalidation,
    validations_requeue,
)
from keys.services.validation_runs import validation_runs_prune

# Attempts after the first one; with BACKOFF_BASE_SECONDS = 2 the retries wait about
# 2, 4, 8 and 16 s (each plus up to as much again of jitter): under a minute in all.
MAX_RETRIES = 4
BACKOFF_BASE_SECONDS = 2
BACKOFF_MAX_SECONDS = 300


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with jitter for retry number ``retries`` (0 for the first retry):
    ``base * 2**retries`` plus a random share of it, so that jobs throttled together do
    not come back together. https://aws.amazon.com/builders-library/timeouts-retries-and-backoff-with-jitter/"""
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**retries)
    return delay + random.uniform(0, delay)


@shared_task(
    name=queue.VALIDATE_REGISTRATION,
    bind=True,
    acks_late=True,
    max_retries=MAX_RETRIES,
    soft_time_limit=60,
    time_limit=90,
    ignore_result=True,
)
def validate_registration(self, registration_id: int, trigger: str) -> None:
    """Validate a registration against KMS (``keys.services.validation.registration_validate``).

    Transient KMS failures are retried with exponential backoff and jitter; the last
    attempt records "could not verify" instead of failing the key. Running twice, or
    after the row vanished, is harmless.

    Eager mode (no broker: the embedded default and the tests) runs inside the web request
    that queued it: one attempt with short KMS timeouts and no retry
    (``registration_validate_inline``), so a KMS endpoint that never answers holds the
    request for seconds, not the worker's minutes. Celery's ``self.retry`` would raise
    ``Retry`` out of ``delay()`` (with ``task_eager_propagates``), i.e. out of the
    ``on_commit`` of a web request, and an eager retry ignores its countdown anyway.
    """
    if self.request.is_eager or self.request.called_directly:
        registration_validate_inline(registration_id=registration_id, trigger=trigger)
        return
    final = self.request.retries >= self.max_retries
    try:
        registration_validate(registration_id=registration_id, trigger=trigger, final_attempt=final)
    except TransientValidationError as e:
        raise self.retry(exc=e, countdown=backoff_seconds(self.request.retries))
    except SoftTimeLimitExceeded as e:
        if final:
            registration_validation_timed_out(registration_id=registration_id)
            return
        raise self.retry(exc=e, countdown=backoff_seconds(self.request.retries))



@shared_task(name=queue.REVALIDATE_ACTIVE_REGISTRATIONS, ignore_result=True)
def revalidate_active_registrations() -> int:
    """Celery beat: queue a periodic validation of every active, decrypt-only or
    inaccessible BYOK registration. Returns how many were queued.

    Each job expires after one interval: if workers were down, the next beat tick queues
    fresh ones instead of a backlog piling up."""
    ids = registrations_due_for_revalidation()
    for registration_id in ids:
        validate_registration.apply_async(
            (registration_id, "periodic"), expires=settings.REVALIDATION_INTERVAL_SECONDS
        )
    return len(ids)


@shared_task(name=queue.REQUEUE_VALIDATIONS, ignore_result=True)
def requeue_validations() -> int:
    """Celery beat, the validation sweep: queue again every validation whose job never
    reached the broker or was lost, and every version left pending validation
    (``keys.services.validation.validations_requeue``). Returns how many were queued."""
    return validations_requeue(stuck_after=timedelta(seconds=settings.VALIDATION_REQUEUE_AFTER_SECONDS))


@shared_task(name="keys.tasks.prune_validation_runs", ignore_result=True)
def prune_validation_runs() -> int:
    """Celery beat: delete old validation runs (``keys.services.validation_runs``), keeping the
    latest ``VALIDATION_RUNS_KEEP_LATEST`` per key version and failures for
    ``VALIDATION_RUNS_KEEP_FAILURES_DAYS`` days. Returns how many were deleted."""
    return validation_runs_prune(
        keep_latest=settings.VALIDATION_RUNS_KEEP_LATEST,
        keep_failures_days=settings.VALIDATION_RUNS_KEEP_FAILURES_DAYS,
    )


# Re-encryption


@shared_task(
    name=queue.REENCRYPT_ENVIRONMENT,
    bind=True,
    acks_late=True,
    ignore_result=True,
    soft_time_limit=SLICE_SECONDS + 120,
    time_limit=SLICE_SECONDS + 180,
)
def reencrypt_environment(self, job_id: int) -> None:
    """Move records of older key versions to the active one for one slice of time
    (``keys.services.reencryption.reencryption_run``), then queue itself again until none remain.

    ``acks_late``: a worker that dies mid-slice leaves its message unacknowledged; the
    batch in progress rolls back, and the job is taken over by the next runner (the
    broker's redelivery, or ``resume_stale_reencryption_jobs`` once its heartbeat is
    stale). Running twice is harmless: a second runner finds the job taken and returns.
    Eager mode (no broker) runs the whole job inline.
    """
    if self.request.is_eager or self.request.called_directly:
        reencryption_run(job_id=job_id, slice_seconds=None)
        return
    outcome = reencryption_run(job_id=job_id)
    if outcome == Outcome.CONTINUE:
        queue.enqueue_reencryption(job_id)
    elif outcome == Outcome.LATER:
        queue.enqueue_reencryption(job_id, countdown=RETRY_LATER_SECONDS)


@shared_task(name=queue.RESUME_STALE_REENCRYPTION_JOBS, ignore_result=True)
def resume_stale_reencryption_jobs() -> int:
    """Celery beat: queue again every re-encryption job whose worker died (no batch
    committed for ``REENCRYPTION_STALE_AFTER_SECONDS``). Returns how many."""
    ids = reencryption_jobs_to_resume()
    for job_id in ids:
        reencrypt_environment.apply_async((job_id,), expires=settings.REENCRYPTION_RESUME_INTERVAL_SECONDS)
    return len(ids)
