"""Validation runs: queueing a run's job (marking it ``not_queued`` when the broker cannot be
reached), and pruning old runs.

Queueing: every service that queues a validation job does it through ``validation_enqueue``
(after commit). When the broker cannot be reached the run is marked ``not_queued`` (a new
``not_queued`` run is made when the job had none yet, e.g. right after registering), so the
page can say so truthfully and the validation sweep (``keys.services.validation
.validations_requeue``, Celery beat every ``VALIDATION_REQUEUE_INTERVAL_SECONDS``) queues it
again.

Pruning keeps periodic re-validation from growing the table forever.

Every ``REVALIDATION_INTERVAL_SECONDS`` each key version in service gets a new
``ValidationRun`` row (96 a day at the 15-minute default). The pages show only the latest
ones, and the audit trail lives in ``AuditEvent`` rows, which pruning never touches. A run
is deleted when all of these hold:

* it is not among the ``keep_latest`` most recent runs of its key version
  (by ``started_at``, then id);
* it is not still running, nor waiting to be queued again (``not_queued``);
* it is not a failure (``failed`` or ``unverified``) younger than ``keep_failures_days``:
  failures are what an operator looks back at, so they are kept longer.
"""

from __future__ import annotations

import datetime
import logging
import math

from django.conf import settings
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from keys import queue
from keys.clock import now
from keys.models import KeyRegistration, ValidationRun

log = logging.getLogger(__name__)

Outcome = ValidationRun.Outcome
FAILURES = (Outcome.FAILED, Outcome.UNVERIFIED)
# Runs whose job is (or should be) on its way: never pruned.
UNFINISHED = (Outcome.RUNNING, Outcome.NOT_QUEUED)


def queued_run(registration: KeyRegistration, trigger: str) -> ValidationRun:
    """The run of a validation job the caller is about to queue (after commit, through
    ``validation_enqueue(run_id=…)``), "running" and queued now (``queued_at``): the
    registration's newest unfinished run (one left "not queued", say), else a new one with
    ``trigger``. From the commit on, the environment page sees a validation on its way and
    follows it live (``validation.validation_in_progress``), before a worker takes the job;
    the job fills in this run (``validation._start_run``). Call it inside the transaction
    that holds the registration row's lock."""
    run = registration.validation_runs.filter(outcome__in=UNFINISHED).order_by("-started_at", "-id").first()
    if run is None:
        return ValidationRun.objects.create(
            registration=registration, trigger=trigger, outcome=Outcome.RUNNING, queued_at=now()
        )
    run.outcome, run.queued_at = Outcome.RUNNING, now()
    run.save(update_fields=["outcome", "queued_at"])
    return run


def validation_enqueue(*, registration_id: int, trigger: str, run_id: int | None = None) -> bool:
    """Queue the validation job of a registration; call it from ``transaction.on_commit``.

    ``run_id``: the ``running`` run the job will fill in, if the caller made one ("Validate
    again", the sweep). Returns whether the job was queued (in eager mode: run). When the
    broker cannot be reached (``keys.queue.enqueue_validation`` logged it), that run, or a
    new one with ``trigger`` if there was none, becomes ``not_queued``: the page says the
    validation will be retried, and the sweep queues it again. A registration that vanished
    meanwhile gets no run."""
    if queue.enqueue_validation(registration_id, trigger):
        return True
    if run_id is not None:
        if ValidationRun.objects.filter(pk=run_id, outcome__in=UNFINISHED).update(outcome=Outcome.NOT_QUEUED):
            return False
    if KeyRegistration.objects.filter(pk=registration_id).exists():
        ValidationRun.objects.create(registration_id=registration_id, trigger=trigger, outcome=Outcome.NOT_QUEUED)
    return False


def requeue_within_minutes() -> int:
    """The most minutes a ``not_queued`` validation waits for the sweep to queue it again
    (``VALIDATION_REQUEUE_INTERVAL_SECONDS``, rounded up), for the page's words."""
    return max(1, math.ceil(settings.VALIDATION_REQUEUE_INTERVAL_SECONDS / 60))
DELETE_BATCH_SIZE = 1000


def validation_runs_to_prune(
    *, keep_latest: int, keep_failures_days: int, now: datetime.datetime | None = None
) -> list[int]:
    """Ids of the runs that ``validation_runs_prune`` would delete (rules in the module
    docstring). ``keep_latest`` is at least 1: the latest run of a version is its status."""
    if keep_latest < 1:
        raise ValueError("keep_latest must be at least 1: a key version's latest run is always kept")
    if keep_failures_days < 0:
        raise ValueError("keep_failures_days must not be negative")
    cutoff = (now or timezone.now()) - datetime.timedelta(days=keep_failures_days)
    # Only the window condition goes into the query: any other filter would change which
    # rows are numbered (Django keeps non-window conditions in the inner query).
    ranked = (
        ValidationRun.objects.annotate(
            newness=Window(
                RowNumber(), partition_by=[F("registration_id")], order_by=[F("started_at").desc(), F("id").desc()]
            )
        )
        .filter(newness__gt=keep_latest)
        .values_list("pk", "outcome", "started_at")
    )
    return [
        pk
        for pk, outcome, started_at in ranked.iterator()
        if outcome not in UNFINISHED and not (outcome in FAILURES and started_at >= cutoff)
    ]


def validation_runs_prune(
    *, keep_latest: int, keep_failures_days: int, now: datetime.datetime | None = None
) -> int:
    """Delete the runs ``validation_runs_to_prune`` names, ``DELETE_BATCH_SIZE`` per
    statement (short locks). Returns how many were deleted. Safe to run twice or in two
    workers at once: a row already deleted is simply not counted again."""
    ids = validation_runs_to_prune(keep_latest=keep_latest, keep_failures_days=keep_failures_days, now=now)
    deleted = 0
    for start in range(0, len(ids), DELETE_BATCH_SIZE):
        count, _ = ValidationRun.objects.filter(pk__in=ids[start : start + DELETE_BATCH_SIZE]).delete()
        deleted += count
    if deleted:
        log.info("pruned %s validation runs", deleted, extra={"keep_latest": keep_latest,
                                                             "keep_failures_days": keep_failures_days})
    return deleted
