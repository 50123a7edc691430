"""API key services: create, revoke and authenticate an environment's API keys.

An API key is ``byok_<prefix>_<secret>``: ``prefix`` is 8 lowercase hex characters (stored,
unique, shown in lists to tell keys apart), ``secret`` is 32 random bytes in unpadded
base64url (43 characters). Only the prefix and the SHA-256 of the whole key are stored; the
key is shown once. A salted slow hash is not needed: the key has 256 bits of entropy, so
nobody can guess it from its SHA-256 (django.contrib.auth's hashers are for low-entropy
passwords). Lookup is by prefix; the hash is then compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import FilteredRelation, Q, QuerySet
from django.views.decorators.debug import sensitive_variables

from environments.models import Environment
from keys.clock import now
from keys.models import ApiKey, AuditEvent, KeyRegistration
from keys.services.audit import audit
from keys.services.refusals import Refused

SCHEME = "byok"
PREFIX_BYTES = 4  # 8 hex characters
SECRET_BYTES = 32
# last_used_at is written at most once per this interval, so that a busy key does not
# turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
NAME_MAX_LENGTH = ApiKey._meta.get_field("name").max_length


class ApiKeyError(Exception):
    """Base of the API key errors; ``str()`` is safe to show."""


class InvalidApiKey(ApiKeyError):
    """No API key matches what was presented (malformed, unknown, or wrong secret)."""


class RevokedApiKey(ApiKeyError):
    """The presented API key exists and matches, but was revoked."""


class ApiKeyAlreadyRevoked(ApiKeyError, Refused):
    """Revoking an API key that is already revoked."""


def _digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


@sensitive_variables("api_key", "secret")
def api_key_create(*, environment: Environment, name: str, actor) -> tuple[ApiKey, str]:
    """Create an API key for ``environment``. Returns ``(row, api_key)``: the key itself
    exists only in this return value; show it once. Audited (``api_key_created``)."""
    name = name.strip()[:NAME_MAX_LENGTH]
    for attempt in range(5):
        prefix = secrets.token_hex(PREFIX_BYTES)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        api_key = f"{SCHEME}_{prefix}_{secret}"
        try:
            with transaction.atomic():
                row = ApiKey.objects.create(
                    environment=environment,
                    name=name,
                    prefix=prefix,
                    key_hash=_digest(api_key),
                    created_by=actor if getattr(actor, "is_authenticated", False) else None,
                )
                audit(
                    action=AuditEvent.Action.API_KEY_CREATED,
                    environment=environment,
                    actor=actor,
                    after={"name": name, "prefix": prefix},
                    message=f"API key “{name}” (byok_{prefix}_…) created.",
                )
        except IntegrityError:
            # The 32-bit prefix collided with another key's: draw again.
            if attempt == 4:
                raise
            continue
        return row, api_key
    raise AssertionError("unreachable")


def api_key_revoke(*, api_key: ApiKey, actor) -> ApiKey:
    """Revoke an API key at once (compare-and-set on ``revoked_at``). Audited
    (``api_key_revoked``). Raises :class:`ApiKeyAlreadyRevoked`."""
    revoked_at = now()
    with transaction.atomic():
        changed = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=revoked_at)
        if not changed:
            raise ApiKeyAlreadyRevoked(f"The API key “{api_key.name}” is already revoked.")
        audit(
            action=AuditEvent.Action.API_KEY_REVOKED,
            environment=api_key.environment,
            actor=actor,
            before={"name": api_key.name, "prefix": api_key.prefix, "status": "active"},
            after={"name": api_key.name, "prefix": api_key.prefix, "status": "revoked"},
            message=f"API key “{api_key.name}” (byok_{api_key.prefix}_…) revoked.",
        )
    api_key.revoked_at = revoked_at
    return api_key


def _parse(presented: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    scheme, sep, rest = presented.partition("_")
    prefix, sep2, secret = rest.partition("_")
    if scheme != SCHEME or not sep or not sep2 or len(prefix) != PREFIX_BYTES * 2 or len(secret) < 43:
        return None
    if not all(c in "0123456789abcdef" for c in prefix):
        return None
    return prefix


@sensitive_variables("presented")
def api_key_authenticate(*, presented: str, record_key: str | None = None, with_active_version: bool = False) -> ApiKey:
    """The API key row (with its environment) matching ``presented``.

    The data plane's hot path folds what it needs next into this same query (one round
    trip, issue 12): with ``record_key``, ``row.record_row`` is that record of the key's
    environment with its key version (``select_related``), or None; with
    ``with_active_version``, ``row.active_version`` is the environment's active key
    version, or None. The hash is compared right after the query, before any of it is used.

    Raises :class:`InvalidApiKey` for a malformed, unknown or wrong key and
    :class:`RevokedApiKey` for a revoked one. Updates ``last_used_at`` at most once a minute.
    """
    prefix = _parse(presented) if len(presented) <= 200 else None
    if prefix is None:
        raise InvalidApiKey("The API key is malformed.")
    row = _candidates(record_key, with_active_version).filter(prefix=prefix).first()
    # Compare even when no row matched, so both answers take the same time.
    expected = row.key_hash if row is not None else "0" * 64
    if not hmac.compare_digest(_digest(presented), expected) or row is None:
        raise InvalidApiKey("The API key is not valid.")
    if row.revoked_at is not None:
        raise RevokedApiKey("The API key was revoked.")
    # select_related through a FilteredRelation leaves the attribute unset when nothing joined.
    if record_key is not None:
        row.record_row = getattr(row, "record_row", None)
    if with_active_version:
        row.active_version = getattr(row, "active_version", None)
    _touch(row)
    return row


def _candidates(record_key: str | None, with_active_version: bool) -> QuerySet[ApiKey]:
    rows = ApiKey.objects.select_related("environment").order_by()
    if record_key is not None:
        # Unique (environment, record_key): at most one record joins.
        rows = rows.annotate(
            record_row=FilteredRelation(
                "environment__records", condition=Q(environment__records__record_key=record_key)
            )
        ).select_related("record_row", "record_row__registration")
    if with_active_version:
        # One active version per environment (a unique constraint): at most one joins.
        rows = rows.annotate(
            active_version=FilteredRelation(
                "environment__key_registrations",
                condition=Q(environment__key_registrations__status=KeyRegistration.Status.ACTIVE),
            )
        ).select_related("active_version")
    return rows


def _touch(row: ApiKey) -> None:
    current = now()
    if row.last_used_at is not None and current - row.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiKey.objects.filter(pk=row.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=current - LAST_USED_RESOLUTION)
    ).update(last_used_at=current)
    row.last_used_at = current


def api_keys_for_environment(*, environment: Environment) -> list[ApiKey]:
    """The environment's API keys, newest first, active ones before revoked ones."""
    keys = list(environment.api_keys.select_related("created_by"))
    return sorted(keys, key=lambda k: k.revoked_at is not None)
