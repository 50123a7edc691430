"""API key services: create, revoke and authenticate an environment's API keys.

An API key is ``byok_<prefix>_<secret>``: ``prefix`` is 8 lowercase hex characters (stored,
unique, shown in lists to tell keys apart), ``secret`` is 32 random bytes in unpadded
base64url (43 characters). Only the prefix and the SHA-256 of the whole key are stored; the
key is shown once. A salted slow hash is not needed: the key has 256 bits of entropy, so
nobody can guess it from its SHA-256 (django.contrib.auth's hashers are for low-entropy
passwords). Lookup is by prefix; the hash is then compared in constant time.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from datetime import timedelta

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q
from django.views.decorators.debug import sensitive_variables

from environments.models import Environment
from keys.clock import now
from keys.models import ApiKey, AuditEvent, KeyRegistration, Record
from keys.services import rows
from keys.services.audit import audit
from keys.services.refusals import Refused
from keys.services.rows import Columns

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


class ApiKeyFormAlreadySubmitted(ApiKeyError, Refused):
    """A "Create API key" form whose one-time token already created ``api_key`` (a
    double-click, a second tab on the same form, a resent POST): nothing is created."""

    def __init__(self, api_key: ApiKey) -> None:
        super().__init__(
            f"This form was already submitted; the API key “{api_key.name}” (byok_{api_key.prefix}_…) was "
            "created once. Its secret is shown only in the answer to the first submission: if you do not "
            "have it, revoke that key and create another."
        )
        self.api_key = api_key


def _digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


@sensitive_variables("api_key", "secret")
def api_key_create(
    *, environment: Environment, name: str, actor, form_token: uuid.UUID | None = None
) -> tuple[ApiKey, str]:
    """Create an API key for ``environment``. Returns ``(row, api_key)``: the key itself
    exists only in this return value; show it once. Audited (``api_key_created``).

    ``form_token``: the one-time token of the form that asks (``keys.forms.ApiKeyForm``),
    stored on the row. The row claims it: the unique constraint ``apikey_form_token_once``
    lets one insert per token and environment commit, so parallel or repeated submissions
    of one form create one key (PostgreSQL makes a second insert wait for the first and
    then fail). Raises :class:`ApiKeyFormAlreadySubmitted` (naming the key) for the others."""
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
                    form_token=form_token,
                )
                audit(
                    action=AuditEvent.Action.API_KEY_CREATED,
                    environment=environment,
                    actor=actor,
                    after={"name": name, "prefix": prefix},
                    message=f"API key “{name}” (byok_{prefix}_…) created.",
                )
        except IntegrityError:
            if form_token is not None:
                claimed = ApiKey.objects.filter(environment=environment, form_token=form_token).first()
                if claimed is not None:
                    raise ApiKeyFormAlreadySubmitted(claimed) from None
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
    environment with its key version, or None; with ``with_active_version``,
    ``row.active_version`` is the environment's active key version, or None. The hash is
    compared right after the query, before any of it is used. The query is written once per
    shape (:func:`_auth_query`), not compiled by the ORM on every request.

    Raises :class:`InvalidApiKey` for a malformed, unknown or wrong key and
    :class:`RevokedApiKey` for a revoked one. Updates ``last_used_at`` at most once a minute.
    """
    prefix = _parse(presented) if len(presented) <= 200 else None
    if prefix is None:
        raise InvalidApiKey("The API key is malformed.")
    query = _auth_query(connections[DEFAULT_DB_ALIAS].vendor, record_key is not None, with_active_version)
    params: list[object] = []
    if record_key is not None:
        params.append(record_key)
    if with_active_version:
        params.append(KeyRegistration.Status.ACTIVE)
    params.append(prefix)
    found = rows.fetch(query.sql, params)
    row = query.build(found, connections[DEFAULT_DB_ALIAS]) if found is not None else None
    return _checked(row, _digest(presented))


def _checked(row: ApiKey | None, digest: str) -> ApiKey:
    """``row`` if its hash is ``digest`` and it is not revoked (then ``last_used_at`` is
    touched); compared even when no row matched, so both answers take the same time.
    Raises :class:`InvalidApiKey`, :class:`RevokedApiKey`."""
    expected = row.key_hash if row is not None else "0" * 64
    if not hmac.compare_digest(digest, expected) or row is None:
        raise InvalidApiKey("The API key is not valid.")
    if row.revoked_at is not None:
        raise RevokedApiKey("The API key was revoked.")
    _touch(row)
    return row


def api_key_prefix(presented: str) -> str | None:
    """The prefix of a well-formed API key (public: it names the key's rate-limit bucket),
    else None. Says nothing about whether the key is valid."""
    return _parse(presented) if len(presented) <= 200 else None


@sensitive_variables("presented", "digest")
def api_key_record_delete(
    *, presented: str, environment_public_id: uuid.UUID | None, record_key: str | None
) -> tuple[ApiKey, bool]:
    """Authenticate ``presented`` and, in the same statement, delete the record
    ``record_key`` of the environment ``environment_public_id`` (issue 12: a DELETE is one
    round trip). Returns ``(row, deleted)``: the API key row with its environment, as
    :func:`api_key_authenticate` returns it, and whether a record was deleted.

    The record is deleted only if the key's SHA-256 matches, the key is not revoked and
    its environment is ``environment_public_id``; a None environment or record key (the
    caller found them malformed) deletes nothing. The hash is compared in SQL (a timing
    difference there tells nothing: it is the hash of a 256-bit secret) and again, in
    constant time, right after, to answer as :func:`api_key_authenticate` does.

    Raises :class:`InvalidApiKey` and :class:`RevokedApiKey` (nothing deleted).
    """
    prefix = api_key_prefix(presented)
    if prefix is None:
        raise InvalidApiKey("The API key is malformed.")
    digest = _digest(presented)
    conn = connections[DEFAULT_DB_ALIAS]
    if conn.vendor != "postgresql":
        # No data-modifying WITH (SQLite in development): authenticate, then delete.
        row = api_key_authenticate(presented=presented)
        deleted = 0
        if row.environment.public_id == environment_public_id and record_key is not None:
            deleted = Record.objects.filter(environment=row.environment_id, record_key=record_key).delete()[0]
        return row, bool(deleted)
    query = _delete_query()
    found = rows.fetch(query.sql, [prefix, digest, environment_public_id, record_key, prefix])
    row = _checked(query.auth.build(found, conn) if found is not None else None, digest)
    assert found is not None
    return row, bool(found[-1])


class _DeleteQuery:
    """The API key look-up of :class:`_AuthQuery`, and a ``DELETE`` of the record guarded
    by the key's hash, revocation and environment, in one statement::

        WITH deleted AS (DELETE FROM record USING apikey, environment
                         WHERE prefix = %s AND key_hash = %s AND revoked_at IS NULL
                         AND environment.public_id = %s AND record_key = %s …)
        SELECT <API key>, <environment>, (SELECT count(*) FROM deleted) FROM apikey … WHERE prefix = %s

    PostgreSQL runs a data-modifying WITH exactly once, whether or not the SELECT reads
    it; the SELECT sees the rows as they were before the DELETE (one snapshot)."""

    def __init__(self) -> None:
        q = connection.ops.quote_name
        self.auth = _AuthQuery(False, False)
        key = Columns(ApiKey, "dk")
        environment = Columns(Environment, "de")
        record = Columns(Record, "rec")
        deleted = (
            f"DELETE FROM {q(Record._meta.db_table)} rec USING {q(ApiKey._meta.db_table)} dk, "
            f"{q(Environment._meta.db_table)} de "
            f"WHERE {key.column('prefix')} = %s AND {key.column('key_hash')} = %s AND {key.column('revoked_at')} IS NULL "
            f"AND {environment.column('id')} = {key.column('environment')} AND {environment.column('public_id')} = %s "
            f"AND {record.column('environment')} = {key.column('environment')} AND {record.column('record_key')} = %s "
            "RETURNING 1"
        )
        self.sql = _with_count(self.auth, "deleted", deleted)


def _with_count(auth: _AuthQuery, name: str, change: str) -> str:
    """``WITH name AS (change) SELECT <API key>, <environment>, (SELECT count(*) FROM name)
    FROM apikey … WHERE prefix = %s``: the data-modifying ``change`` runs exactly once,
    and the count of the rows it returned goes last, where ``auth.build`` does not look."""
    select = "SELECT " + auth.sql.removeprefix("SELECT ").replace(" FROM ", f", (SELECT count(*) FROM {name}) FROM ", 1)
    return f"WITH {name} AS ({change}) {select}"


@functools.cache
def _delete_query() -> _DeleteQuery:
    return _DeleteQuery()


# Where the guard's two values (the API key's prefix and SHA-256) go among the parameters
# of a change passed to api_key_authenticate_changing.
GUARD_PARAMS = object()


def api_key_guard_sql(environment_column: str) -> str:
    """The SQL condition "the presented API key is valid, not revoked, and of the
    environment in ``environment_column``", for a change run by
    :func:`api_key_authenticate_changing`; its two parameters go where the change's
    parameters hold :data:`GUARD_PARAMS`."""
    q = connection.ops.quote_name
    key = Columns(ApiKey, "gk")
    return (
        f"EXISTS (SELECT 1 FROM {q(ApiKey._meta.db_table)} gk WHERE {key.column('prefix')} = %s "
        f"AND {key.column('key_hash')} = %s AND {key.column('revoked_at')} IS NULL "
        f"AND {key.column('environment')} = {environment_column})"
    )


@functools.cache
def _changing_query(change: str) -> str:
    return _with_count(_auth_query("postgresql", False, False), "changed", change)


@sensitive_variables("presented", "digest")
def api_key_authenticate_changing(
    *, presented: str, change: str, params: Sequence[object]
) -> tuple[ApiKey, int]:
    """Authenticate ``presented`` and, in the same statement, run ``change``: one
    PostgreSQL statement that modifies rows and returns one row per row changed
    (``INSERT … RETURNING 1``), guarded by :func:`api_key_guard_sql` so that it changes
    nothing unless the key is valid, not revoked and of the right environment. ``params``
    are the change's, with :data:`GUARD_PARAMS` where the guard's go.

    Returns ``(row, changed)``: the API key row with its environment, as
    :func:`api_key_authenticate` returns it, and how many rows the change returned. The
    hash is compared in SQL (for the guard) and again, in constant time, right after.

    Raises :class:`InvalidApiKey` and :class:`RevokedApiKey` (then nothing was changed).
    PostgreSQL only (a data-modifying ``WITH``)."""
    prefix = api_key_prefix(presented)
    if prefix is None:
        raise InvalidApiKey("The API key is malformed.")
    digest = _digest(presented)
    bound: list[object] = []
    for param in params:
        if param is GUARD_PARAMS:
            bound += [prefix, digest]
        else:
            bound.append(param)
    bound.append(prefix)
    found = rows.fetch(_changing_query(change), bound)
    conn = connections[DEFAULT_DB_ALIAS]
    auth = _auth_query(conn.vendor, False, False)
    row = _checked(auth.build(found, conn) if found is not None else None, digest)
    assert found is not None
    return row, int(found[-1])


# The columns the data plane's hot paths read (with the primary keys); the rest of each row
# stays deferred on the instances (keys.services.rows.Columns). A cold data-key load reads
# the version's other columns in one query (records.load_data_key). Fewer columns: about
# 0.1 ms less per GET in PostgreSQL and in the driver (53 columns -> 20).
API_KEY_FIELDS = ("environment", "prefix", "key_hash", "last_used_at", "revoked_at")
ENVIRONMENT_FIELDS = ("organization", "public_id")
RECORD_FIELDS = ("environment", "record_key", "ciphertext", "registration", "key_version", "updated_at")
VERSION_FIELDS = ("environment", "version", "kind", "status", "generation")


class _AuthQuery:
    """The API key look-up by prefix, with its environment and, optionally, a record of
    that environment with its key version (``record_row``) and the environment's active
    version (``active_version``), as one SELECT of outer joins."""

    def __init__(self, with_record: bool, with_active_version: bool) -> None:
        self.with_record, self.with_active_version = with_record, with_active_version
        q = connection.ops.quote_name
        self.api_key = Columns(ApiKey, "ak", API_KEY_FIELDS)
        self.environment = Columns(Environment, "env", ENVIRONMENT_FIELDS)
        self.record = Columns(Record, "rec", RECORD_FIELDS)
        self.registration = Columns(KeyRegistration, "reg", VERSION_FIELDS)
        self.active = Columns(KeyRegistration, "act", VERSION_FIELDS)
        parts = [self.api_key, self.environment]
        joins = [
            f"FROM {q(ApiKey._meta.db_table)} ak INNER JOIN {q(Environment._meta.db_table)} env "
            f"ON {self.environment.column('id')} = {self.api_key.column('environment')}"
        ]
        if with_record:
            # Unique (environment, record_key): at most one record joins.
            parts += [self.record, self.registration]
            joins.append(
                f"LEFT OUTER JOIN {q(Record._meta.db_table)} rec ON {self.record.column('environment')} = "
                f"{self.api_key.column('environment')} AND {self.record.column('record_key')} = %s "
                f"LEFT OUTER JOIN {q(KeyRegistration._meta.db_table)} reg ON {self.registration.column('id')} = "
                f"{self.record.column('registration')}"
            )
        if with_active_version:
            # One active version per environment (a unique constraint): at most one joins.
            parts.append(self.active)
            joins.append(
                f"LEFT OUTER JOIN {q(KeyRegistration._meta.db_table)} act ON {self.active.column('environment')} = "
                f"{self.api_key.column('environment')} AND {self.active.column('status')} = %s"
            )
        self.sql = (
            "SELECT " + ", ".join(p.sql for p in parts) + " " + " ".join(joins)
            + f" WHERE {self.api_key.column('prefix')} = %s"
        )

    def build(self, found: Sequence[object], conn: BaseDatabaseWrapper) -> ApiKey:
        row = self.api_key.build(found, 0, conn)
        environment = self.environment.build(found, self.api_key.width, conn)
        assert isinstance(row, ApiKey) and isinstance(environment, Environment)
        _API_KEY_ENVIRONMENT.set_cached_value(row, environment)
        at = self.api_key.width + self.environment.width
        if self.with_record:
            record = self.record.build(found, at, conn)
            if record is not None:
                _RECORD_ENVIRONMENT.set_cached_value(record, environment)
                _RECORD_REGISTRATION.set_cached_value(record, self.registration.build(found, at + self.record.width, conn))
            row.record_row = record  # type: ignore[attr-defined]
            at += self.record.width + self.registration.width
        if self.with_active_version:
            active = self.active.build(found, at, conn)
            if active is not None:
                _REGISTRATION_ENVIRONMENT.set_cached_value(active, environment)
            row.active_version = active  # type: ignore[attr-defined]
        return row


# The forward foreign-key fields whose cache build() fills (what select_related would).
_API_KEY_ENVIRONMENT = ApiKey._meta.get_field("environment")
_RECORD_ENVIRONMENT = Record._meta.get_field("environment")
_RECORD_REGISTRATION = Record._meta.get_field("registration")
_REGISTRATION_ENVIRONMENT = KeyRegistration._meta.get_field("environment")


@functools.cache
def _auth_query(vendor: str, with_record: bool, with_active_version: bool) -> _AuthQuery:
    return _AuthQuery(with_record, with_active_version)


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
