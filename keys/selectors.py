"""Non-trivial reads of key versions and their history, for pages and admin."""

from collections.abc import Iterable
from typing import Any

from environments.models import Environment

from .models import AuditEvent, KeyRegistration


def active_versions_by_environment(environments: Iterable[Environment]) -> dict[int, KeyRegistration]:
    """The active key version of each environment, keyed by environment database id."""
    ids = [e.pk for e in environments]
    qs = KeyRegistration.objects.filter(environment_id__in=ids, status=KeyRegistration.Status.ACTIVE)
    return {r.environment_id: r for r in qs}


def environment_overview(*, environment: Environment) -> dict[str, Any]:
    """What the environment page shows: key versions (newest first) and recent audit events."""
    registrations = list(environment.key_registrations.select_related("created_by").order_by("-version"))
    audit_events = list(
        AuditEvent.objects.filter(environment=environment).select_related("actor", "registration")[:50]
    )
    return {
        "registrations": registrations,
        "active_registration": next((r for r in registrations if r.status == KeyRegistration.Status.ACTIVE), None),
        "audit_events": audit_events,
    }
