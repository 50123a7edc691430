"""The audit trail: one ``AuditEvent`` row per state change (actor, time, before, after)."""

from __future__ import annotations

from typing import Any

from environments.models import Environment
from keys.models import AuditEvent, KeyRegistration


def audit(
    *,
    action: str,
    environment: Environment | None = None,
    registration: KeyRegistration | None = None,
    actor=None,
    actor_label: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    message: str = "",
) -> AuditEvent:
    """Append one audit event. ``actor`` is a user or None (then ``actor_label`` says which job)."""
    if environment is None and registration is not None:
        environment = registration.environment
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        action=action,
        environment=environment,
        registration=registration,
        actor=user,
        actor_label=actor_label,
        before=before or {},
        after=after or {},
        message=message[:500],
    )
