"""Thin Celery tasks: fetch by id, call a service. Arguments are ids (JSON)."""

import random

from celery import shared_task

from .validation import TransientValidationError, registration_validate, registrations_due_for_revalidation

MAX_RETRIES = 4


@shared_task(
    bind=True,
    acks_late=True,
    max_retries=MAX_RETRIES,
    soft_time_limit=60,
    time_limit=90,
    ignore_result=True,
)
def validate_registration(self, registration_id: int, trigger: str) -> None:
    """Validate a registration against KMS (``keys.validation.registration_validate``).

    Transient KMS failures are retried with exponential backoff and jitter; the last
    attempt records "could not verify" instead of failing the key. Running twice, or
    after the row vanished, is harmless.
    """
    final = self.request.retries >= MAX_RETRIES
    try:
        registration_validate(registration_id=registration_id, trigger=trigger, final_attempt=final)
    except TransientValidationError as e:
        countdown = min(300, 2 ** (self.request.retries + 1)) + random.uniform(0, 1)
        raise self.retry(exc=e, countdown=countdown)


@shared_task(ignore_result=True)
def revalidate_active_registrations() -> int:
    """Celery beat: queue a periodic validation of every active, decrypt-only or
    inaccessible BYOK registration. Returns how many were queued."""
    ids = registrations_due_for_revalidation()
    for registration_id in ids:
        validate_registration.delay(registration_id, "periodic")
    return len(ids)
