"""Sealing: the platform's sealing keys encrypt IAM credentials and platform-managed data
keys at rest, each sealed value bound to its row and field (AAD)."""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple

from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from keys import crypto, sts
from keys.kms import KmsCredentials
from keys.models import AuditEvent, KeyRegistration
from keys.services.audit import audit

log = logging.getLogger(__name__)

Status = KeyRegistration.Status


class CredentialsUnreadable(Exception):
    """The sealed IAM credentials cannot be unsealed: the sealing key that sealed them is
    no longer configured, or the sealed value is damaged. The admin must enter them again."""


@functools.lru_cache(maxsize=4)
def _parse_sealing_keys(values: tuple[str, ...]) -> tuple[crypto.SealingKey, ...]:
    return tuple(crypto.parse_sealing_keys(values))


def sealing_keys() -> tuple[crypto.SealingKey, ...]:
    """The configured sealing keys (``settings.SEALING_KEYS``); the first one seals."""
    return _parse_sealing_keys(tuple(settings.SEALING_KEYS))


def _aad(registration: KeyRegistration, field: str) -> bytes:
    return crypto.sealing_aad(table="keys_keyregistration", row_id=str(registration.public_id), field=field)


SEALED_FIELDS = ("sealed_access_key_id", "sealed_secret_access_key", "sealed_data_key")


@sensitive_variables("secret")
def seal_field(registration: KeyRegistration, field: str, secret: bytes) -> str:
    """Seal ``secret`` under the first sealing key, bound to this row and ``field`` (AAD)."""
    return crypto.seal(secret, keys=sealing_keys(), aad=_aad(registration, field))


def unseal_field(registration: KeyRegistration, field: str) -> bytearray:
    """Unseal one sealed field of the row (a ``bytearray`` the caller must wipe). Raises
    ``crypto.SealingKeyUnavailable`` or ``crypto.SealedValueInvalid``."""
    return crypto.unseal(getattr(registration, field), keys=sealing_keys(), aad=_aad(registration, field))


ACCESS_KEY_ID_DIGEST_PURPOSE = "access_key_id"


@sensitive_variables("access_key_id")
def access_key_id_digest(access_key_id: str) -> str:
    """The keyed digest stored with a registration's access key ID
    (``"<sealing key id>$<64 hex>"``, ``keys.crypto.lookup_digest``) under the first
    sealing key: to find the same access key registered twice (the duplicate rule) and a
    registration by its access key ID (Django admin search), without storing the ID in the
    clear. Keyed from the sealing keys, not ``SECRET_KEY``: rotating ``SECRET_KEY`` changes
    nothing here (docs/architecture.md, "Formats")."""
    return crypto.lookup_digest(
        access_key_id.encode("ascii"), sealing_key=sealing_keys()[0], purpose=ACCESS_KEY_ID_DIGEST_PURPOSE
    )


@sensitive_variables("access_key_id")
def access_key_id_digests(access_key_id: str) -> list[str]:
    """The digests of ``access_key_id`` under every configured sealing key, the first one's
    first: a stored digest matches one of them until ``reseal_secrets`` has moved it to the
    first key. Raises ``UnicodeEncodeError`` for a value that is not ASCII (no access key
    ID is)."""
    value = access_key_id.encode("ascii")
    return [
        crypto.lookup_digest(value, sealing_key=key, purpose=ACCESS_KEY_ID_DIGEST_PURPOSE) for key in sealing_keys()
    ]


@sensitive_variables("access_key_id")
def _rekeyed_access_key_id_digest(registration: KeyRegistration) -> str | None:
    """The registration's access-key-ID digest under the first sealing key if the stored one
    was made under another key (or names none), recomputed from the sealed access key ID;
    None when it is current, there is no sealed access key ID, or it cannot be unsealed."""
    if not registration.sealed_access_key_id:
        return None
    if crypto.lookup_digest_key_id(registration.access_key_id_digest) == sealing_keys()[0].key_id:
        return None
    try:
        access_key_id = unseal_field(registration, "sealed_access_key_id")
    except (crypto.SealingKeyUnavailable, crypto.SealedValueInvalid):
        return None
    try:
        return crypto.lookup_digest(access_key_id, sealing_key=sealing_keys()[0], purpose=ACCESS_KEY_ID_DIGEST_PURPOSE)
    finally:
        crypto.wipe(access_key_id)


def role_session_name(registration: KeyRegistration) -> str:
    """The RoleSessionName naming this environment (it shows in the customer's CloudTrail)."""
    return sts.session_name(f"portal-env-{registration.environment.public_id}")


@sensitive_variables("access_key_id", "secret")
def registration_credentials(
    *, registration: KeyRegistration, sts_options: sts.StsClientOptions = sts.DEFAULT_OPTIONS
) -> KmsCredentials:
    """Unseal a BYOK registration's IAM credentials for one KMS call; in role mode, the
    role's temporary credentials instead (``keys.sts.role_sessions``: process memory only,
    per (role ARN, external ID), refreshed by botocore before they expire), assumed with
    ``sts_options`` (timeouts in seconds, attempts; the data plane passes its short budget).

    Raises ``CredentialsUnreadable`` when a sealed value names a sealing key that is no
    longer configured or fails its integrity check; the sealed text is never passed on.
    In role mode raises ``keys.sts.StsError`` (a ``KmsError``) when AssumeRole fails.
    """
    if registration.uses_role:
        return sts.role_sessions.credentials(
            role_arn=registration.role_arn,
            external_id=registration.environment.aws_external_id,
            session_name=role_session_name(registration),
            region=registration.region,
            duration_seconds=settings.STS_SESSION_DURATION_SECONDS,
            endpoint_url=settings.AWS_STS_ENDPOINT_URL,
            options=sts_options,
        )
    access_key_id = secret = bytearray()
    try:
        try:
            access_key_id = unseal_field(registration, "sealed_access_key_id")
            secret = unseal_field(registration, "sealed_secret_access_key")
        except (crypto.SealingKeyUnavailable, crypto.SealedValueInvalid) as e:
            raise CredentialsUnreadable(
                "The IAM credentials of this key version cannot be read (sealed under a sealing key "
                "that is no longer configured, or damaged): enter them again."
            ) from e
        return KmsCredentials(
            access_key_id=access_key_id.decode("ascii"),
            secret_access_key=secret.decode("ascii"),
            version=f"{registration.public_id}:{registration.credentials_version}",
        )
    finally:
        # Also when only the access key ID could be unsealed.
        crypto.wipe(access_key_id)
        crypto.wipe(secret)


def sealed_state(*, registration: KeyRegistration, field: str) -> str:
    """``"set"``, ``"unreadable"`` or ``"not set"`` for one sealed field: what support
    staff and admins may know about a secret.

    Reads the sealing-key id in the sealed value's header and compares it with the
    configured sealing keys; nothing is unsealed (pages render this for every key
    version on every request). A value whose header is damaged is ``"unreadable"``;
    a value damaged past its header is only caught when it is really unsealed."""
    value = getattr(registration, field)
    if not value:
        return "not set"
    try:
        key_id = crypto.sealed_key_id(value)
    except crypto.SealedValueInvalid:
        return "unreadable"
    return "set" if key_id in {k.key_id for k in sealing_keys()} else "unreadable"


def credentials_state(*, registration: KeyRegistration) -> str:
    """``"set"``, ``"unreadable"`` or ``"not set"`` for a registration's IAM credentials."""
    states = {sealed_state(registration=registration, field=f) for f in SEALED_FIELDS[:2]}
    for state in ("unreadable", "not set"):
        if state in states:
            return state
    return "set"


class Resealed(NamedTuple):
    """What ``reseal_all`` changed: sealed values re-sealed, access-key-ID digests re-keyed."""

    values: int
    digests: int


def reseal_all(*, actor_label: str = "command: reseal_secrets") -> Resealed:
    """Re-seal every sealed value under the first configured sealing key, and re-key every
    access-key-ID digest to it (recomputed from the sealed access key ID), one audit event
    per key version naming the key ids before and after.

    Returns how many of each changed. Values and digests already under the first key are
    left alone; a value under a key that is no longer configured is skipped (it stays
    "unreadable" until the admin enters the credentials again, which makes a new digest).
    """
    keys = sealing_keys()
    changed = digests = 0
    for registration in KeyRegistration.objects.exclude(status=Status.RETIRED).iterator():
        updates: dict[str, str] = {}
        digest = _rekeyed_access_key_id_digest(registration)
        if digest is not None:
            updates["access_key_id_digest"] = digest
        for field in SEALED_FIELDS:
            value = getattr(registration, field)
            if not value:
                continue
            try:
                new = crypto.reseal(value, keys=keys, aad=_aad(registration, field))
            except (crypto.SealingKeyUnavailable, crypto.SealedValueInvalid):
                continue
            if new is not None:
                updates[field] = new
        if updates:
            before = {f: _key_id_of(registration, f) for f in updates}
            # Compare-and-set: if the credentials were replaced since this row was read, the
            # re-sealed old values must not overwrite the new ones (the next run re-seals those).
            unchanged = {f: getattr(registration, f) for f in updates}
            if not KeyRegistration.objects.filter(pk=registration.pk, **unchanged).update(**updates):
                continue
            digests += "access_key_id_digest" in updates
            changed += len(updates) - ("access_key_id_digest" in updates)
            audit(
                action=AuditEvent.Action.SEALING_KEY_ROTATED,
                registration=registration,
                actor_label=actor_label,
                before={"sealing_key_ids": before},
                after={"sealing_key_ids": {f: keys[0].key_id for f in updates}},
                message=f"{len(updates)} sealed value(s) and digest(s) of version {registration.version} moved to {keys[0].key_id}.",
            )
    return Resealed(values=changed, digests=digests)


def _key_id_of(registration: KeyRegistration, field: str) -> str | None:
    """The sealing key id a sealed value or the access-key-ID digest names (None: none)."""
    value = getattr(registration, field)
    if field == "access_key_id_digest":
        return crypto.lookup_digest_key_id(value)
    return crypto.sealed_key_id(value)
