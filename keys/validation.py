"""Validation services: check a registration against KMS, record the run, move its status.

The checks themselves (what DescribeKey and Decrypt must say, and the cause and remedy of
each failure) live in ``keys.diagnosis``; this module stores them and performs the state
transitions, with an audit event for each.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction

from environments.models import Membership

from . import diagnosis as diag
from .clock import now
from .models import AuditEvent, KeyRegistration, ValidationRun
from .services import (
    CredentialsUnreadable,
    TransitionConflict,
    audit,
    registration_credentials,
    registration_transition,
)

log = logging.getLogger(__name__)

Status = KeyRegistration.Status
Outcome = ValidationRun.Outcome
Trigger = ValidationRun.Trigger

# Statuses whose registration is checked by the first validation (after registering,
# "Validate again", or new credentials).
INITIAL_STATUSES = frozenset({Status.PENDING_VALIDATION, Status.VALIDATING, Status.FAILED, Status.VALID})
# Statuses that periodic re-validation watches.
WATCHED_STATUSES = frozenset({Status.ACTIVE, Status.DECRYPT_ONLY, Status.INACCESSIBLE})

JOB = "job: validation"


class TransientValidationError(Exception):
    """KMS could not be reached or throttled us; the task retries with backoff."""


def _unreadable_diagnosis(message: str) -> diag.Diagnosis:
    return diag.Diagnosis(
        outcome="failed",
        checks=(
            diag.CheckResult(
                name="credentials.readable",
                label="IAM credentials can be read",
                status="fail",
                aws_error_code=None,
                cause=message,
                remedy="Enter the access key ID and secret access key again with “Replace credentials”.",
            ),
        ),
        failure_reason="credentials_unreadable",
        transient=False,
    )


def _diagnose(registration: KeyRegistration) -> diag.Diagnosis:
    try:
        credentials = registration_credentials(registration=registration)
    except CredentialsUnreadable as e:
        return _unreadable_diagnosis(str(e))
    return diag.diagnose(
        kms_key_arn=registration.kms_key_arn,
        region=registration.region,
        account_id=registration.account_id,
        encrypted_data_key=bytes(registration.encrypted_data_key or b""),
        encryption_context=registration.encryption_context or None,
        credentials=credentials,
        endpoint_url=settings.AWS_KMS_ENDPOINT_URL,
        check_excess_privilege=settings.VALIDATION_CHECK_EXCESS_PRIVILEGE,
    )


def _store_run(registration: KeyRegistration, trigger: str, result: diag.Diagnosis, *, final: bool) -> ValidationRun:
    outcome = {"passed": Outcome.PASSED, "failed": Outcome.FAILED}.get(result.outcome, Outcome.UNVERIFIED)
    run = ValidationRun.objects.create(
        registration=registration,
        trigger=trigger,
        outcome=outcome,
        failure_reason=result.failure_reason or "",
        checks=[dataclasses.asdict(c) for c in result.checks],
        finished_at=now(),
    )
    audit(
        action=AuditEvent.Action.VALIDATION_RUN,
        registration=registration,
        actor_label=JOB if trigger != Trigger.PERIODIC else "job: periodic re-validation",
        after={"outcome": outcome, "trigger": trigger, "reason": result.failure_reason or "", "final": final},
        message=f"Validation of version {registration.version}: {run.get_outcome_display().lower()}.",
    )
    return run


def registration_validate(*, registration_id: int, trigger: str, final_attempt: bool = True) -> ValidationRun | None:
    """Validate one BYOK registration against KMS and move its status accordingly.

    Idempotent: a registration that vanished, is not BYOK, or is in a status this trigger
    does not act on is left alone (returns None). First validation: pending → validating
    → valid / failed; a transient KMS failure raises ``TransientValidationError`` unless
    ``final_attempt``, in which case the run ends "could not verify" and the registration
    goes back to pending validation (never failed). Periodic validation of an active or
    decrypt-only version: a permanent failure makes it inaccessible (cached data keys are
    evicted through its generation), a success restores an inaccessible one, a transient
    failure flips nothing and records since when KMS is unreachable.
    """
    registration = KeyRegistration.objects.filter(pk=registration_id).select_related("environment").first()
    if registration is None or not registration.is_byok:
        return None
    if trigger == Trigger.PERIODIC:
        if registration.status not in WATCHED_STATUSES:
            return None
        return _revalidate(registration)
    if registration.status not in INITIAL_STATUSES:
        return None
    if registration.status != Status.VALIDATING:
        try:
            registration = registration_transition(registration=registration, to=Status.VALIDATING, actor_label=JOB)
        except TransitionConflict:
            return None
    result = _diagnose(registration)
    if result.transient and not final_attempt:
        _store_run(registration, trigger, result, final=False)
        raise TransientValidationError(result.failure_reason or "transient")
    run = _store_run(registration, trigger, result, final=True)
    to = {Outcome.PASSED: Status.VALID, Outcome.FAILED: Status.FAILED}.get(run.outcome, Status.PENDING_VALIDATION)
    updates = {"last_verified_at": now()} if to == Status.VALID else {}
    try:
        registration_transition(
            registration=registration, to=to, actor_label=JOB,
            message=f"Validation {run.get_outcome_display().lower()}.", updates=updates,
        )
    except TransitionConflict:
        log.info("registration %s changed status during validation", registration.pk)
    return run


def _revalidate(registration: KeyRegistration) -> ValidationRun:
    result = _diagnose(registration)
    run = _store_run(registration, Trigger.PERIODIC, result, final=True)
    if run.outcome == Outcome.UNVERIFIED:
        # KMS unreachable or throttling is not a revocation: flip nothing, remember since when.
        KeyRegistration.objects.filter(pk=registration.pk, kms_unreachable_since__isnull=True).update(
            kms_unreachable_since=now()
        )
        return run
    if run.outcome == Outcome.PASSED:
        KeyRegistration.objects.filter(pk=registration.pk).update(last_verified_at=now(), kms_unreachable_since=None)
        if registration.status == Status.INACCESSIBLE:
            registration_restore(registration=registration, actor_label="job: periodic re-validation")
        return run
    if registration.status != Status.INACCESSIBLE:
        registration_mark_inaccessible(
            registration=registration, reason=run.failure_reason or "refused", actor_label="job: periodic re-validation"
        )
    return run


def registration_mark_inaccessible(*, registration: KeyRegistration, reason: str, actor_label: str) -> KeyRegistration | None:
    """Make an active or decrypt-only version inaccessible after a permanent KMS refusal
    (``reason`` is a ``KmsError.reason`` such as ``disabled``), evict its cached data key
    everywhere (generation bump), and email the organization's owners and admins.

    Returns None if another process already did it.
    """
    try:
        updated = registration_transition(
            registration=registration,
            to=Status.INACCESSIBLE,
            actor_label=actor_label,
            message=f"KMS refused access ({reason}); the data plane stopped using this key version.",
            updates={"restore_status": registration.status, "inaccessible_reason": reason, "kms_unreachable_since": None},
        )
    except TransitionConflict:
        return None
    _notify_admins(updated, reason)
    return updated


def registration_restore(*, registration: KeyRegistration, actor_label: str) -> KeyRegistration | None:
    """Return an inaccessible version to the status it had (active or decrypt-only) once
    KMS grants access again. Returns None if another process already did it."""
    to = registration.restore_status or Status.DECRYPT_ONLY
    if to == Status.ACTIVE and KeyRegistration.objects.filter(
        environment_id=registration.environment_id, status=Status.ACTIVE
    ).exclude(pk=registration.pk).exists():
        to = Status.DECRYPT_ONLY
    try:
        return registration_transition(
            registration=registration, to=to, actor_label=actor_label,
            message="KMS grants access again; the key version is back in service.",
            updates={"restore_status": "", "inaccessible_reason": "", "last_verified_at": now()},
        )
    except TransitionConflict:
        return None


def _notify_admins(registration: KeyRegistration, reason: str) -> None:
    environment = registration.environment
    recipients = list(
        Membership.objects.filter(
            organization_id=environment.organization_id,
            role__in=[Membership.Role.OWNER, Membership.Role.ADMIN],
        ).exclude(user__email="").values_list("user__email", flat=True)
    )
    if not recipients:
        return
    url = f"{settings.SITE_URL}/environments/{environment.public_id}/"
    send_mail(
        subject=f"[BYOK] {environment}: key version {registration.version} is inaccessible",
        message=(
            f"Periodic validation found that KMS refuses key version {registration.version} of "
            f"{environment} (reason: {reason}). Reads and writes that need it answer 503 "
            f"key_unavailable until access is restored.\n\nSee the checks, causes and remedies at {url}"
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=recipients,
        fail_silently=True,
    )


def registrations_due_for_revalidation() -> list[int]:
    """Ids of every BYOK registration periodic re-validation watches."""
    return list(
        KeyRegistration.objects.filter(kind=KeyRegistration.Kind.BYOK, status__in=WATCHED_STATUSES).values_list(
            "pk", flat=True
        )
    )


class ActivationError(Exception):
    """The registration cannot be activated (not valid, or another change won the race)."""


def registration_activate(*, registration: KeyRegistration, actor) -> KeyRegistration:
    """Make a valid (or decrypt-only) version the environment's active version; the
    previously active one becomes decrypt-only. One transaction; raises ``ActivationError``."""
    if registration.status not in (Status.VALID, Status.DECRYPT_ONLY):
        raise ActivationError(
            f"Only a valid key version can be activated; version {registration.version} is "
            f"{registration.get_status_display().lower()}."
        )
    with transaction.atomic():
        # Lock the environment's versions so two activations serialise.
        list(KeyRegistration.objects.select_for_update().filter(environment_id=registration.environment_id))
        current = KeyRegistration.objects.filter(
            environment_id=registration.environment_id, status=Status.ACTIVE
        ).first()
        try:
            if current is not None and current.pk != registration.pk:
                registration_transition(
                    registration=current, to=Status.DECRYPT_ONLY, actor=actor,
                    message=f"Version {registration.version} activated; version {current.version} is decrypt-only.",
                )
            activated = registration_transition(
                registration=registration, to=Status.ACTIVE, actor=actor,
                message=f"Version {registration.version} is now the active key version.",
                updates={"activated_at": now()},
            )
        except TransitionConflict as e:
            raise ActivationError(str(e)) from e
    return activated


def staleness(registration: KeyRegistration) -> str:
    """Plain words on how fresh the last verification is, for the environment page."""
    parts = []
    if registration.last_verified_at:
        ago = now() - registration.last_verified_at
        parts.append(f"last verified {_human(ago)} ago")
    if registration.kms_unreachable_since:
        parts.append(f"KMS unreachable since {registration.kms_unreachable_since:%Y-%m-%d %H:%M} UTC")
    return ", ".join(parts)


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
