"""Key lifecycle services besides re-encryption (``keys.services.reencryption``): a new
platform-managed key version, retirement, the published revocation bound and the
revocation drill (docs/architecture.md, "Rotation and revocation").

Like ``keys.services``: keyword-only arguments, compare-and-set transitions through
``registration_transition``, an audit event for every change. Role checks (owner or admin,
owner only) are the views' business.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import transaction

from environments.models import Environment
from keys import cache, crypto, sts
from keys.clock import now
from keys.models import AuditEvent, KeyRegistration, Record, ValidationRun
from keys.services.audit import audit
from keys.services.records import KeyUnavailable, active_registration, data_key_for
from keys.services.refusals import Refused
from keys.services.registrations import managed_registration_create, registration_transition
from keys.services.sealing import sealed_state
from keys.services.validation import ValidationRequestRefused, registration_request_validation

log = logging.getLogger(__name__)

Status = KeyRegistration.Status


class LifecycleRefused(Refused):
    """The change cannot be made now; ``str()`` says why, in words for the page."""


# ---------------------------------------------------------------------------
# Rotation back to a platform-managed key
# ---------------------------------------------------------------------------


def managed_version_create(*, environment: Environment, actor) -> KeyRegistration:
    """"New platform-managed key version": a fresh platform-managed data key as the
    environment's next version, ``valid`` (activating it is a separate step, as for a BYOK
    version). The environment row is locked so two requests get two version numbers."""
    with transaction.atomic():
        Environment.objects.select_for_update().filter(pk=environment.pk).first()
        return managed_registration_create(environment=environment, actor=actor, status=Status.VALID)


# ---------------------------------------------------------------------------
# Retirement
# ---------------------------------------------------------------------------

# What retirement overwrites: every form of key material and IAM credential the row holds.
DESTROYED_FIELDS = {
    "sealed_access_key_id": "",
    "sealed_secret_access_key": "",
    "sealed_data_key": "",
    "encrypted_data_key": b"",
}


def registration_retire(*, registration: KeyRegistration, actor) -> KeyRegistration:
    """Retire a decrypt-only version that no record uses any more: overwrite its sealed
    IAM credentials, sealed data key and encrypted data key with empty values and move it
    to ``retired`` in the same UPDATE (generation bumped: every process drops its cached
    plaintext on its next lookup, this one at once, with a role-mode version's temporary
    credentials), with a ``material_destroyed`` audit event. Irreversible.

    The registration row is locked (``FOR UPDATE``) before the records are counted, so two
    retirements, or a retirement and any status change (activation, a KMS refusal),
    serialise; a re-encryption batch still moving its last records is counted (its rows
    are under this version until it commits), so retirement refuses. One write is not
    covered: Django's foreign keys are ``DEFERRABLE INITIALLY DEFERRED`` on PostgreSQL, so
    a data-plane write that read this version while it was still active and commits after
    the retirement is invisible to the count; ``keys.services.records`` must make its upsert
    conditional on the version being active (see tests/keys/test_retirement.py).

    Raises :class:`LifecycleRefused` for another status, or while any record remains.
    Note: PostgreSQL keeps the overwritten row version on disk until VACUUM reclaims it.
    """
    with transaction.atomic():
        locked = KeyRegistration.objects.select_for_update().filter(pk=registration.pk).first()
        if locked is None:
            raise LifecycleRefused("This key version no longer exists.")
        if locked.status != Status.DECRYPT_ONLY:
            raise LifecycleRefused(
                f"Only a decrypt-only key version can be retired; version {locked.version} is "
                f"{locked.get_status_display().lower()}."
            )
        remaining = Record.objects.filter(registration=locked).count()
        if remaining:
            raise LifecycleRefused(
                f"Version {locked.version} still encrypts {remaining} record(s): re-encrypt them to the "
                "active version first."
            )
        before = _material_summary(locked)
        retired = registration_transition(
            registration=locked, to=Status.RETIRED, actor=actor,
            message=f"Version {locked.version} retired.",
            updates={**DESTROYED_FIELDS, "retired_at": now()},
        )
        audit(
            action=AuditEvent.Action.MATERIAL_DESTROYED, registration=retired, actor=actor,
            before=before, after={field: "destroyed" for field in before},
            message=f"Key material of version {retired.version} destroyed: "
            + ", ".join(field.replace("_", " ") for field in before) + ".",
        )
    cache.evict(registration.pk)
    _forget_role_session(retired)
    return retired


def registration_discard(*, registration: KeyRegistration, actor) -> KeyRegistration:
    """Discard a BYOK version that never served (pending, failed, or valid and never
    activated): overwrite its sealed IAM credentials and encrypted data key and move it to
    ``discarded`` in the same UPDATE, with a ``material_destroyed`` audit event. Its access
    key is free again (``access_key_in_use`` counts only live versions); a role-mode
    version's temporary credentials held by this process are dropped. Irreversible.

    Raises :class:`LifecycleRefused` for any other status (a version in service is retired
    after re-encryption instead).
    """
    with transaction.atomic():
        locked = KeyRegistration.objects.select_for_update().filter(pk=registration.pk).first()
        if locked is None:
            raise LifecycleRefused("This key version no longer exists.")
        if not locked.is_editable:
            raise LifecycleRefused(
                f"Only a key version that never served can be discarded; version {locked.version} is "
                f"{locked.get_status_display().lower()}."
            )
        if Record.objects.filter(registration=locked).exists():
            raise LifecycleRefused(f"Version {locked.version} encrypts records: it cannot be discarded.")
        before = _material_summary(locked)
        discarded = registration_transition(
            registration=locked, to=Status.DISCARDED, actor=actor,
            message=f"Version {locked.version} discarded.",
            updates={**DESTROYED_FIELDS, "retired_at": now()},
        )
        audit(
            action=AuditEvent.Action.MATERIAL_DESTROYED, registration=discarded, actor=actor,
            before=before, after={field: "destroyed" for field in before},
            message=f"Key material of version {discarded.version} destroyed: "
            + ", ".join(field.replace("_", " ") for field in before) + ".",
        )
    cache.evict(registration.pk)
    _forget_role_session(discarded)
    return discarded


def _forget_role_session(registration: KeyRegistration) -> None:
    """Drop this process's temporary credentials of a retired or discarded role-mode
    version's role at once, as ``registration_replace_role_arn`` drops the old role's,
    rather than when they expire. Sessions are held per (role ARN, external ID), so per role
    and environment: kept while another live version of the environment uses the same role.
    Other processes drop theirs when they expire (a dead version makes no KMS call)."""
    if not registration.uses_role or not registration.role_arn:
        return
    environment = registration.environment
    shared = environment.key_registrations.filter(role_arn=registration.role_arn).exclude(
        status__in=KeyRegistration.DEAD_STATUSES
    ).exists()
    if not shared:
        sts.role_sessions.forget(role_arn=registration.role_arn, external_id=environment.aws_external_id)


def _material_summary(registration: KeyRegistration) -> dict[str, str]:
    """What is about to be destroyed, as safe summaries (never the values)."""
    summary: dict[str, str] = {}
    for field in ("sealed_access_key_id", "sealed_secret_access_key", "sealed_data_key"):
        if getattr(registration, field):
            summary[field] = sealed_state(registration=registration, field=field)
    blob = bytes(registration.encrypted_data_key or b"")
    if blob:
        summary["encrypted_data_key"] = f"{len(blob)} bytes, fingerprint {crypto.fingerprint(blob)}"
    return summary


# ---------------------------------------------------------------------------
# The published revocation bound
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RevocationBound:
    """How long after a customer revokes access this platform may still decrypt their data.

    ``seconds`` = ``cache_ttl_seconds`` + ``recheck_seconds`` (+ ``role_session_seconds``):

    * a process uses a cached plaintext data key for at most the TTL
      (``DATA_KEY_CACHE_TTL_SECONDS``); its next lookup after that asks KMS, which refuses,
      and the version is marked inaccessible at once (and evicted in every process, through
      the generation bump);
    * a revocation AWS has not applied yet when that lookup happens (IAM and key-state
      changes are eventually consistent) is caught ``recheck_seconds`` later at most, which
      marks the version inaccessible the same way. With a worker and beat (``periodic``) that
      is the periodic re-validation, every ``REVALIDATION_INTERVAL_SECONDS``. Without them
      (``CELERY_TASK_ALWAYS_EAGER``, the embedded default of ``make run``: nothing runs
      periodically) it is the data plane itself: the lookup that found KMS still willing
      cached the key once more, and the next lookup after that one cache lifetime asks KMS
      again, so ``recheck_seconds`` is the TTL;
    * a lookup that misses the cache after the revocation (new process, expired entry,
      credentials replaced) stops at once, without waiting for either.
    """

    cache_ttl_seconds: int
    recheck_seconds: int
    # Role mode: a trust-policy change does not end a session already issued, so its
    # temporary credentials may keep working for one session lifetime (STS_SESSION_DURATION_SECONDS).
    role_session_seconds: int = 0
    # Whether the periodic re-validation (Celery beat) does the re-check; False without a worker.
    periodic: bool = True

    @property
    def seconds(self) -> int:
        return self.cache_ttl_seconds + self.recheck_seconds + self.role_session_seconds

    @property
    def text(self) -> str:
        spelled = f" ({_minutes(self.seconds)})" if self.seconds >= 120 else ""
        return (
            f"After you revoke access, this platform stops decrypting your data within "
            f"{self.seconds} seconds{spelled}."
        )


def revocation_bound(*, role_mode: bool = False) -> RevocationBound:
    """The bound from the current settings; in role mode it includes the session lifetime.

    The re-check is the periodic re-validation (``REVALIDATION_INTERVAL_SECONDS``) when a
    worker and beat run, and one more data-key cache lifetime when they do not
    (``settings.CELERY_TASK_ALWAYS_EAGER``, the same test ``keys.diagnosis`` makes for its
    remedies): see :class:`RevocationBound`."""
    ttl = int(settings.DATA_KEY_CACHE_TTL_SECONDS)
    periodic = not settings.CELERY_TASK_ALWAYS_EAGER
    return RevocationBound(
        cache_ttl_seconds=ttl,
        recheck_seconds=int(settings.REVALIDATION_INTERVAL_SECONDS) if periodic else ttl,
        role_session_seconds=int(settings.STS_SESSION_DURATION_SECONDS) if role_mode else 0,
        periodic=periodic,
    )


# Versions whose role session bounds how long a revocation takes to bite.
ROLE_BOUND_STATUSES = frozenset({Status.ACTIVE, Status.DECRYPT_ONLY, Status.INACCESSIBLE})


def environment_revocation_bound(environment: Environment) -> RevocationBound:
    """The bound for this environment: with the session lifetime when a version in service uses a role."""
    role_mode = environment.key_registrations.filter(
        access_mode=KeyRegistration.AccessMode.ROLE, status__in=ROLE_BOUND_STATUSES
    ).exists()
    return revocation_bound(role_mode=role_mode)


def _minutes(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min" + (f" {rest} s" if rest else "")


# ---------------------------------------------------------------------------
# The revocation drill
# ---------------------------------------------------------------------------
#
# Its state lives in audit events of the environment (``validation_run`` events whose
# ``after`` has a "drill" key): "started" when the owner starts watching, "stopped" with
# the measured time when the platform stopped serving the environment.

DRILL_STARTED = "started"
DRILL_STOPPED = "stopped"


@dataclass(frozen=True)
class Probe:
    """One look at whether the platform serves the environment now."""

    serving: bool
    version: int | None
    reason: str = ""
    message: str = ""
    transient: bool = False


@dataclass(frozen=True)
class Drill:
    """The latest drill of an environment: started at ``started_at``; ``stopped_at`` and
    ``measured_seconds`` once the platform stopped serving it."""

    started_at: datetime
    version: int | None
    stopped_at: datetime | None = None
    measured_seconds: float | None = None
    reason: str = ""

    @property
    def watching(self) -> bool:
        return self.stopped_at is None


def drill_probe(*, environment: Environment) -> Probe:
    """Use the environment's active data key through the data plane's own path
    (``keys.services.records.active_registration`` + ``data_key_for``: the cache, the generation
    check, KMS on a miss, a KMS refusal marking the version inaccessible). Bypasses
    nothing, so a cached data key keeps serving until its TTL or until a validation
    notices the revocation, exactly as for the customer's applications."""
    try:
        registration = active_registration(environment=environment)
        with data_key_for(registration):
            pass
    except KeyUnavailable as e:
        return Probe(False, e.key_version, e.reason, str(e), e.transient)
    return Probe(True, registration.version)


def drill_current(*, environment: Environment) -> Drill | None:
    """The environment's latest drill, from its audit events; None if there was none."""
    events = AuditEvent.objects.filter(
        environment=environment, action=AuditEvent.Action.VALIDATION_RUN, after__drill__isnull=False
    ).order_by("-created_at", "-id")
    latest = events.first()
    if latest is None:
        return None
    if latest.after.get("drill") == DRILL_STARTED:
        return Drill(latest.created_at, latest.after.get("version"))
    started = events.filter(after__drill=DRILL_STARTED, created_at__lte=latest.created_at).first()
    return Drill(
        started.created_at if started else latest.created_at,
        latest.after.get("version"),
        stopped_at=latest.created_at,
        measured_seconds=latest.after.get("measured_seconds"),
        reason=latest.after.get("reason", ""),
    )


def drill_start(*, environment: Environment, actor) -> Drill:
    """Start watching: record the start time (an audit event). Raises
    :class:`LifecycleRefused` unless the active version is BYOK and served right now."""
    registration = environment.key_registrations.filter(status=Status.ACTIVE).first()
    if registration is None or not registration.is_byok:
        raise LifecycleRefused(
            "The active key version is not a BYOK key: there is nothing to revoke in AWS. "
            "Register and activate a BYOK key first."
        )
    probe = drill_probe(environment=environment)
    if not probe.serving:
        raise LifecycleRefused(f"The platform does not serve this environment now ({probe.reason}): restore access first.")
    audit(
        action=AuditEvent.Action.VALIDATION_RUN, environment=environment, registration=registration, actor=actor,
        after={"drill": DRILL_STARTED, "version": registration.version, "bound_seconds": environment_revocation_bound(environment).seconds},
        message=f"Revocation drill started: watching version {registration.version}.",
    )
    drill = drill_current(environment=environment)
    assert drill is not None
    return drill


def drill_poll(*, environment: Environment, actor) -> tuple[Drill | None, Probe]:
    """Probe the environment; if a drill is watching and the platform stopped serving
    (a permanent refusal, not a KMS outage), record the measured time as an audit event,
    once. The stop time is that of the version's move to inaccessible when there is one
    after the start (it is exact), else now (the probe found it)."""
    probe = drill_probe(environment=environment)
    drill = drill_current(environment=environment)
    if drill is None or not drill.watching or probe.serving or probe.transient:
        return drill, probe
    with transaction.atomic():
        # Two polls at once record one result: the second sees the first's event.
        Environment.objects.select_for_update().filter(pk=environment.pk).first()
        drill = drill_current(environment=environment)
        if drill is None or not drill.watching:
            return drill, probe
        stopped_at = _inaccessible_since(environment, drill.started_at) or now()
        measured = round(max(0.0, (stopped_at - drill.started_at).total_seconds()), 1)
        bound = environment_revocation_bound(environment).seconds
        audit(
            action=AuditEvent.Action.VALIDATION_RUN, environment=environment, actor=actor,
            after={"drill": DRILL_STOPPED, "version": drill.version, "measured_seconds": measured,
                   "bound_seconds": bound, "reason": probe.reason},
            message=f"Revocation drill: the platform stopped serving this environment {measured} s after "
            f"watching started ({probe.reason}); the published bound is {bound} s.",
        )
    return drill_current(environment=environment), probe


def _inaccessible_since(environment: Environment, since: datetime) -> datetime | None:
    event = (
        AuditEvent.objects.filter(
            environment=environment, action=AuditEvent.Action.STATUS_CHANGED, after__status=Status.INACCESSIBLE,
            created_at__gte=since,
        )
        .order_by("created_at")
        .first()
    )
    return event.created_at if event else None


def drill_check_now(*, environment: Environment, actor) -> ValidationRun:
    """"Check now": queue a validation (trigger manual) of the BYOK version that serves,
    or served, the environment's writes, so that a revocation is noticed without waiting
    for the cache TTL or the periodic re-validation. Returns its run (``registration_request_validation``).
    Raises :class:`LifecycleRefused`."""
    registration = (
        environment.key_registrations.filter(kind=KeyRegistration.Kind.BYOK, status=Status.ACTIVE).first()
        or environment.key_registrations.filter(
            kind=KeyRegistration.Kind.BYOK, status=Status.INACCESSIBLE, restore_status=Status.ACTIVE
        ).order_by("-version").first()
    )
    if registration is None:
        raise LifecycleRefused("The active key version is platform-managed: there is nothing to validate against KMS.")
    try:
        return registration_request_validation(registration=registration, actor=actor)
    except ValidationRequestRefused as e:
        raise LifecycleRefused(str(e)) from e
