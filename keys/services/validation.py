"""Validation services: check a registration against KMS, record the run, move its status.

The checks themselves (what DescribeKey and Decrypt must say, and the cause and remedy of
each failure) live in ``keys.diagnosis``; this module stores them as ``ValidationRun`` rows
and performs the state transitions, with an audit event for each (through
``keys.services.registrations.registration_transition``).

Which run does what, by the registration's status when the job starts::

    pending_validation | validating | failed | valid   first validation:
        -> validating -> valid | failed | pending_validation ("could not verify")
    active | decrypt_only | inaccessible                re-validation (periodic, manual):
        permanent failure -> inaccessible (generation bumped, owners and admins emailed)
        success           -> back to active / decrypt-only if it was inaccessible
        transient failure -> no status change; ``kms_unreachable_since`` is set

New IAM credentials (trigger ``credentials``, queued by ``registration_replace_credentials``)
take the same paths, by status: a version not yet in service is validated afresh; a version
in service is re-validated with the new credentials and, on success, keeps its serving status
(an active version stays active, a decrypt-only one decrypt-only, an inaccessible one returns
to its ``restore_status``): no new key version, nothing re-encrypted. On a permanent failure
an active or decrypt-only version becomes inaccessible with the reason: the old credentials
were overwritten, so the new ones are the only ones the data plane has, and it would be
refused anyway. A transient failure flips nothing (the data plane uses the new credentials
and answers for itself).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.functions import Coalesce

from environments.models import Membership
from keys import diagnosis as diag
from keys import kms, metrics
from keys.clock import now
from keys.models import AuditEvent, KeyRegistration, ValidationRun
from keys.services.audit import audit
from keys.services.refusals import Refused
from keys.services.registrations import TransitionConflict, registration_transition
from keys.services.sealing import CredentialsUnreadable, registration_credentials, role_session_name
from keys.services.validation_runs import UNFINISHED, queued_run, validation_enqueue

log = logging.getLogger(__name__)

Status = KeyRegistration.Status
Outcome = ValidationRun.Outcome
Trigger = ValidationRun.Trigger

# Statuses a first validation acts on (after registering, "Validate again", new credentials).
INITIAL_STATUSES = frozenset({Status.PENDING_VALIDATION, Status.VALIDATING, Status.FAILED, Status.VALID})
# Statuses that re-validation (periodic or manual) watches: the data plane depends on them.
WATCHED_STATUSES = frozenset({Status.ACTIVE, Status.DECRYPT_ONLY, Status.INACCESSIBLE})
# Statuses an owner or admin may ask to validate again (not while a validation runs).
REQUESTABLE_STATUSES = (INITIAL_STATUSES | WATCHED_STATUSES) - {Status.VALIDATING}
# What each trigger acts on. A duplicate "registration" job after the first one finished
# finds the registration valid or failed and does nothing: running a job twice is harmless.
ACTS_ON: dict[str, frozenset[str]] = {
    Trigger.REGISTRATION: frozenset({Status.PENDING_VALIDATION, Status.VALIDATING}),
    Trigger.MANUAL: INITIAL_STATUSES | WATCHED_STATUSES,
    Trigger.CREDENTIALS: INITIAL_STATUSES | WATCHED_STATUSES,
    Trigger.PERIODIC: WATCHED_STATUSES,
}
# A run still "running" after this long was abandoned (its job and all retries are gone):
# the page stops waiting for it. Longer than the task's retries and time limits together.
RUNNING_RUN_STALE_AFTER = timedelta(minutes=10)

# Without a broker (the embedded default of `make run`) the validation job runs inside the
# web request that registered a key or asked "Validate again". There it makes one attempt
# (``registration_validate_inline``) with these client options, so that a KMS endpoint that
# accepts the connection and never answers holds the request for seconds: DescribeKey and
# Decrypt wait at most connect + read seconds each, with no botocore retry (the GenerateDataKey
# dry run follows only a Decrypt that answered). With the worker's options and its five
# attempts the same hang held the request about 208 s.
INLINE_KMS_OPTIONS = kms.KmsClientOptions(connect_timeout=2.0, read_timeout=5.0, max_attempts=1)

JOB = "job: validation"
PERIODIC_JOB = "job: periodic re-validation"


class TransientValidationError(Exception):
    """KMS could not be reached or throttled us; the task retries with backoff."""


class ValidationRequestRefused(Refused):
    """The registration cannot be validated again (not BYOK, retired, or validating)."""


class ActivationError(Refused):
    """The registration cannot be activated (not valid, or another change won the race)."""


# Diagnosis


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
                reason="credentials_unreadable",
            ),
        ),
        failure_reason="credentials_unreadable",
        transient=False,
    )


def _diagnose(registration: KeyRegistration, options: kms.KmsClientOptions) -> diag.Diagnosis:
    if registration.uses_role:
        return _diagnose_role(registration, options)
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
        options=options,
    )


def _diagnose_role(registration: KeyRegistration, options: kms.KmsClientOptions) -> diag.Diagnosis:
    """Role mode: AssumeRole afresh (not the data plane's held session, so a trust policy
    changed since then is caught now), then DescribeKey and Decrypt with its credentials."""
    role = diag.RoleAccess(
        role_arn=registration.role_arn,
        external_id=registration.environment.aws_external_id,
        session_name=role_session_name(registration),
        platform_principal_arn=settings.PLATFORM_AWS_PRINCIPAL_ARN,
        duration_seconds=settings.STS_SESSION_DURATION_SECONDS,
        sts_endpoint_url=settings.AWS_STS_ENDPOINT_URL,
    )
    return diag.diagnose(
        kms_key_arn=registration.kms_key_arn,
        region=registration.region,
        account_id=registration.account_id,
        encrypted_data_key=bytes(registration.encrypted_data_key or b""),
        encryption_context=registration.encryption_context or None,
        credentials=None,
        role=role,
        endpoint_url=settings.AWS_KMS_ENDPOINT_URL,
        check_excess_privilege=settings.VALIDATION_CHECK_EXCESS_PRIVILEGE,
        options=options,
    )


# Runs


def _start_run(registration: KeyRegistration, trigger: str, *, queued: bool = False) -> ValidationRun:
    """The run this job fills in: the registration's newest unfinished run ("running":
    queued by "Validate again" or the sweep, or left by an earlier attempt of this job that
    is being retried or was interrupted; "not queued": its job never reached the broker),
    now "running", else a new one. Claiming it keeps one run per job, however many attempts
    the job needs. ``queued``: the caller is about to queue its job (``queued_at`` = now;
    ``validation_runs.queued_run``)."""
    if queued:
        return queued_run(registration, trigger)
    run = registration.validation_runs.filter(outcome__in=UNFINISHED).order_by("-started_at", "-id").first()
    if run is None:
        return ValidationRun.objects.create(registration=registration, trigger=trigger, outcome=Outcome.RUNNING)
    run.outcome = Outcome.RUNNING
    run.save(update_fields=["outcome"])
    return run


def _checks(result: diag.Diagnosis) -> list[dict]:
    return [dataclasses.asdict(c) for c in result.checks]


def _outcome(result: diag.Diagnosis) -> str:
    return {"passed": Outcome.PASSED, "failed": Outcome.FAILED}.get(result.outcome, Outcome.UNVERIFIED)


def _record_attempt(run: ValidationRun, result: diag.Diagnosis) -> None:
    """Keep the checks of an attempt that will be retried; the run stays running."""
    run.checks = _checks(result)
    run.failure_reason = result.failure_reason or ""
    run.save(update_fields=["checks", "failure_reason"])


def _finish_run(run: ValidationRun, registration: KeyRegistration, result: diag.Diagnosis, actor_label: str) -> ValidationRun:
    run.outcome = _outcome(result)
    run.failure_reason = result.failure_reason or ""
    run.checks = _checks(result)
    run.finished_at = now()
    run.save(update_fields=["outcome", "failure_reason", "checks", "finished_at"])
    metrics.validation_run_finished(outcome=run.outcome, trigger=run.trigger)
    audit(
        action=AuditEvent.Action.VALIDATION_RUN,
        registration=registration,
        actor_label=actor_label,
        after={"outcome": run.outcome, "trigger": run.trigger, "reason": run.failure_reason},
        message=f"Validation of version {registration.version}: {run.get_outcome_display().lower()}.",
    )
    return run


# The job


def registration_validate(
    *,
    registration_id: int,
    trigger: str,
    final_attempt: bool = True,
    kms_options: kms.KmsClientOptions = kms.DEFAULT_OPTIONS,
) -> ValidationRun | None:
    """Validate one BYOK registration against KMS and move its status accordingly.

    Idempotent: a registration that vanished, is not BYOK, or is in a status ``trigger``
    does not act on (``ACTS_ON``) is left alone and None is returned.

    First validation (pending, validating, failed, valid): pending → validating → valid or
    failed. A transient KMS failure raises ``TransientValidationError`` (the run stays
    "running" with this attempt's checks, the registration "validating") unless
    ``final_attempt``: then the run ends "could not verify" and the registration goes back
    to pending validation, never failed.

    Re-validation (active, decrypt-only, inaccessible): see ``_revalidate``; never raises
    for KMS errors.

    ``kms_options``: timeouts (seconds) and attempts of the KMS (and STS) calls.

    Returns the finished ``ValidationRun``.
    """
    registration = (
        KeyRegistration.objects.filter(pk=registration_id).select_related("environment__organization").first()
    )
    if registration is None or not registration.is_byok:
        return None
    if registration.status not in ACTS_ON.get(trigger, frozenset()):
        return None
    if registration.status in WATCHED_STATUSES:
        return _revalidate(registration, trigger, kms_options)
    return _validate_first(registration, trigger, final_attempt=final_attempt, kms_options=kms_options)


def registration_validate_inline(*, registration_id: int, trigger: str) -> ValidationRun | None:
    """The validation job run inside a web request (no broker: Celery's eager mode, the
    embedded default): ``registration_validate`` as its one and final attempt, with the short
    ``INLINE_KMS_OPTIONS``. A KMS that does not answer in time ends the run "could not
    verify" (the registration back to pending validation; an active one flips nothing), and
    its remedy says to use "Validate again" (``keys.diagnosis``: nothing retries by itself
    without a worker). Returns what ``registration_validate`` returns; raises nothing for
    KMS errors."""
    return registration_validate(
        registration_id=registration_id, trigger=trigger, final_attempt=True, kms_options=INLINE_KMS_OPTIONS
    )


def _validate_first(
    registration: KeyRegistration, trigger: str, *, final_attempt: bool, kms_options: kms.KmsClientOptions
) -> ValidationRun | None:
    if registration.status != Status.VALIDATING:
        try:
            registration = registration_transition(
                registration=registration, to=Status.VALIDATING, actor_label=JOB,
                message=f"Validation of version {registration.version} against KMS started.",
            )
        except TransitionConflict:
            return None  # another job got there first
    run = _start_run(registration, trigger)
    result = _diagnose(registration, kms_options)
    if result.transient and not final_attempt:
        _record_attempt(run, result)
        raise TransientValidationError(result.failure_reason or "transient")
    run = _finish_run(run, registration, result, JOB)
    to = {Outcome.PASSED: Status.VALID, Outcome.FAILED: Status.FAILED}.get(run.outcome, Status.PENDING_VALIDATION)
    updates = {"last_verified_at": now(), "kms_unreachable_since": None} if to == Status.VALID else {}
    try:
        registration_transition(
            registration=registration, to=to, actor_label=JOB,
            message=f"Validation {run.get_outcome_display().lower()}.", updates=updates,
        )
    except TransitionConflict:
        log.info("registration %s changed status during validation", registration.pk)
    return run


def registration_validation_timed_out(*, registration_id: int) -> None:
    """The job's last attempt hit its time limit: end its run "could not verify" (KMS
    too slow is not the customer's mistake) and put a validating registration back to
    pending validation. Harmless if there is nothing to end."""
    registration = KeyRegistration.objects.filter(pk=registration_id).select_related("environment").first()
    if registration is None:
        return
    running = registration.validation_runs.filter(outcome=Outcome.RUNNING)
    for run in running:
        run.outcome, run.failure_reason, run.finished_at = Outcome.UNVERIFIED, "timeout", now()
        run.save(update_fields=["outcome", "failure_reason", "finished_at"])
        metrics.validation_run_finished(outcome=run.outcome, trigger=run.trigger)
    if registration.status == Status.VALIDATING:
        try:
            registration_transition(
                registration=registration, to=Status.PENDING_VALIDATION, actor_label=JOB,
                message="Validation could not verify: KMS did not answer within the time limit.",
            )
        except TransitionConflict:
            pass


def _revalidate(registration: KeyRegistration, trigger: str, kms_options: kms.KmsClientOptions) -> ValidationRun:
    """Re-validate a version the data plane depends on. A permanent failure makes it
    inaccessible, a success restores an inaccessible one, a transient failure flips
    nothing and records since when KMS is unreachable (docs/architecture.md, "Rotation and revocation")."""
    label = PERIODIC_JOB if trigger == Trigger.PERIODIC else JOB
    run = _finish_run(_start_run(registration, trigger), registration, _diagnose(registration, kms_options), label)
    if run.outcome == Outcome.UNVERIFIED:
        # KMS unreachable or throttling is not a revocation: flip nothing, remember since when.
        KeyRegistration.objects.filter(pk=registration.pk, kms_unreachable_since__isnull=True).update(
            kms_unreachable_since=now()
        )
        return run
    if run.outcome == Outcome.PASSED:
        KeyRegistration.objects.filter(pk=registration.pk).update(last_verified_at=now(), kms_unreachable_since=None)
        if registration.status == Status.INACCESSIBLE:
            registration_restore(registration=registration, actor_label=label)
        return run
    reason = (run.failure_reason or "refused")[:40]
    if registration.status != Status.INACCESSIBLE:
        registration_mark_inaccessible(registration=registration, reason=reason, actor_label=label)
    else:
        # Still refused, maybe for another reason now (disabled, then deleted): say the latest.
        KeyRegistration.objects.filter(pk=registration.pk, status=Status.INACCESSIBLE).update(inaccessible_reason=reason)
    return run



def _who_refused(reason: str) -> str:
    """"STS refused AssumeRole" for a role that could not be assumed, else "KMS refused access"."""
    return "STS refused AssumeRole" if diag.is_sts_reason(reason) else "KMS refused access"


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
            message=f"{_who_refused(reason)} ({reason}); the data plane stopped using this key version.",
            updates={"restore_status": registration.status, "inaccessible_reason": reason[:40], "kms_unreachable_since": None},
        )
    except TransitionConflict:
        return None
    _notify_admins(updated, reason)
    return updated


def registration_restore(*, registration: KeyRegistration, actor_label: str) -> KeyRegistration | None:
    """Return an inaccessible version to the status it had (active or decrypt-only) once
    KMS grants access again; decrypt-only if another version was activated meanwhile.
    Returns None if another process already did it."""
    to = registration.restore_status or Status.DECRYPT_ONLY
    if to == Status.ACTIVE and KeyRegistration.objects.filter(
        environment_id=registration.environment_id, status=Status.ACTIVE
    ).exclude(pk=registration.pk).exists():
        to = Status.DECRYPT_ONLY
    try:
        return registration_transition(
            registration=registration, to=to, actor_label=actor_label,
            message="KMS grants access again; the key version is back in service.",
            updates={"restore_status": "", "inaccessible_reason": "", "last_verified_at": now(), "kms_unreachable_since": None},
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
            f"Validation found that KMS refuses key version {registration.version} of "
            f"{environment} (reason: {reason}). Reads and writes that need it answer 503 "
            f"key_unavailable until access is restored.\n\nSee the checks, causes and remedies at {url}"
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=recipients,
        fail_silently=True,
    )


def validations_requeue(*, stuck_after: timedelta) -> int:
    """The validation sweep (Celery beat, ``keys.tasks.requeue_validations``, every
    ``VALIDATION_REQUEUE_INTERVAL_SECONDS``): queue again every validation whose job was lost.
    The same pattern as the stale re-encryption job resumer: claim what is due with a
    compare-and-set on its timestamp, then queue it. Returns how many jobs it tried to queue.

    Due are:

    * a run ``not_queued`` (its job never reached the broker: ``validation_enqueue``);
    * a run ``running`` whose job was last queued (or, never queued, started) more than
      ``stuck_after`` ago: its job and every retry are gone (a worker killed, a broker that
      lost the message). ``stuck_after`` must exceed a job's retries and time limits;
    * a BYOK version pending validation (or validating) with no unfinished run and no run
      started, and no change, within ``stuck_after``: registered while the broker was
      unreachable before runs said so, or left "could not verify" by KMS. It gets a new
      ``running`` run with trigger ``registration``.

    Of several due runs of one version only the newest is queued again. A run whose version
    no longer needs it (the trigger does not act on its status: ``ACTS_ON``; gone, or not
    BYOK) is ended ``unverified`` with the reason ``not_run`` instead. Idempotent: a second
    sweep finds the claimed runs freshly queued and queues nothing; a run or version that
    vanished meanwhile matches no compare-and-set and is skipped. If the broker is still
    unreachable, the run is ``not_queued`` again for the next sweep.
    """
    cutoff = now() - stuck_after
    requeued = 0
    seen: set[int] = set()
    due_runs = (
        ValidationRun.objects.annotate(last_queued=Coalesce("queued_at", "started_at"))
        .filter(Q(outcome=Outcome.NOT_QUEUED) | Q(outcome=Outcome.RUNNING, last_queued__lt=cutoff))
        .select_related("registration")
        .order_by("-started_at", "-id")
    )
    for run in due_runs:
        registration = run.registration
        claim = ValidationRun.objects.filter(pk=run.pk, outcome=run.outcome, queued_at=run.queued_at)
        wanted = registration.is_byok and registration.status in ACTS_ON.get(run.trigger, frozenset())
        if registration.pk in seen or not wanted:
            claim.update(outcome=Outcome.UNVERIFIED, failure_reason="not_run", finished_at=now())
            continue
        seen.add(registration.pk)
        if claim.update(outcome=Outcome.RUNNING, queued_at=now()):
            requeued += 1
            validation_enqueue(registration_id=registration.pk, trigger=run.trigger, run_id=run.pk)
    for registration_id in _pending_without_validation(cutoff):
        run_id = _claim_pending(registration_id, cutoff)
        if run_id is not None:
            requeued += 1
            validation_enqueue(registration_id=registration_id, trigger=Trigger.REGISTRATION.value, run_id=run_id)
    if requeued:
        log.info("validation sweep queued %s validation(s) again", requeued)
    return requeued


def _pending_without_validation(cutoff) -> list[int]:
    """BYOK versions waiting for a first validation that nothing is doing (see ``validations_requeue``)."""
    runs = ValidationRun.objects.filter(registration=OuterRef("pk"))
    return list(
        KeyRegistration.objects.filter(
            kind=KeyRegistration.Kind.BYOK,
            status__in=ACTS_ON[Trigger.REGISTRATION],
            updated_at__lt=cutoff,
        )
        .exclude(Exists(runs.filter(outcome__in=UNFINISHED)))
        .exclude(Exists(runs.filter(started_at__gte=cutoff)))
        .values_list("pk", flat=True)
    )


def _claim_pending(registration_id: int, cutoff) -> int | None:
    """A new ``running`` run for a pending version, unless another sweep got there first (the
    version's row is locked, and the check repeated under the lock). Returns its id."""
    with transaction.atomic():
        registration = (
            KeyRegistration.objects.select_for_update(skip_locked=True)
            .filter(pk=registration_id, status__in=ACTS_ON[Trigger.REGISTRATION])
            .first()
        )
        if registration is None:
            return None
        runs = registration.validation_runs
        if runs.filter(outcome__in=UNFINISHED).exists() or runs.filter(started_at__gte=cutoff).exists():
            return None
        return ValidationRun.objects.create(
            registration=registration, trigger=Trigger.REGISTRATION, outcome=Outcome.RUNNING, queued_at=now()
        ).pk


def registrations_due_for_revalidation() -> list[int]:
    """Ids of every BYOK registration periodic re-validation watches."""
    return list(
        KeyRegistration.objects.filter(kind=KeyRegistration.Kind.BYOK, status__in=WATCHED_STATUSES).values_list(
            "pk", flat=True
        )
    )


# Owner and admin actions


def registration_request_validation(*, registration: KeyRegistration, actor) -> ValidationRun:
    """"Validate again": queue a validation of a BYOK version (after commit) and return
    its run, "running" until the job fills it in, or "not queued" if the broker could not
    be reached (the sweep queues it again; the caller says so). A failed version goes back
    to pending validation at once, so the page shows progress.

    Raises ``ValidationRequestRefused`` for a platform-managed, retired or validating version,
    and while a validation of this version is already queued or running (a fresh "running"
    run): a double click, or six parallel posts, queue one validation, not six (one KMS
    Decrypt, one audit entry). The check and the new run are made under the registration
    row's lock (``select_for_update``), so concurrent requests cannot both pass it.
    """
    if not registration.is_byok or registration.status not in REQUESTABLE_STATUSES:
        raise ValidationRequestRefused(
            f"Key version {registration.version} cannot be validated now "
            f"({registration.get_kind_display()}, {registration.get_status_display().lower()})."
        )
    with transaction.atomic():
        registration = KeyRegistration.objects.select_for_update().get(pk=registration.pk)
        if _validation_in_flight(registration):
            raise ValidationRequestRefused(
                f"A validation of version {registration.version} is already running: "
                "wait for its result on this page."
            )
        if registration.status not in REQUESTABLE_STATUSES:  # changed since the caller read it
            raise ValidationRequestRefused(
                f"Key version {registration.version} cannot be validated now "
                f"({registration.get_status_display().lower()})."
            )
        if registration.status == Status.FAILED:
            try:
                registration = registration_transition(
                    registration=registration, to=Status.PENDING_VALIDATION, actor=actor,
                    message=f"Validation of version {registration.version} requested again.",
                )
            except TransitionConflict as e:
                raise ValidationRequestRefused(str(e)) from e
        run = _start_run(registration, Trigger.MANUAL, queued=True)
        audit(
            action=AuditEvent.Action.VALIDATION_RUN,
            registration=registration,
            actor=actor,
            after={"outcome": "queued", "trigger": Trigger.MANUAL},
            message=f"Validation of version {registration.version} requested.",
        )
        registration_id, run_id = registration.pk, run.pk
        transaction.on_commit(
            lambda: validation_enqueue(registration_id=registration_id, trigger=Trigger.MANUAL.value, run_id=run_id)
        )
    # Outside an outer transaction the job was queued (or, eagerly, ran) or marked not queued now.
    run.refresh_from_db()
    return run


def _validation_in_flight(registration: KeyRegistration) -> bool:
    """Whether a validation of ``registration`` is queued or running now: its status is
    "validating", or its newest unfinished run is "running" and was queued (or started)
    less than ``RUNNING_RUN_STALE_AFTER`` ago (an older one was abandoned; a "not queued"
    run never reached the broker: asking again queues it)."""
    if registration.status == Status.VALIDATING:
        return True
    run = registration.validation_runs.filter(outcome=Outcome.RUNNING).order_by("-started_at", "-id").first()
    return run is not None and now() - (run.queued_at or run.started_at) < RUNNING_RUN_STALE_AFTER


def registration_activate(*, registration: KeyRegistration, actor) -> KeyRegistration:
    """Make a valid (or decrypt-only) version the environment's active version; the
    previously active one becomes decrypt-only. One transaction, an audit event per
    status change; raises ``ActivationError``."""
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


# What the page shows


def staleness(registration: KeyRegistration) -> str:
    """Plain words on how fresh the last verification is, for the environment page:
    "last verified 3 min ago, KMS unreachable since 2026-01-01 10:00 UTC" (either part
    may be missing; "" when there is nothing to say)."""
    parts = []
    if registration.last_verified_at:
        ago = now() - registration.last_verified_at
        parts.append(f"last verified {_human(ago)} ago")
    if registration.kms_unreachable_since:
        parts.append(f"KMS unreachable since {registration.kms_unreachable_since:%Y-%m-%d %H:%M} UTC")
    return ", ".join(parts)


def _human(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def validation_in_progress(registration: KeyRegistration, latest_run: ValidationRun | None) -> bool:
    """Whether the page should keep polling: a validation is running or queued.

    A pending registration that has never had a run is waiting for its first job; a
    pending one whose last run could not verify is not (it waits for "Validate again").
    """
    if registration.status == Status.VALIDATING:
        return True
    if latest_run is None:
        return registration.status == Status.PENDING_VALIDATION and registration.is_byok
    # A run "not queued" is not on its way until the sweep queues it: the page says so instead.
    last_queued = latest_run.queued_at or latest_run.started_at
    return latest_run.outcome == Outcome.RUNNING and now() - last_queued < RUNNING_RUN_STALE_AFTER
