"""Key registrations: creating key versions and moving them between statuses.

Services take keyword-only, typed arguments, perform status transitions with a
compare-and-set, and write an ``AuditEvent`` for each change.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.views.decorators.debug import sensitive_variables

from environments.models import Environment
from keys import cache, crypto, sts
from keys.clock import now
from keys.models import AuditEvent, KeyRegistration
from keys.services.audit import audit
from keys.services.refusals import Refused
from keys.services.sealing import access_key_id_digest, access_key_id_digests, seal_field
from keys.services.validation_runs import queued_run, validation_enqueue

log = logging.getLogger(__name__)

Status = KeyRegistration.Status


class TransitionError(Refused):
    """A registration is not in a state that allows the requested change."""


class TransitionConflict(TransitionError):
    """Someone else changed the registration's status first (compare-and-set lost)."""


# Status transitions

def registration_transition(
    *,
    registration: KeyRegistration,
    to: str,
    actor=None,
    actor_label: str = "",
    message: str = "",
    updates: dict[str, Any] | None = None,
) -> KeyRegistration:
    """Move ``registration`` to status ``to`` with a compare-and-set, and audit it.

    ``updates`` are further field values written in the same UPDATE. Every move
    bumps ``generation``, which every process's data-key cache compares on its next lookup.

    Raises ``TransitionError`` if the model's transition table forbids the move and
    ``TransitionConflict`` if the row's status changed since it was loaded.
    """
    before = registration.status
    if not registration.can_move_to(to):
        raise TransitionError(
            f"A {registration.get_status_display().lower()} key version cannot become "
            f"{Status(to).label.lower()}."
        )
    # Every transition bumps the generation: each process's data-key cache compares it on
    # its next lookup and drops a plaintext data key whose registration changed state.
    values: dict[str, Any] = {
        "status": to, "updated_at": now(), "generation": F("generation") + 1, **(updates or {})
    }
    # One transaction: no reader ever sees the new status without its audit event.
    with transaction.atomic():
        changed = KeyRegistration.objects.filter(pk=registration.pk, status=before).update(**values)
        if not changed:
            raise TransitionConflict(f"Key version {registration.version} changed status meanwhile.")
        registration.refresh_from_db()
        audit(
            action=AuditEvent.Action.STATUS_CHANGED,
            registration=registration,
            actor=actor,
            actor_label=actor_label,
            before={"status": before},
            after={
                "status": to,
                **(
                    {"reason": registration.inaccessible_reason}
                    if registration.inaccessible_reason and to == Status.INACCESSIBLE
                    else {}
                ),
            },
            message=message,
        )
    return registration


def _next_version(environment: Environment) -> int:
    current = environment.key_registrations.aggregate(v=Max("version"))["v"] or 0
    return current + 1


# Creating key versions


@sensitive_variables("data_key")
def managed_registration_create(
    *, environment: Environment, actor=None, status: str = Status.ACTIVE
) -> KeyRegistration:
    """Create a platform-managed key version: a fresh 256-bit data key sealed by the
    sealing key. Version 1 of every new environment is created this way, ``active``."""
    registration = KeyRegistration(
        environment=environment,
        version=_next_version(environment),
        kind=KeyRegistration.Kind.MANAGED,
        status=status,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
        activated_at=now() if status == Status.ACTIVE else None,
    )
    data_key = crypto.generate_data_key()
    try:
        registration.sealed_data_key = seal_field(registration, "sealed_data_key", bytes(data_key))
    finally:
        crypto.wipe(data_key)
    registration.save()
    audit(
        action=AuditEvent.Action.REGISTRATION_CREATED,
        registration=registration,
        actor=actor,
        actor_label="" if actor else "system",
        after={"version": registration.version, "kind": registration.kind, "status": registration.status},
        message=f"Platform-managed data key created as version {registration.version}.",
    )
    return registration


class DuplicateAccessKey(Refused):
    """The same IAM access key ID is already registered on a live version of the environment."""


def access_key_in_use(*, environment: Environment, access_key_id: str, exclude: KeyRegistration | None = None) -> bool:
    """Whether ``access_key_id`` is already registered on a live version of ``environment``
    (a retired or discarded version's credentials were destroyed: its access key is free).
    Compares the digest under every configured sealing key: a version registered before a
    sealing-key rotation matches until ``reseal_secrets`` re-keys its digest."""
    qs = environment.key_registrations.filter(access_key_id_digest__in=access_key_id_digests(access_key_id))
    qs = qs.exclude(status__in=KeyRegistration.DEAD_STATUSES)
    if exclude is not None:
        qs = qs.exclude(pk=exclude.pk)
    return qs.exists()


@sensitive_variables("secret_access_key", "access_key_id")
def registration_create(
    *,
    environment: Environment,
    actor,
    kms_key_arn: str,
    region: str,
    account_id: str,
    encrypted_data_key: bytes,
    encryption_context: dict[str, str],
    access_key_id: str = "",
    secret_access_key: str = "",
    role_arn: str = "",
) -> KeyRegistration:
    """Register a BYOK key as the environment's next key version, ``pending_validation``.

    With ``role_arn`` (role mode, issue 14) no IAM credentials are given or stored: the
    platform assumes that role with the environment's external ID.

    The IAM credentials are sealed (bound to this row and field); the encrypted data key
    is stored as is. A validation job is queued after the transaction commits (if the broker
    cannot be reached, a ``not_queued`` run says so and the validation sweep queues it later).

    Raises ``DuplicateAccessKey`` if the access key ID is already registered on a live
    version of this environment.
    """
    for attempt in range(3):
        try:
            with transaction.atomic():
                Environment.objects.select_for_update().filter(pk=environment.pk).first()
                if not role_arn and access_key_in_use(environment=environment, access_key_id=access_key_id):
                    raise DuplicateAccessKey(
                        "This access key ID is already registered on another key version of this environment."
                    )
                registration = KeyRegistration(
                    environment=environment,
                    version=_next_version(environment),
                    kind=KeyRegistration.Kind.BYOK,
                    status=Status.PENDING_VALIDATION,
                    kms_key_arn=kms_key_arn,
                    region=region,
                    account_id=account_id,
                    encrypted_data_key=bytes(encrypted_data_key),
                    encryption_context=dict(encryption_context),
                    access_mode=KeyRegistration.AccessMode.ROLE if role_arn else KeyRegistration.AccessMode.ACCESS_KEY,
                    role_arn=role_arn,
                    access_key_id_last4="" if role_arn else access_key_id[-4:],
                    access_key_id_digest="" if role_arn else access_key_id_digest(access_key_id),
                    created_by=actor if getattr(actor, "is_authenticated", False) else None,
                )
                if not role_arn:
                    registration.sealed_access_key_id = seal_field(
                        registration, "sealed_access_key_id", access_key_id.encode("ascii")
                    )
                    registration.sealed_secret_access_key = seal_field(
                        registration, "sealed_secret_access_key", secret_access_key.encode("ascii")
                    )
                registration.save()
                audit(
                    action=AuditEvent.Action.REGISTRATION_CREATED,
                    registration=registration,
                    actor=actor,
                    after={
                        "version": registration.version,
                        "kind": registration.kind,
                        "status": registration.status,
                        "kms_key_arn": kms_key_arn,
                        "region": region,
                        "access_key_id": registration.masked_access_key_id,
                        "access_mode": registration.access_mode,
                        "role_arn": role_arn,
                        "encrypted_data_key_fingerprint": crypto.fingerprint(bytes(encrypted_data_key)),
                    },
                    message=f"BYOK key registered as version {registration.version}.",
                )
                registration_id = registration.pk
                transaction.on_commit(
                    lambda: validation_enqueue(registration_id=registration_id, trigger="registration")
                )
                return registration
        except IntegrityError:
            # Two registrations raced for the same version number; take the next one.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@sensitive_variables("secret_access_key", "access_key_id")
def registration_replace_credentials(
    *, registration: KeyRegistration, actor, access_key_id: str, secret_access_key: str
) -> KeyRegistration:
    """Replace a BYOK version's IAM credentials in place (no new key version, nothing
    re-encrypted), bump its ``credentials_version`` and ``generation`` (evicting cached
    data keys and KMS clients), and queue a validation with the new credentials.

    Raises ``TransitionError`` for a platform-managed, retired or discarded version, and
    for a role-mode version (it has a role ARN to replace instead: ``registration_replace_role_arn``)."""
    if not registration.is_byok or not registration.is_live:
        raise TransitionError("Only a BYOK key version that is not retired has IAM credentials to replace.")
    if registration.uses_role:
        raise TransitionError(
            f"Key version {registration.version} reaches KMS through an IAM role: it has no IAM credentials; "
            "replace its role ARN instead."
        )
    if access_key_in_use(environment=registration.environment, access_key_id=access_key_id, exclude=registration):
        raise DuplicateAccessKey(
            "This access key ID is already registered on another key version of this environment."
        )
    with transaction.atomic():
        locked = KeyRegistration.objects.select_for_update().get(pk=registration.pk)
        locked.sealed_access_key_id = seal_field(locked, "sealed_access_key_id", access_key_id.encode("ascii"))
        locked.sealed_secret_access_key = seal_field(
            locked, "sealed_secret_access_key", secret_access_key.encode("ascii")
        )
        before_last4 = locked.masked_access_key_id
        locked.access_key_id_last4 = access_key_id[-4:]
        locked.access_key_id_digest = access_key_id_digest(access_key_id)
        locked.credentials_version = F("credentials_version") + 1
        locked.generation = F("generation") + 1
        locked.save()
        locked.refresh_from_db()
        audit(
            action=AuditEvent.Action.CREDENTIALS_REPLACED,
            registration=locked,
            actor=actor,
            before={"access_key_id": before_last4},
            after={"access_key_id": locked.masked_access_key_id, "credentials_version": locked.credentials_version},
            message=f"IAM credentials of version {locked.version} replaced.",
        )
        registration_id = locked.pk
        transaction.on_commit(lambda: validation_enqueue(registration_id=registration_id, trigger="credentials"))
    return locked


def registration_replace_role_arn(*, registration: KeyRegistration, actor, role_arn: str) -> KeyRegistration:
    """Point a role-mode version at another IAM role (issue 14, item 6: "replacing the role
    ARN of a version is like replacing credentials today"): the same key version, nothing
    re-encrypted. ``role_arn`` is already checked (``keys.parsers.parse_role_arn``: grammar,
    a role and not a user, the KMS key's partition).

    In one transaction, with a ``credentials_replaced`` audit event (before and after: the
    role ARNs): ``role_arn`` set, ``credentials_version`` and ``generation`` bumped (every
    process's data-key cache drops this version's plaintext data key on its next lookup).
    After commit: this process's cached data key and its held temporary credentials of the
    old role (``keys.sts.role_sessions``) are dropped at once, and a validation with the new
    role is queued (trigger ``credentials``: a version in service keeps its status if it passes).

    Raises ``TransitionError`` for a version that is not a live role-mode BYOK version, or
    when ``role_arn`` is the one already registered (nothing changes).
    """
    if not registration.is_byok or not registration.uses_role or not registration.is_live:
        raise TransitionError("Only a live key version that reaches KMS through an IAM role has a role ARN to replace.")
    with transaction.atomic():
        locked = KeyRegistration.objects.select_for_update().select_related("environment").get(pk=registration.pk)
        if not locked.is_live:
            raise TransitionError(f"Key version {locked.version} is {locked.get_status_display().lower()}.")
        before = locked.role_arn
        if role_arn == before:
            raise TransitionError("This is the role ARN already registered: nothing was changed.")
        locked.role_arn = role_arn
        locked.credentials_version = F("credentials_version") + 1
        locked.generation = F("generation") + 1
        locked.save(update_fields=["role_arn", "credentials_version", "generation", "updated_at"])
        locked.refresh_from_db()
        audit(
            action=AuditEvent.Action.CREDENTIALS_REPLACED,
            registration=locked,
            actor=actor,
            before={"role_arn": before},
            after={"role_arn": role_arn, "credentials_version": locked.credentials_version},
            message=f"Role ARN of version {locked.version} replaced.",
        )
        registration_id, external_id = locked.pk, locked.environment.aws_external_id

        def after_commit() -> None:
            cache.evict(registration_id)
            sts.role_sessions.forget(role_arn=before, external_id=external_id)
            validation_enqueue(registration_id=registration_id, trigger="credentials")

        transaction.on_commit(after_commit)
    return locked


class NotEditable(TransitionError):
    """The key version is in service (or was), validating, retired or discarded."""


@sensitive_variables("secret_access_key", "access_key_id")
def registration_update(
    *,
    registration: KeyRegistration,
    actor,
    kms_key_arn: str,
    region: str,
    account_id: str,
    encryption_context: dict[str, str],
    encrypted_data_key: bytes | None = None,
    access_key_id: str = "",
    secret_access_key: str = "",
) -> KeyRegistration:
    """Edit a BYOK version that never served (pending, failed, or valid and never
    activated): its KMS key ARN, region, encryption context and, when given, a new
    encrypted data key and new IAM credentials (``None``/``""`` keep the registered ones;
    the secret is write-only). The version goes back to pending validation (generation
    bumped) and a validation job is queued after commit; one ``registration_edited``
    audit event lists what changed, as safe summaries.

    Raises ``NotEditable`` for another status and ``DuplicateAccessKey`` if the new access
    key ID is registered on another live version of the environment.
    """
    with transaction.atomic():
        locked = KeyRegistration.objects.select_for_update().filter(pk=registration.pk).first()
        if locked is None or not locked.is_editable:
            state = locked.get_status_display().lower() if locked else "gone"
            raise NotEditable(
                f"Key version {registration.version} cannot be edited now ({state}): only a version that "
                "never served and is not being validated can be."
            )
        before = _edit_summary(locked)
        if access_key_id:
            if access_key_in_use(environment=locked.environment, access_key_id=access_key_id, exclude=locked):
                raise DuplicateAccessKey(
                    "This access key ID is already registered on another key version of this environment."
                )
            locked.sealed_access_key_id = seal_field(locked, "sealed_access_key_id", access_key_id.encode("ascii"))
            locked.sealed_secret_access_key = seal_field(locked, "sealed_secret_access_key", secret_access_key.encode("ascii"))
            locked.access_key_id_last4 = access_key_id[-4:]
            locked.access_key_id_digest = access_key_id_digest(access_key_id)
            locked.credentials_version = F("credentials_version") + 1
        if encrypted_data_key is not None:
            locked.encrypted_data_key = bytes(encrypted_data_key)
        locked.kms_key_arn, locked.region, locked.account_id = kms_key_arn, region, account_id
        locked.encryption_context = dict(encryption_context)
        locked.save()
        locked.refresh_from_db()
        after = _edit_summary(locked)
        changed = {k: v for k, v in after.items() if before.get(k) != v}
        if locked.status != Status.PENDING_VALIDATION:
            locked = registration_transition(
                registration=locked, to=Status.PENDING_VALIDATION, actor=actor,
                message=f"Version {locked.version} edited: validation starts again.",
            )
        else:
            KeyRegistration.objects.filter(pk=locked.pk).update(generation=F("generation") + 1)
        audit(
            action=AuditEvent.Action.REGISTRATION_EDITED,
            registration=locked,
            actor=actor,
            before={k: before[k] for k in changed},
            after=changed,
            message=f"Version {locked.version} edited: "
            + (", ".join(k.replace("_", " ") for k in changed) or "nothing changed")
            + ".",
        )
        # The run its job will fill in, queued from the commit on: the page follows it even when
        # it loads before a worker took the job (its last run, finished, would say otherwise).
        registration_id, run_id = locked.pk, queued_run(locked, "registration").pk
        transaction.on_commit(
            lambda: validation_enqueue(registration_id=registration_id, trigger="registration", run_id=run_id)
        )
    return locked


def _edit_summary(registration: KeyRegistration) -> dict[str, Any]:
    """What an edit may change, as safe summaries (the access key's last four, a fingerprint)."""
    blob = bytes(registration.encrypted_data_key or b"")
    return {
        "kms_key_arn": registration.kms_key_arn,
        "region": registration.region,
        "encryption_context": dict(registration.encryption_context or {}),
        "access_key_id": registration.masked_access_key_id,
        "encrypted_data_key_fingerprint": crypto.fingerprint(blob) if blob else "",
    }
