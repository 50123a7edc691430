"""Non-trivial reads of key versions and their history, for pages and admin."""

from collections.abc import Iterable
from typing import Any

from django.db.models import Prefetch, Q

from environments.models import Environment
from keys.models import AuditEvent, KeyRegistration, ValidationRun

# How many validation runs a key version's history panel shows.
VALIDATION_HISTORY_LENGTH = 10


def active_versions_by_environment(environments: Iterable[Environment]) -> dict[int, KeyRegistration]:
    """The version serving each environment's new records, keyed by environment database
    id: the active one, or the one that was active until KMS refused it (inaccessible), so
    the environment list says what is wrong rather than "no active key"."""
    Status = KeyRegistration.Status
    ids = [e.pk for e in environments]
    qs = KeyRegistration.objects.filter(environment_id__in=ids).filter(
        Q(status=Status.ACTIVE) | Q(status=Status.INACCESSIBLE, restore_status=Status.ACTIVE)
    ).order_by("version")
    serving: dict[int, KeyRegistration] = {}
    for registration in qs:  # an active version wins over an inaccessible older one
        current = serving.get(registration.environment_id)
        if current is None or current.status != Status.ACTIVE:
            serving[registration.environment_id] = registration
    return serving


def recent_validation_runs(registration: KeyRegistration) -> list[ValidationRun]:
    """The key version's newest validation runs (newest first, at most
    ``VALIDATION_HISTORY_LENGTH``): the prefetched list when
    :func:`environment_overview` loaded it, else one query."""
    prefetched = getattr(registration, "recent_validation_runs", None)
    if prefetched is not None:
        return prefetched
    return list(registration.validation_runs.all()[:VALIDATION_HISTORY_LENGTH])


def environment_overview(*, environment: Environment) -> dict[str, Any]:
    """What the environment page shows: key versions (newest first) and recent audit events."""
    # One query for every version's recent validation runs (a sliced prefetch, run with a
    # window function), not one per version: the page's query count must not grow with
    # the number of key versions.
    recent_runs = Prefetch(
        "validation_runs",
        queryset=ValidationRun.objects.order_by("-started_at", "-id")[:VALIDATION_HISTORY_LENGTH],
        to_attr="recent_validation_runs",  # Django applies a sliced prefetch only with to_attr
    )
    registrations = list(
        environment.key_registrations.select_related("created_by").prefetch_related(recent_runs).order_by("-version")
    )
    audit_events = list(
        AuditEvent.objects.filter(environment=environment).select_related("actor", "registration")[:50]
    )
    return {
        "registrations": registrations,
        "active_registration": next((r for r in registrations if r.status == KeyRegistration.Status.ACTIVE), None),
        "audit_events": audit_events,
    }
