"""Data-plane services: encrypt and store records, read and decrypt them.

Write path (docs/architecture.md, "The write path"): the environment's active key version (one
query, which also brings its ``status`` and ``generation`` for the data-key cache) → its
plaintext data key from the cache (or KMS ``Decrypt`` / unsealing on a miss), with the
``crypto.RecordCipher`` cached beside it → ``RecordCipher.encrypt`` with associated data environment public id + record key + key
version → one upsert of ciphertext + registration + key version. Nothing is written when
any step fails, so a failed write leaves the previous record intact.

Read path: the record with its registration (``select_related``: one query) → that
version's cached cipher → ``RecordCipher.decrypt``. A ciphertext that was altered or moved to
another record or environment fails with :class:`IntegrityFailure`, never partial plaintext.

Record bodies are JSON values, stored as their compact JSON encoding (UTF-8) inside the
envelope. Record keys: 1 to 255 characters of ``A-Z a-z 0-9 . _ : -``, starting with a
letter or digit (safe in a URL path segment without escaping; use ``:`` to build
hierarchies, e.g. ``customer:42:profile``). ``batch`` and ``find`` are reserved (they name
the bulk endpoints).

Errors are typed (:class:`KeyUnavailable`, :class:`RecordNotFound`, :class:`IntegrityFailure`,
:class:`InvalidRecordInput` and its subclasses, :class:`RecordTooLarge`); ``keys.api.views`` maps them to HTTP answers.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.db.models import Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from environments.models import Environment
from keys import crypto, kms, sts
from keys.cache import DataKeyUnreadable, KeyVersionNotUsable, Lease, get_cache
from keys.models import ApiKey, KeyRegistration, Record
from keys.services import api_keys
from keys.services.rows import Columns
from keys.services.rows import execute as rows_execute
from keys.services.rows import fetch as rows_fetch
from keys.services.sealing import CredentialsUnreadable, registration_credentials, unseal_field
from keys.services.validation import registration_mark_inaccessible

log = logging.getLogger(__name__)

Status = KeyRegistration.Status

RECORD_KEY_MAX_LENGTH = 255
RECORD_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,254}")
RESERVED_RECORD_KEYS = frozenset({"batch", "find"})
# JSON may escape half of a UTF-16 surrogate pair ("\ud800") and Python's json accepts it
# (and, decoding bytes, the UTF-8-like bytes ED A0 80 too), but such a string is not Unicode
# text: UTF-8 cannot encode it, so a record can neither store nor return it.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
NOT_UNICODE = (
    "{what} must be valid Unicode text: it contains a lone surrogate (U+D800 to U+DFFF, such as "
    "\"\\ud800\" without the second half of its pair), which UTF-8 cannot encode."
)
# Seconds a client should wait after a transient KMS failure (throttling, outage).
TRANSIENT_RETRY_AFTER_SECONDS = 5
# KMS transient reasons the API reports as "unreachable": the client cannot tell them apart.
# One retry for each of the data plane's AWS calls, KMS Decrypt and (role mode) STS AssumeRole
# (botocore "standard" mode retries a throttled or 5xx call with backoff): enough for a
# throttle blip, while a hung KMS or STS holds the request for at most two attempts of
# connect + read seconds each (see data_plane_aws_options).
DATA_PLANE_KMS_MAX_ATTEMPTS = 2
_UNREACHABLE_REASONS = frozenset({kms.Reason.NETWORK, kms.Reason.TIMEOUT})
ACTOR_LABEL = "data plane"


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class RecordError(Exception):
    """Base of the data plane's domain errors. ``str()`` is safe to show to API clients."""


class InvalidRecordInput(RecordError):
    """Bad input: a record key outside the allowed set, a batch over the limit, a duplicate
    record key in one batch, a body that is not JSON-encodable."""


class InvalidRecordKey(InvalidRecordInput):
    """A record key outside the allowed set, or reserved."""


class DuplicateRecordKey(InvalidRecordInput):
    """The same record key twice in one batch."""


class TooManyRecords(InvalidRecordInput):
    """A batch or find request with more than ``settings.API_MAX_BATCH_RECORDS`` items."""


class RecordTooLarge(RecordError):
    """A record body is larger than ``settings.API_MAX_BODY_BYTES`` once encoded."""


class RecordNotFound(RecordError):
    """No record with that key in that environment."""


class IntegrityFailure(RecordError):
    """A stored ciphertext failed its integrity check (tampered, moved from another record
    or environment, or not made under its key version's data key)."""

    def __init__(self, record_key: str, message: str | None = None) -> None:
        self.record_key = record_key
        super().__init__(message or f"Record {record_key!r} failed its integrity check; it cannot be decrypted.")


class KeyUnavailable(RecordError):
    """The data key needed is unavailable. ``reason``: a KMS reason (``disabled``,
    ``pending_deletion``, ``access_denied``, ``throttled``, ``unreachable``, …), the reason a
    version was made inaccessible, ``no_active_version``, or a platform reason
    (``credentials_unreadable``, ``sealing_key_unavailable``, ``invalid_data_key``).
    ``retry_after`` is seconds for transient failures, None when an admin must act.
    ``key_version`` is the version concerned, when there is one."""

    def __init__(self, reason: str, message: str, *, retry_after: int | None = None, key_version: int | None = None):
        self.reason = reason
        self.retry_after = retry_after
        self.key_version = key_version
        super().__init__(message)

    @property
    def transient(self) -> bool:
        return self.retry_after is not None


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DecryptedRecord:
    """A record read back. ``body_json`` is the record's JSON text exactly as stored (and
    authenticated); ``body`` parses it."""

    record_key: str
    body_json: str
    key_version: int
    updated_at: datetime

    @property
    def body(self) -> Any:
        return json.loads(self.body_json)


@dataclass(frozen=True)
class RecordFailure:
    """One record ``records_find`` could not return: ``code`` is ``not_found``,
    ``integrity_error`` or ``key_unavailable`` (then ``reason`` says why)."""

    record_key: str
    code: str
    message: str
    reason: str | None = None
    retry_after: int | None = None


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------


def validate_record_key(record_key: object) -> str:
    """Return ``record_key`` if allowed (see the module docstring), else raise
    :class:`InvalidRecordInput`."""
    if not isinstance(record_key, str) or not RECORD_KEY_RE.fullmatch(record_key):
        if isinstance(record_key, str) and _LONE_SURROGATE.search(record_key):  # only once refused: off the hot path
            raise InvalidRecordKey(NOT_UNICODE.format(what="A record key"))
        raise InvalidRecordKey(
            "A record key is 1 to 255 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-', "
            "starting with a letter or digit."
        )
    if record_key in RESERVED_RECORD_KEYS:
        raise InvalidRecordKey(f"The record key {record_key!r} is reserved.")
    return record_key


# CPython converts a decimal string of at most sys.get_int_max_str_digits() digits (4,300 by
# default) to an int, and refuses a longer one with a plain ValueError, json.loads included
# (CVE-2020-10735: the conversion is quadratic). Such JSON is well-formed, so it is not
# "not valid JSON": it is a number this service cannot take.
# https://docs.python.org/3/library/stdtypes.html#int-max-str-digits
NUMBER_TOO_LONG = "A number in the body has more than {limit:,} digits; send it as a string."


def number_too_long(text: str | bytes, **options: Any) -> str | None:
    """After ``json.loads(text, **options)`` raised a ``ValueError``: the message to answer
    (``NUMBER_TOO_LONG``) if ``text`` is well-formed JSON whose only fault is an integer longer
    than Python converts, else None (it is not valid JSON, or ``options`` refuse it).

    Parses ``text`` again, each integer counted before it is converted (a long one stands in
    as 0). Off the hot path: run only once a parse failed, and no longer than that parse."""
    limit = sys.get_int_max_str_digits()
    too_long: list[str] = []

    def counted_int(digits: str) -> int:
        if limit and len(digits.lstrip("-")) > limit:
            too_long.append(digits)
            return 0
        return int(digits)

    try:
        json.loads(text, parse_int=counted_int, **options)
    except (ValueError, RecursionError):
        return None
    return NUMBER_TOO_LONG.format(limit=limit) if too_long else None


# What a client reaches NaN or an infinity with: the API refuses the literals NaN and
# Infinity as not JSON, so through it this is a number past a 64-bit float (1e400 parses as
# inf, IEEE 754 binary64, RFC 8259 section 6).
NOT_JSON_VALUE = (
    "A record body must be a JSON value: a number in it is beyond the range of a 64-bit float "
    "(about ±1.8e308) or is NaN or Infinity; send such a number as a string."
)
# One encoder for every record body: json.dumps with options builds a new JSONEncoder per
# call, which cost as much as the encoding of a 1 KiB body (a batch encodes a thousand).
_BODY_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_body(body: Any) -> bytes:
    """The compact JSON encoding (UTF-8) of a record body. Raises :class:`InvalidRecordInput`
    for a value that is not JSON (NaN, infinities, non-JSON types) or holds a string that is
    not Unicode text (a lone surrogate: ``NOT_UNICODE``), and
    :class:`RecordTooLarge` past ``settings.API_MAX_BODY_BYTES``."""
    try:
        encoded = _BODY_ENCODER.encode(body).encode("utf-8")
    except UnicodeEncodeError as e:  # a ValueError too: said first, in its own words
        raise InvalidRecordInput(NOT_UNICODE.format(what="A record body")) from e
    except (TypeError, ValueError) as e:
        raise InvalidRecordInput(NOT_JSON_VALUE) from e
    except RecursionError as e:
        # json.dumps recurses once per nesting level, like json.loads, but from deeper in
        # the stack: a body the parser just accepted can still exhaust it here.
        raise InvalidRecordInput("A record body is nested too deeply.") from e
    if len(encoded) > settings.API_MAX_BODY_BYTES:
        raise RecordTooLarge(f"A record body may be at most {settings.API_MAX_BODY_BYTES} bytes of JSON.")
    return encoded


def _check_count(items: Sequence[Any], what: str) -> None:
    if not items:
        raise InvalidRecordInput(f"Give at least one {what}.")
    if len(items) > settings.API_MAX_BATCH_RECORDS:
        raise TooManyRecords(f"At most {settings.API_MAX_BATCH_RECORDS} {what}s per request; got {len(items)}.")


# ---------------------------------------------------------------------------
# Key versions and data keys
# ---------------------------------------------------------------------------


def active_registration(*, environment: Environment) -> KeyRegistration:
    """The environment's active key version, for writes.

    One query finds the active version or the inaccessible one that was active (to say
    why). Raises :class:`KeyUnavailable`: ``no_active_version``, or the reason the active
    version became inaccessible. Never falls back to another version.
    """
    candidates = list(
        KeyRegistration.objects.filter(environment=environment).filter(
            Q(status=Status.ACTIVE) | Q(status=Status.INACCESSIBLE, restore_status=Status.ACTIVE)
        )
    )
    active = [r for r in candidates if r.status == Status.ACTIVE]
    if active:
        return active[0]
    if not candidates:
        raise KeyUnavailable("no_active_version", "The environment has no active key version.")
    # The version that was active until KMS refused it: say why.
    newest = max(candidates, key=lambda r: r.version)
    raise _not_usable(KeyVersionNotUsable(newest), newest)


# How many bytes a data key has (AES-256).
DATA_KEY_SIZE = 32


@sensitive_variables("data_key", "result", "credentials")
def load_data_key(registration: KeyRegistration) -> bytearray:
    """Produce the plaintext data key of ``registration`` (a 32-byte ``bytearray`` the
    caller owns and must wipe): the loader this service gives the data-key cache on a miss.

    Raises ``kms.KmsPermanentError`` / ``kms.KmsTransientError`` from KMS ``Decrypt`` (and,
    in role mode, their ``sts.StsError`` subclasses from STS ``AssumeRole``), and
    :class:`DataKeyUnreadable` for sealing problems or a plaintext that is not 32 bytes.
    Both AWS calls run under :func:`data_plane_aws_options`.

    The data plane's queries read only the columns its hot paths need
    (``api_keys.VERSION_FIELDS``); here, on a miss, the version's other columns (and its
    environment's) are read in one query each, not one per column.
    """
    _complete(registration)
    if _REGISTRATION_ENVIRONMENT.is_cached(registration):
        _complete(registration.environment)
    if registration.is_byok:
        options = data_plane_aws_options()
        try:
            credentials = registration_credentials(registration=registration, sts_options=options)
        except CredentialsUnreadable as e:
            raise DataKeyUnreadable("credentials_unreadable", str(e)) from e
        result = _kms_decrypt(registration, credentials, options)
        data_key = result.plaintext
    else:
        try:
            data_key = unseal_field(registration, "sealed_data_key")
        except (crypto.SealingKeyUnavailable, crypto.SealedValueInvalid) as e:
            raise DataKeyUnreadable(
                "sealing_key_unavailable",
                "The platform-managed data key cannot be unsealed (sealing key missing or value damaged).",
            ) from e
    if len(data_key) != DATA_KEY_SIZE:
        crypto.wipe(data_key)
        raise DataKeyUnreadable(
            "invalid_data_key", f"The data key of version {registration.version} is not {DATA_KEY_SIZE} bytes."
        )
    return data_key


_REGISTRATION_ENVIRONMENT = KeyRegistration._meta.get_field("environment")


def _complete(instance: models.Model) -> None:
    """Read the deferred fields of ``instance`` (if any) in one query."""
    deferred = instance.get_deferred_fields()
    if deferred:
        instance.refresh_from_db(fields=list(deferred))


def data_plane_aws_options() -> kms.KmsClientOptions:
    """The client options of the data plane's AWS calls on a data-key cache miss inside an API
    request: KMS ``Decrypt`` and, in role mode, the STS ``AssumeRole`` before it (one
    ``keys.aws_clients.ClientOptions``, so one budget for both):
    ``settings.DATA_PLANE_KMS_CONNECT_TIMEOUT_SECONDS`` / ``..._READ_TIMEOUT_SECONDS`` (seconds;
    named for KMS, they bound every AWS call of the data plane) and ``DATA_PLANE_KMS_MAX_ATTEMPTS``
    botocore attempts, the same mechanism as eager validation's
    ``keys.services.validation.INLINE_KMS_OPTIONS``.

    Worst case of a cold load (each endpoint accepts the connection and never answers, or
    answers just inside the read timeout), per call: attempts x (connect + read) + botocore's
    backoff before the retry (under 1 s). With the defaults (1 s, 3 s, 2 attempts): IAM
    credentials, one KMS call, about 9 s; role mode with no held session, AssumeRole then
    Decrypt, about 2 x 9 = 18 s. A hung STS or KMS alone answers ``503 key_unavailable``
    (reason ``sts_timeout`` or ``unreachable``) after about 9 s, instead of the STS and KMS
    client defaults' 3 x 10 s. Role sessions are held for their lifetime
    (``STS_SESSION_DURATION_SECONDS``), so most cold loads make only the KMS call."""
    return kms.KmsClientOptions(
        connect_timeout=settings.DATA_PLANE_KMS_CONNECT_TIMEOUT_SECONDS,
        read_timeout=settings.DATA_PLANE_KMS_READ_TIMEOUT_SECONDS,
        max_attempts=DATA_PLANE_KMS_MAX_ATTEMPTS,
    )


@sensitive_variables("credentials")
def _kms_decrypt(
    registration: KeyRegistration, credentials: kms.KmsCredentials, options: kms.KmsClientOptions
) -> kms.DecryptResult:
    # keys.kms counts and times the call (keys.metrics: kms_calls, kms_call_duration_seconds).
    return kms.decrypt(
        region=registration.region,
        credentials=credentials,
        kms_key_arn=registration.kms_key_arn,
        ciphertext_blob=bytes(registration.encrypted_data_key or b""),
        encryption_context=registration.encryption_context or None,
        endpoint_url=settings.AWS_KMS_ENDPOINT_URL,
        options=options,
    )


def _not_usable(error: KeyVersionNotUsable, registration: KeyRegistration) -> KeyUnavailable:
    return KeyUnavailable(
        error.reason,
        f"Key version {registration.version} is {registration.get_status_display().lower()}"
        + (f" ({registration.inaccessible_reason})" if registration.inaccessible_reason else "")
        + ": the data plane cannot use it until access is restored.",
        key_version=registration.version,
    )


@contextmanager
def data_key_for(registration: KeyRegistration) -> Iterator[memoryview]:
    """``with data_key_for(registration) as data_key:`` — the cached plaintext data key of a
    key version (read-only view, released at the end of the block).

    A permanent KMS refusal marks the version inaccessible (``actor_label="data plane"``;
    the generation bump evicts it in every process) and raises :class:`KeyUnavailable`
    without ``retry_after``; a transient KMS failure raises it with ``retry_after`` and
    changes nothing.
    """
    lease = _lease(registration)
    try:
        yield lease.data_key
    finally:
        lease.release()


@contextmanager
def record_cipher_for(registration: KeyRegistration) -> Iterator[crypto.RecordCipher]:
    """``with record_cipher_for(registration) as cipher:`` — the ``crypto.RecordCipher``
    the data-key cache keeps beside the version's data key (subkey derived once per epoch,
    not per record), usable until the end of the block. Raises as :func:`data_key_for`."""
    lease = _lease(registration)
    try:
        yield lease.cipher
    finally:
        lease.release()


def _lease(registration: KeyRegistration) -> Lease:
    try:
        return get_cache().lease(registration, loader=load_data_key)
    except KeyVersionNotUsable as e:
        raise _not_usable(e, registration) from e
    except kms.KmsPermanentError as e:
        _mark_inaccessible(registration, e)
        raise KeyUnavailable(
            e.reason,
            f"KMS refused to decrypt the data key of version {registration.version}: {e.message}",
            key_version=registration.version,
        ) from e
    except kms.KmsTransientError as e:
        reason = "unreachable" if e.reason in _UNREACHABLE_REASONS else e.reason
        # In role mode the AssumeRole before Decrypt may be what failed (reason sts_*).
        what = "STS could not assume the role" if isinstance(e, sts.StsError) else "KMS could not decrypt the data key"
        raise KeyUnavailable(
            reason,
            f"{what} of version {registration.version} right now ({reason}); retry later.",
            retry_after=TRANSIENT_RETRY_AFTER_SECONDS,
            key_version=registration.version,
        ) from e
    except DataKeyUnreadable as e:
        log.warning("data key of registration %s unreadable: %s", registration.pk, e.reason)
        raise KeyUnavailable(e.reason, str(e), key_version=registration.version) from e


def _mark_inaccessible(registration: KeyRegistration, error: kms.KmsPermanentError) -> None:
    log.warning(
        "KMS refused Decrypt for registration %s (%s); marking it inaccessible", registration.pk, error.reason
    )
    try:
        registration_mark_inaccessible(registration=registration, reason=error.reason, actor_label=ACTOR_LABEL)
    except Exception:  # the answer to the client is the same; the next request tries again
        log.exception("could not mark registration %s inaccessible", registration.pk)


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def _environment_id(environment: Environment) -> str:
    return str(environment.public_id)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as a write stored it: the envelope, the key version (and its row) it was
    encrypted under, and the time of the write. Cheaper than a ``Record`` instance (a
    batch makes a thousand)."""

    record_key: str
    ciphertext: bytes
    registration: KeyRegistration
    key_version: int
    updated_at: datetime


@sensitive_variables("plaintext", "body")
def record_put(
    *, environment: Environment, record_key: str, body: Any, active: KeyRegistration | None = None
) -> StoredRecord:
    """Encrypt ``body`` (any JSON value) under the environment's active key version and
    store it as ``record_key`` (create or replace). Returns the :class:`StoredRecord`.

    ``active``: the environment's active version as the caller already read it (the API
    reads it with the API key, ``apikeys.api_key_authenticate(with_active_version=True)``),
    saving the look-up; the write itself checks it is still active (see :func:`_upsert`).

    Raises :class:`InvalidRecordInput`, :class:`RecordTooLarge`, :class:`KeyUnavailable`.
    """
    validate_record_key(record_key)
    return _put(environment, [(record_key, encode_body(body))], active)[0]


@sensitive_variables("encoded", "records")
def records_put_batch(
    *, environment: Environment, records: Sequence[tuple[str, Any]], active: KeyRegistration | None = None
) -> list[StoredRecord]:
    """Encrypt and store many records in one transaction: all or none.

    ``records``: ``(record_key, body)`` pairs, at most ``settings.API_MAX_BATCH_RECORDS``,
    each record key once. One data-key lookup and one ``INSERT … ON CONFLICT (environment,
    record_key) DO UPDATE`` for the whole batch. Returns the stored records, in order.

    Raises :class:`InvalidRecordInput` (naming the first bad item), :class:`RecordTooLarge`,
    :class:`KeyUnavailable`.
    """
    _check_count(records, "record")
    seen: set[str] = set()
    encoded: list[tuple[str, bytes]] = []
    for index, (record_key, body) in enumerate(records):
        try:
            validate_record_key(record_key)
            if record_key in seen:
                raise DuplicateRecordKey(f"The record key {record_key!r} appears twice.")
            seen.add(record_key)
            encoded.append((record_key, encode_body(body)))
        except RecordError as e:
            raise type(e)(f"records[{index}]: {e}") from e
    return _put(environment, encoded, active)


@sensitive_variables("encoded", "plaintext", "sealed")
def _put(
    environment: Environment, encoded: list[tuple[str, bytes]], active: KeyRegistration | None
) -> list[StoredRecord]:
    """Encrypt ``(record_key, plaintext)`` pairs under the active version and store them
    with one guarded upsert; look the active version up again and re-encrypt when another
    version became active meanwhile (at most :data:`WRITE_ATTEMPTS` times)."""
    environment_id = _environment_id(environment)
    for attempt in range(WRITE_ATTEMPTS):
        registration = _active_for_write(environment, active if attempt == 0 else None)
        version = registration.version
        with record_cipher_for(registration) as cipher:
            encrypt = cipher.encrypt
            sealed = [
                (
                    record_key,
                    encrypt(plaintext=plaintext, environment_id=environment_id, record_key=record_key, key_version=version),
                )
                for record_key, plaintext in encoded
            ]
        try:
            updated_at = _upsert(environment, registration, sealed)
        except _VersionChanged:
            continue  # another version became active meanwhile: encrypt again under it
        _remember_active(environment, registration)
        return [StoredRecord(key, ciphertext, registration, version, updated_at) for key, ciphertext in sealed]
    raise _still_rotating()


# A write re-encrypts under the new active version at most this many times when versions
# are activated while it runs, then answers a transient key_unavailable.
WRITE_ATTEMPTS = 3


class _VersionChanged(Exception):
    """The version a write encrypted under is no longer active at store time."""


def _still_rotating() -> KeyUnavailable:
    return KeyUnavailable(
        "rotating", "Key versions changed while the write ran; try again.", retry_after=1
    )


def _active_for_write(environment: Environment, known: KeyRegistration | None) -> KeyRegistration:
    """``known`` if the caller read it as the active version, else a fresh look-up."""
    if known is not None and known.status == Status.ACTIVE and known.environment_id == environment.pk:
        return known
    return active_registration(environment=environment)


def _upsert(environment: Environment, registration: KeyRegistration, sealed: list[tuple[str, bytes]]) -> datetime:
    """Create or replace the records ``sealed`` (``(record_key, envelope)`` pairs of
    ``environment``, encrypted under ``registration``) and return the time written, only if
    that version is still active with the generation it was read at; else raise
    :class:`_VersionChanged` (the caller looks the active version up afresh and encrypts
    again). A statement is atomic, so a batch is stored whole or not at all and a failed
    write keeps old records.

    PostgreSQL: one statement, no transaction around it (autocommit)::

        INSERT INTO record (…) SELECT reg.…, t.record_key, t.ciphertext
        FROM (SELECT … FROM keyregistration WHERE id = %s AND status = 'active'
              AND generation = %s FOR SHARE) reg
        CROSS JOIN unnest(%s::text[], %b::bytea[]) AS t(record_key, ciphertext)
        ON CONFLICT (environment, record_key) DO UPDATE SET …

    The guard travels with the write: ``FOR SHARE`` makes activation (its status UPDATE)
    and retirement (``SELECT … FOR UPDATE``, then a count of the version's records) wait
    until this statement commits; if one of them committed first, PostgreSQL re-checks
    the WHERE on the new row version (READ COMMITTED) and writes no row. So no write
    commits a record under a version after it stopped being active, and PUTs do not block
    each other (share locks). The rows go as two arrays bound server-side, bytea in
    binary: Django's ``bulk_create`` binds every value client-side and costs about 4x as
    much per record (bench/bench_dataplane.py).

    Other databases (SQLite in development): the check and ``bulk_create`` in one
    transaction; SQLite's IMMEDIATE transactions (portal/settings.py) serialise writers.
    """
    timestamp = timezone.now()
    generation = registration.generation
    if connection.vendor != "postgresql":
        with transaction.atomic():
            if not KeyRegistration.objects.filter(
                pk=registration.pk, status=Status.ACTIVE, generation=generation
            ).exists():
                raise _VersionChanged()
            rows = [
                Record(
                    environment=environment, record_key=record_key, ciphertext=ciphertext,
                    registration=registration, key_version=registration.version,
                    created_at=timestamp, updated_at=timestamp,
                )
                for record_key, ciphertext in sealed
            ]
            Record.objects.bulk_create(
                rows,
                update_conflicts=True,
                unique_fields=["environment", "record_key"],
                update_fields=["ciphertext", "registration", "key_version", "updated_at"],
            )
        return rows[0].updated_at  # auto_now: bulk_create's pre_save set the time it wrote
    params = [
        timestamp, timestamp, registration.pk, Status.ACTIVE, generation,
        [record_key for record_key, _ in sealed], [ciphertext for _, ciphertext in sealed],
    ]
    if rows_execute(_upsert_sql(), params) != len(sealed):
        raise _VersionChanged()
    return timestamp


def _column(model: type[models.Model], name: str) -> str:
    """The database column of a concrete field (a foreign key's ``…_id``)."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field) and field.column is not None
    return field.column


@functools.cache
def _upsert_sql(guard: str = "") -> str:
    """The upsert of :func:`_upsert`. Parameters, in order: created_at, updated_at, the
    registration id, ``'active'``, the generation, the record keys (``text[]``), the
    envelopes (``bytea[]``, binary).

    With ``guard`` (an SQL condition on ``reg``, the version row): one record, its key
    (``text``) and envelope (``bytea``, binary) as plain values right after updated_at
    instead of the two arrays (psycopg dumps an array in Python), the guard's parameters
    last; it writes only where ``guard`` holds and returns a row if it wrote
    (``RETURNING 1``)."""
    meta = Record._meta
    column = {name: _column(Record, name) for name in (
        "environment", "registration", "key_version", "created_at", "updated_at", "record_key", "ciphertext"
    )}
    reg = {name: _column(KeyRegistration, name) for name in ("id", "environment", "version", "status", "generation")}
    q = connection.ops.quote_name
    return (
        f"INSERT INTO {q(meta.db_table)} ({', '.join(q(c) for c in column.values())}) "
        f"SELECT reg.{q(reg['environment'])}, reg.{q(reg['id'])}, reg.{q(reg['version'])}, "
        + ("%s, %s, %s::text, %b::bytea " if guard else "%s, %s, t.record_key, t.ciphertext ")
        + f"FROM (SELECT {q(reg['id'])}, {q(reg['environment'])}, {q(reg['version'])} "
        f"FROM {q(KeyRegistration._meta.db_table)} WHERE {q(reg['id'])} = %s AND {q(reg['status'])} = %s "
        f"AND {q(reg['generation'])} = %s FOR SHARE) AS reg "
        + (f"WHERE {guard} " if guard else "CROSS JOIN unnest(%s::text[], %b::bytea[]) AS t(record_key, ciphertext) ")
        + f"ON CONFLICT ({q(column['environment'])}, {q(column['record_key'])}) DO UPDATE SET "
        + ", ".join(
            f"{q(column[f])} = EXCLUDED.{q(column[f])}" for f in ("ciphertext", "registration", "key_version", "updated_at")
        )
        + (" RETURNING 1" if guard else "")
    )


# ---------------------------------------------------------------------------
# The one-statement PUT
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ActiveSeen:
    """The key version a write of this process last stored records under, in one
    environment: ids only (no secrets, nothing sealed)."""

    environment_id: int
    registration_id: int
    version: int
    generation: int


# Environment public id -> the version last written under, at most ACTIVE_SEEN_MAX
# environments (the oldest entry goes first). A hint only: the write's guard decides.
ACTIVE_SEEN_MAX = 4096
_active_seen: dict[uuid.UUID, _ActiveSeen] = {}
_active_seen_lock = threading.Lock()


def _remember_active(environment: Environment, registration: KeyRegistration) -> None:
    seen = _ActiveSeen(environment.pk, registration.pk, registration.version, registration.generation)
    with _active_seen_lock:
        _active_seen.pop(environment.public_id, None)
        _active_seen[environment.public_id] = seen
        if len(_active_seen) > ACTIVE_SEEN_MAX:
            del _active_seen[next(iter(_active_seen))]


def _forget_active(environment_public_id: uuid.UUID, seen: _ActiveSeen) -> None:
    with _active_seen_lock:
        if _active_seen.get(environment_public_id) is seen:
            del _active_seen[environment_public_id]


def active_seen_clear() -> None:
    """Forget every version remembered for the one-statement PUT (tests)."""
    with _active_seen_lock:
        _active_seen.clear()


@dataclass(frozen=True, slots=True)
class GuardedPut:
    """What :func:`record_put_guarded` did: ``api_key`` is the authenticated API key row
    (with its environment); ``written`` says whether the record was stored, then under
    ``key_version`` at ``updated_at``."""

    api_key: ApiKey
    written: bool
    key_version: int | None = None
    updated_at: datetime | None = None


@sensitive_variables("presented", "plaintext", "body")
def record_put_guarded(
    *, presented: str, environment_public_id: uuid.UUID | None, record_key: str, body: Any
) -> GuardedPut | None:
    """A PUT in one statement (PostgreSQL, steady state; issue 12): encrypt ``body`` under
    the key version this process last wrote under in the environment
    ``environment_public_id``, if its data key is still cached at that generation
    (``DataKeyCache.lease_cached``: no KMS call, no look-up), then send one statement
    that authenticates ``presented`` and stores the record only if the API key is valid,
    not revoked and of that environment, and that version is still active at that
    generation (``FOR SHARE``, as :func:`_upsert`; ``api_keys.api_key_authenticate_changing``).

    Returns None when no statement was sent (not PostgreSQL, no version seen or its data
    key not cached, a record key or body :func:`record_put` refuses): the caller takes the
    usual path (authenticate, then :func:`record_put`), which answers those refusals in
    their usual order. Else a :class:`GuardedPut`; ``written`` False means the version
    changed or the key is another environment's: the caller takes the usual path, which
    looks the active version up afresh. The body is encrypted before the key is checked
    (one AES-GCM pass over at most ``API_MAX_BODY_BYTES``; nothing is stored).

    Raises :class:`api_keys.InvalidApiKey`, :class:`api_keys.RevokedApiKey` (nothing written).
    """
    if connection.vendor != "postgresql" or environment_public_id is None:
        return None
    seen = _active_seen.get(environment_public_id)
    if seen is None:
        return None
    try:
        validate_record_key(record_key)
        plaintext = encode_body(body)
    except RecordError:
        return None
    lease = get_cache().lease_cached(seen.registration_id, seen.generation)
    if lease is None:
        return None
    try:
        ciphertext = lease.cipher.encrypt(
            plaintext=plaintext, environment_id=str(environment_public_id), record_key=record_key,
            key_version=seen.version,
        )
    finally:
        lease.release()
    timestamp = timezone.now()
    api_key, written = api_keys.api_key_authenticate_changing(
        presented=presented,
        change=_guarded_upsert_sql(),
        params=[
            timestamp, timestamp, record_key, ciphertext, seen.registration_id, Status.ACTIVE, seen.generation,
            seen.environment_id, api_keys.GUARD_PARAMS,
        ],
    )
    if not written:
        if api_key.environment_id == seen.environment_id:
            _forget_active(environment_public_id, seen)  # that version is no longer active
        return GuardedPut(api_key, False)
    return GuardedPut(api_key, True, seen.version, timestamp)


@functools.cache
def _guarded_upsert_sql() -> str:
    reg = connection.ops.quote_name(_column(KeyRegistration, "environment"))
    return _upsert_sql(f"reg.{reg} = %s AND " + api_keys.api_key_guard_sql(f"reg.{reg}"))


def record_delete(*, environment: Environment, record_key: str) -> None:
    """Delete a record. Needs no data key, so it works while a key version is inaccessible.
    Raises :class:`InvalidRecordInput`, :class:`RecordNotFound`."""
    validate_record_key(record_key)
    # _raw_delete: one DELETE statement. QuerySet.delete() would wrap it in a transaction
    # (BEGIN, DELETE, COMMIT) to collect cascades and signals; records have neither.
    rows = Record.objects.filter(environment=environment, record_key=record_key)
    deleted = rows._raw_delete(rows.db)
    if not deleted:
        raise RecordNotFound(f"No record {record_key!r} in this environment.")


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stored:
    """What decrypting a record needs from its row."""

    record_key: str
    ciphertext: bytes
    registration_id: int
    key_version: int
    updated_at: datetime


@sensitive_variables("plaintext")
def _decrypt(
    stored: _Stored,
    registration: KeyRegistration,
    environment: Environment,
    cipher: crypto.RecordCipher,
    environment_id: str | None = None,
) -> DecryptedRecord:
    """Decrypt one stored row; ``environment_id`` is ``str(environment.public_id)`` when
    the caller has it already (``find`` decrypts a thousand rows of one environment)."""
    if (
        registration.pk != stored.registration_id
        or registration.environment_id != environment.pk
        or registration.version != stored.key_version
    ):
        raise IntegrityFailure(stored.record_key)
    try:
        plaintext = cipher.decrypt(
            envelope=stored.ciphertext,
            environment_id=environment_id or _environment_id(environment),
            record_key=stored.record_key,
            key_version=stored.key_version,
        )
        body_json = plaintext.decode("utf-8")
    except (crypto.RecordIntegrityError, UnicodeDecodeError) as e:
        # Never the record key in a log line (it may itself be customer data).
        log.warning("a record of environment %s failed its integrity check", environment.public_id)
        raise IntegrityFailure(stored.record_key) from e
    return DecryptedRecord(stored.record_key, body_json, stored.key_version, stored.updated_at)


def _stored(record: Record) -> _Stored:
    return _Stored(record.record_key, bytes(record.ciphertext), record.registration_id, record.key_version, record.updated_at)


def record_get(*, environment: Environment, record_key: str) -> DecryptedRecord:
    """Read and decrypt one record: one query for the record and its key version.

    Raises :class:`InvalidRecordInput`, :class:`RecordNotFound`, :class:`KeyUnavailable`
    (its key version is unusable or KMS refuses), :class:`IntegrityFailure`.
    """
    validate_record_key(record_key)
    record = Record.objects.select_related("registration").filter(environment=environment, record_key=record_key).first()
    return record_read(environment=environment, record_key=record_key, record=record)


def record_read(*, environment: Environment, record_key: str, record: Record | None) -> DecryptedRecord:
    """Decrypt a record row the caller already read with its registration (the API reads
    it with the API key: ``apikeys.api_key_authenticate(record_key=…)``); None means
    there is none. Raises like :func:`record_get`."""
    validate_record_key(record_key)
    if record is None or record.environment_id != environment.pk or record.record_key != record_key:
        raise RecordNotFound(f"No record {record_key!r} in this environment.")
    with record_cipher_for(record.registration) as cipher:
        return _decrypt(_stored(record), record.registration, environment, cipher)


def record_stored(*, environment: Environment, record_key: str) -> Record:
    """The stored row of a record, ciphertext and key version as they are (nothing is
    decrypted), with its registration. Raises :class:`RecordNotFound`."""
    record = (
        Record.objects.select_related("registration")
        .filter(environment=environment, record_key=validate_record_key(record_key))
        .first()
    )
    if record is None:
        raise RecordNotFound(f"No record {record_key!r} in this environment.")
    return record


def records_find(
    *, environment: Environment, record_keys: Sequence[str]
) -> tuple[list[DecryptedRecord], list[RecordFailure]]:
    """Read and decrypt many records: ``(found, errors)``.

    ``record_keys``: at most ``settings.API_MAX_BATCH_RECORDS`` (duplicates are read
    once). ``found`` follows the order asked. Every key asked for and not returned is in
    ``errors`` with a code: ``not_found``, ``integrity_error`` or ``key_unavailable``
    (a version KMS refuses fails only its own records); nothing is dropped silently.

    Raises :class:`InvalidRecordInput` for a bad list or key.
    """
    _check_count(record_keys, "record key")
    wanted = list(dict.fromkeys(validate_record_key(k) for k in record_keys))
    # One query: the records with their key versions, fresh (status and generation for
    # the cache); only this environment's versions: a record pointing elsewhere fails its
    # integrity check.
    rows, registrations = _find_rows(environment, wanted)
    by_version: dict[int, list[_Stored]] = {}
    for row in rows:
        by_version.setdefault(row.registration_id, []).append(row)
    results: dict[str, DecryptedRecord | RecordFailure] = {}
    for registration_id, version_rows in by_version.items():
        results.update(_decrypt_many(version_rows, registrations.get(registration_id), environment))
    found: list[DecryptedRecord] = []
    errors: list[RecordFailure] = []
    for record_key in wanted:
        result = results.get(record_key)
        if result is None:
            errors.append(RecordFailure(record_key, "not_found", "No such record in this environment."))
        elif isinstance(result, RecordFailure):
            errors.append(result)
        else:
            found.append(result)
    return found, errors


def _find_rows(environment: Environment, wanted: list[str]) -> tuple[list[_Stored], dict[int, KeyRegistration]]:
    """The stored rows of the records ``wanted`` of ``environment`` and the key versions
    they name (only this environment's), in one statement.

    PostgreSQL: hand-written SQL (:func:`_find_sql`) that brings each key version's row
    once, beside the first of its records, and only the five columns of each record: the
    ORM's ``select_related`` built two model instances per record and parsed the version's
    timestamps again on every row (three quarters of a find's CPU). Elsewhere, the ORM."""
    rows: list[_Stored] = []
    registrations: dict[int, KeyRegistration] = {}
    if connection.vendor != "postgresql":
        for record in Record.objects.filter(environment=environment, record_key__in=wanted).select_related("registration"):
            rows.append(_stored(record))
            if record.registration.environment_id == environment.pk:
                registrations[record.registration_id] = record.registration
        return rows, registrations
    query = _find_sql()
    conn = connections[DEFAULT_DB_ALIAS]
    for found in rows_fetch(query.sql, [environment.pk, wanted], many=True):
        rows.append(_Stored(found[0], found[1], found[2], found[3], found[4]))
        registration = query.registration.build(found, 5, conn)
        if registration is not None and registration.environment_id == environment.pk:
            _REGISTRATION_ENVIRONMENT.set_cached_value(registration, environment)
            registrations[registration.pk] = registration
    return rows, registrations


class _FindQuery:
    def __init__(self) -> None:
        q = connection.ops.quote_name
        record = {name: _column(Record, name) for name in (
            "record_key", "ciphertext", "registration", "key_version", "updated_at", "environment", "id"
        )}
        self.registration = Columns(KeyRegistration, "reg")
        names = ("record_key", "ciphertext", "registration", "key_version", "updated_at")
        picked = ", ".join(f"rec.{q(record[name])}" for name in names)
        # nth = 1 on the first record of each key version: only that row joins the version.
        self.sql = (
            f"SELECT {', '.join(f'r.{q(record[name])}' for name in names)}, {self.registration.sql} FROM ("
            f"SELECT {picked}, row_number() OVER (PARTITION BY rec.{q(record['registration'])} "
            f"ORDER BY rec.{q(record['id'])}) AS nth "
            f"FROM {q(Record._meta.db_table)} rec WHERE rec.{q(record['environment'])} = %s "
            f"AND rec.{q(record['record_key'])} = ANY(%s::text[])) r "
            f"LEFT OUTER JOIN {q(KeyRegistration._meta.db_table)} reg ON {self.registration.column('id')} = "
            f"r.{q(record['registration'])} AND r.nth = 1"
        )


@functools.cache
def _find_sql() -> _FindQuery:
    return _FindQuery()


_REGISTRATION_ENVIRONMENT = KeyRegistration._meta.get_field("environment")


def _decrypt_many(
    rows: list[_Stored], registration: KeyRegistration | None, environment: Environment
) -> list[tuple[str, DecryptedRecord | RecordFailure]]:
    """Decrypt records of one key version with one data-key lookup."""
    if registration is None:
        return [(r.record_key, _integrity_failure(r.record_key)) for r in rows]
    out: list[tuple[str, DecryptedRecord | RecordFailure]] = []
    try:
        environment_id = _environment_id(environment)
        with record_cipher_for(registration) as cipher:
            for row in rows:
                try:
                    out.append((row.record_key, _decrypt(row, registration, environment, cipher, environment_id)))
                except IntegrityFailure:
                    out.append((row.record_key, _integrity_failure(row.record_key)))
    except KeyUnavailable as e:
        return [
            (r.record_key, RecordFailure(r.record_key, "key_unavailable", str(e), reason=e.reason, retry_after=e.retry_after))
            for r in rows
        ]
    return out


def _integrity_failure(record_key: str) -> RecordFailure:
    return RecordFailure(record_key, "integrity_error", str(IntegrityFailure(record_key)))
