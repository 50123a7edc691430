"""The audit trail in the words an admin uses (``{% load audit_tags %}``).

Raw statuses and actions stay in Django admin; the environment page says what happened:
"Validation started", "Activated; version 1 is now decrypt-only".
"""

from __future__ import annotations

from django import template

from keys import diagnosis
from keys.models import AuditEvent, KeyRegistration, ReencryptionJob

register = template.Library()

S = KeyRegistration.Status
A = AuditEvent.Action

# (before, after) → sentence; "{v}" is the event's key version.
_TRANSITIONS: dict[tuple[str, str], str] = {
    (S.PENDING_VALIDATION, S.VALIDATING): "Validation of version {v} started",
    (S.FAILED, S.VALIDATING): "Validation of version {v} started",
    (S.VALID, S.VALIDATING): "Validation of version {v} started",
    (S.VALIDATING, S.VALID): "Validation passed: version {v} is valid and can be activated",
    (S.VALIDATING, S.FAILED): "Validation failed: version {v} cannot be used yet",
    (S.VALIDATING, S.PENDING_VALIDATION): "Validation could not reach KMS: version {v} stays pending until it is validated again",
    (S.FAILED, S.PENDING_VALIDATION): "Version {v} queued for validation again",
    (S.VALID, S.PENDING_VALIDATION): "Version {v} queued for validation again",
    (S.VALID, S.ACTIVE): "Activated: version {v} encrypts new records",
    (S.DECRYPT_ONLY, S.ACTIVE): "Activated again: version {v} encrypts new records",
    (S.ACTIVE, S.DECRYPT_ONLY): "Version {v} is now decrypt-only: another version was activated",
    (S.ACTIVE, S.INACCESSIBLE): "KMS refused access: version {v} stopped serving",
    (S.DECRYPT_ONLY, S.INACCESSIBLE): "KMS refused access: version {v} stopped serving",
    (S.INACCESSIBLE, S.ACTIVE): "Access restored: version {v} serves again",
    (S.INACCESSIBLE, S.DECRYPT_ONLY): "Access restored: version {v} is readable again",
    (S.DECRYPT_ONLY, S.RETIRED): "Version {v} retired",
    (S.PENDING_VALIDATION, S.DISCARDED): "Version {v} discarded",
    (S.FAILED, S.DISCARDED): "Version {v} discarded",
    (S.VALID, S.DISCARDED): "Version {v} discarded",
}

_ACTIONS: dict[str, str] = {
    A.REGISTRATION_CREATED: "Version {v} registered",
    A.REGISTRATION_EDITED: "Version {v} edited",
    A.CREDENTIALS_REPLACED: "IAM credentials of version {v} replaced",
    A.MATERIAL_DESTROYED: "Key material of version {v} destroyed",
    A.SEALING_KEY_ROTATED: "Credentials of version {v} re-sealed under a new sealing key",
}

_RUN_OUTCOMES = {
    "queued": "Validation of version {v} requested",
    "passed": "Validation of version {v} passed",
    "failed": "Validation of version {v} failed",
    "unverified": "Validation of version {v} could not reach KMS",
}


def _status_word(status: str, event: AuditEvent) -> str:
    """The label of a key version's status, or of a re-encryption job's for a job's event
    (its ``after`` names the job): "Queued", not "queued"."""
    labels = ReencryptionJob.Status if "job" in event.after else S
    try:
        return labels(status).label
    except ValueError:
        return status


@register.filter
def audit_summary(event: AuditEvent) -> str:
    """One sentence for an audit event, in the admin's words."""
    version = event.registration.version if event.registration_id and event.registration else "?"
    before, after = event.before.get("status"), event.after.get("status")
    if event.action == A.STATUS_CHANGED and (before, after) in _TRANSITIONS:
        sentence = _TRANSITIONS[(before, after)].format(v=version)
        reason = event.after.get("reason")
        if reason and after == S.INACCESSIBLE and diagnosis.is_sts_reason(reason):
            # The role could not be assumed: STS refused, not KMS.
            sentence = sentence.replace("KMS refused access", "STS refused the role")
        return f"{sentence} ({reason.replace('_', ' ')})" if reason else sentence
    if event.action == A.VALIDATION_RUN and event.after.get("outcome") in _RUN_OUTCOMES:
        return _RUN_OUTCOMES[event.after["outcome"]].format(v=version)
    if event.action == A.CREDENTIALS_REPLACED and "role_arn" in event.after:
        return f"Role ARN of version {version} replaced"  # role mode: no IAM credentials
    if event.action in _ACTIONS and event.registration_id:
        return _ACTIONS[event.action].format(v=version)
    return event.get_action_display()


@register.filter
def audit_change(event: AuditEvent) -> str:
    """"Pending validation → Validating" for a status change (labels, not raw values); "" otherwise."""
    before, after = event.before.get("status"), event.after.get("status")
    if not (before or after):
        return ""
    return f"{_status_word(before, event) if before else '—'} → {_status_word(after, event) if after else '—'}"


# Words that make an event's message no more informative than its summary.
_FILLER = {"of", "the", "a", "against", "kms", "key", "is", "now", "to", "and"}


def _words(text: str) -> set[str]:
    return {w.strip(".,:;()").lower() for w in text.split()} - {""}


@register.filter
def audit_detail(event: AuditEvent) -> str:
    """The event's own message when it says more than :func:`audit_summary` ("" otherwise):
    "Version 2 activated; version 1 is decrypt-only." stays, "Validation passed." goes."""
    extra = _words(event.message) - _words(audit_summary(event)) - _FILLER
    return event.message if extra else ""
