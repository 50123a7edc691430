"""Queueing background work by Celery task name, for services (docs/architecture.md,
"Packages and imports").

Services enqueue through this module and never import ``keys.tasks``: the tasks call the
services, so an import the other way round would close a cycle. A task is found by its
registered name in the Celery app's registry (``keys.tasks`` gives every task an explicit
``name=``, and ``KeysConfig.ready`` imports it), so eager mode (no broker: the embedded
default and the tests) still runs it inline, and a test that patches a task's ``delay`` or
``apply_async`` sees the call.

Call these from ``transaction.on_commit``: a job must never see a row that is not committed.
A broker that cannot be reached never turns an already committed change into a 500: it is
logged and reported to the caller (``False``), and a beat task queues the work again: the
validation sweep (``keys.services.validation.validations_requeue``, which
``keys.services.validation_runs.validation_enqueue`` leaves a ``not_queued`` run for) or the
stale re-encryption job resumer; the page's "Validate again" / "Resume" can too.
"""

from __future__ import annotations

import logging

from celery import current_app
from celery.app.task import Task
from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)

# The stable names of the tasks (beat schedules and queued messages refer to them).
VALIDATE_REGISTRATION = "keys.tasks.validate_registration"
REVALIDATE_ACTIVE_REGISTRATIONS = "keys.tasks.revalidate_active_registrations"
REENCRYPT_ENVIRONMENT = "keys.tasks.reencrypt_environment"
RESUME_STALE_REENCRYPTION_JOBS = "keys.tasks.resume_stale_reencryption_jobs"
REQUEUE_VALIDATIONS = "keys.tasks.requeue_validations"


def task(name: str) -> Task:
    """The registered task called ``name`` (``KeyError`` if ``keys.tasks`` was never imported)."""
    return current_app.tasks[name]


def enqueue_validation(registration_id: int, trigger: str) -> bool:
    """Queue the validation of one registration (``keys.tasks.validate_registration``).
    Returns whether it was queued (in eager mode: run).

    An unreachable broker is logged and answers ``False``; services call this through
    ``keys.services.validation_runs.validation_enqueue``, which marks the run ``not_queued``
    for the validation sweep to queue again."""
    try:
        task(VALIDATE_REGISTRATION).delay(registration_id, trigger)
    except OperationalError:
        log.error("could not queue validation of registration %s (%s): broker unreachable", registration_id, trigger)
        return False
    return True


def enqueue_reencryption(job_id: int, *, countdown: float | None = None) -> None:
    """Queue one slice of a re-encryption job (``keys.tasks.reencrypt_environment``).

    An unreachable broker is logged; the job stays queued and the beat task
    ``resume_stale_reencryption_jobs`` (or the page's "Resume") queues it again."""
    try:
        task(REENCRYPT_ENVIRONMENT).apply_async((job_id,), countdown=countdown)
    except OperationalError:
        log.error("could not queue re-encryption job %s: broker unreachable", job_id)
