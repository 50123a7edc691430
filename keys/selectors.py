"""Non-trivial reads of key versions and their history, for pages and admin, and the
context builders that views and template tags share (``validation_context``,
``lifecycle_context``): a template tag never imports a view module."""

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db.models import Prefetch, Q
from django.http import Http404
from django.urls import reverse

from environments.models import Environment, Membership
from environments.selectors import get_environment_for_user
from keys import diagnosis
from keys.models import AuditEvent, KeyRegistration, ReencryptionJob, ValidationRun
from keys.services import lifecycle, reencryption
from keys.services.validation import REQUESTABLE_STATUSES, staleness, validation_in_progress
from keys.services.validation_runs import requeue_within_minutes

Status = KeyRegistration.Status
JobStatus = ReencryptionJob.Status

# How many validation runs a key version's history panel shows.
VALIDATION_HISTORY_LENGTH = 10


def get_registration_for_user(
    user, environment_id, registration_id, *, requirement: str = Membership.VIEW
) -> tuple[KeyRegistration, Membership]:
    """The key version with public id ``registration_id`` of the environment
    ``environment_id``, and the user's membership. ``Http404`` for anything outside the
    user's organizations, or a version of another environment (indistinguishable);
    ``PermissionDenied`` when the user's role does not meet ``requirement``."""
    environment, membership = get_environment_for_user(user, environment_id, requirement=requirement)
    registration = (
        KeyRegistration.objects.filter(environment=environment, public_id=registration_id)
        .select_related("environment", "environment__organization", "created_by")
        .first()
    )
    if registration is None:
        raise Http404("No such key version.")
    return registration, membership


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


def role_mode_enabled() -> bool:
    """Whether the platform offers role mode (issue 14): it has its own AWS principal
    (``PLATFORM_AWS_PRINCIPAL_ARN``), the one a customer's trust policy names."""
    return bool(settings.PLATFORM_AWS_PRINCIPAL_ARN)


def environment_overview(*, environment: Environment) -> dict[str, Any]:
    """What the environment page shows: key versions (newest first), recent audit events,
    and the environment's external ID when role mode is enabled (``""`` otherwise)."""
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
        # Not a secret (AWS: "the external ID is not a secret"), so every member sees it.
        "external_id": environment.aws_external_id if role_mode_enabled() else "",
    }


def not_queued_message(registration: KeyRegistration) -> str:
    """What the page says of a validation whose job could not be queued (``not_queued`` run):
    the sweep queues it again within ``VALIDATION_REQUEUE_INTERVAL_SECONDS``."""
    minutes = requeue_within_minutes()
    return (
        f"Validation of key version {registration.version} could not be queued; it will be retried "
        f"automatically within {minutes} minute{'s' if minutes != 1 else ''}."
    )


def validation_not_queued(registration: KeyRegistration) -> str:
    """``not_queued_message`` if the version's latest validation run could not be queued
    (right after a service queued it: registering, editing, new credentials), else ""."""
    latest = registration.validation_runs.order_by("-started_at", "-id").first()
    return not_queued_message(registration) if latest and latest.outcome == ValidationRun.Outcome.NOT_QUEUED else ""


def validation_context(registration: KeyRegistration, membership: Membership) -> dict[str, Any]:
    """What the status cell and validation panel of one key version show."""
    runs = recent_validation_runs(registration) if registration.is_byok else []
    latest = runs[0] if runs else None
    # The newest run with checks: a running run shows its last attempt's, else the previous run's.
    checked = next((r for r in runs if r.checks), None)
    can_change = membership.can_change
    busy = validation_in_progress(registration, latest)
    return {
        "registration": registration,
        "runs": runs,
        "latest_run": latest,
        "checked_run": checked,
        "busy": busy,
        "not_queued": not_queued_message(registration) if latest and latest.outcome == ValidationRun.Outcome.NOT_QUEUED else "",
        "staleness": staleness(registration) if registration.is_byok else "",
        # Why the latest run could not verify (a transient KMS or STS failure), in a few words.
        "unverified_note": _unverified_note(latest),
        # Not while a validation is queued or running: it would only queue a second one.
        "can_validate": can_change and registration.is_byok and registration.status in REQUESTABLE_STATUSES and not busy,
        "can_edit": can_change and registration.is_editable,
        "can_activate": membership.can_activate(registration),
        "status_url": reverse(
            "registration_status", args=[registration.environment.public_id, registration.public_id]
        ),
    }


def _replaceable(registration: KeyRegistration) -> bool:
    """A BYOK version in service (or inaccessible) whose access may be replaced in place:
    not one that never served (it is edited instead), not while a validation runs."""
    return (
        registration.is_byok and registration.is_live and not registration.is_editable
        and registration.status != Status.VALIDATING
    )


def _unverified_note(run: ValidationRun | None) -> str:
    if run is None or run.outcome != ValidationRun.Outcome.UNVERIFIED:
        return ""
    reason = run.failure_reason or next(
        (c.get("reason") for c in run.checks if c.get("status") == "fail" and c.get("reason")), ""
    )
    return diagnosis.short_cause(reason or "")


def lifecycle_context(
    environment: Environment, membership: Membership, registrations: list[KeyRegistration] | None = None
) -> dict[str, Any]:
    """Context of ``keys/partials/lifecycle_body.html``: the revocation bound, each
    version's records and actions, the re-encryption job and what may be done with it.

    ``registrations``: the key versions the page already loaded (``environment_overview``),
    newest first. One status per version on a page: the lifecycle card's records table must
    not read a version again and show a status its key versions table does not (a worker
    moving it from pending validation to validating between the two reads did)."""
    progress = reencryption.job_progress(environment=environment, registrations=registrations)
    job = progress.job
    can_change, is_owner = membership.can_change, membership.is_owner
    unfinished = job is not None and job.is_unfinished
    stale = unfinished and job.status != JobStatus.PAUSED and reencryption.is_stale(job)
    rows = [
        {
            "progress": v,
            "registration": v.registration,
            # The lifecycle card offers activation for platform-managed versions; a BYOK
            # version's button is in its validation panel. The rule is the same.
            "can_activate": membership.can_activate(v.registration) and not v.registration.is_byok,
            "can_discard": can_change and v.registration.is_editable,
            # A version that never served is edited instead (all five items, not just the credentials).
            # In role mode the role ARN is replaced instead (there are no IAM credentials).
            "can_replace_credentials": can_change and _replaceable(v.registration) and not v.registration.uses_role,
            "can_replace_role_arn": can_change and _replaceable(v.registration) and v.registration.uses_role,
            "can_retire": is_owner and v.registration.status == Status.DECRYPT_ONLY and v.records == 0,
            "drained": v.registration.status == Status.DECRYPT_ONLY and v.records == 0,
        }
        for v in progress.versions
    ]
    return {
        "environment": environment,
        "progress": progress,
        "job": job,
        "rows": rows,
        # From the versions already loaded: no extra query on the environment page.
        "bound": lifecycle.revocation_bound(role_mode=any(
            v.registration.uses_role and v.registration.status in lifecycle.ROLE_BOUND_STATUSES for v in progress.versions
        )),
        "can_change": can_change,
        "is_owner": is_owner,
        "can_start": can_change and not unfinished and progress.remaining > 0 and progress.active is not None,
        "can_pause": can_change and unfinished and job.status in (JobStatus.QUEUED, JobStatus.RUNNING),
        "can_resume": can_change and job is not None and (job.status in (JobStatus.PAUSED, JobStatus.FAILED) or stale),
        "can_cancel": can_change and unfinished,
        "stale": stale,
        "progress_url": reverse("reencryption_progress", args=[environment.public_id]),
    }
