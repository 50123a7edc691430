"""Pruning validation runs, so that periodic re-validation does not grow the table forever.

Every ``REVALIDATION_INTERVAL_SECONDS`` each key version in service gets a new
``ValidationRun`` row (96 a day at the 15-minute default). The pages show only the latest
ones, and the audit trail lives in ``AuditEvent`` rows, which pruning never touches. A run
is deleted when all of these hold:

* it is not among the ``keep_latest`` most recent runs of its key version
  (by ``started_at``, then id);
* it is not still running;
* it is not a failure (``failed`` or ``unverified``) younger than ``keep_failures_days``:
  failures are what an operator looks back at, so they are kept longer.
"""

from __future__ import annotations

import datetime
import logging

from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from keys.models import ValidationRun

log = logging.getLogger(__name__)

Outcome = ValidationRun.Outcome
FAILURES = (Outcome.FAILED, Outcome.UNVERIFIED)
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
        if outcome != Outcome.RUNNING and not (outcome in FAILURES and started_at >= cutoff)
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
