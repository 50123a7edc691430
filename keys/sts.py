"""The AWS STS adapter: with :mod:`keys.kms`, the only module that makes AWS calls.

Role mode (issue 14): the customer creates a role in their account whose trust
policy names the platform's own principal and requires the environment's
external ID; the platform calls ``AssumeRole`` with its own credentials (the
standard AWS credential chain: environment, instance or task role - never the
database) and uses the temporary credentials for KMS.

One function per STS operation (:func:`assume_role`,
:func:`get_caller_identity`), each returning a small frozen dataclass. Every
botocore error becomes an :class:`StsError` (``raise ... from e``). The errors
subclass :class:`keys.kms.KmsPermanentError` / :class:`keys.kms.KmsTransientError`,
so code that handles a KMS refusal (503 ``key_unavailable``, validation
outcome, retries) handles an STS refusal the same way:

* :class:`StsPermanentError` - the customer must act: the role does not exist,
  its trust policy does not trust the platform principal or requires another
  external ID (AWS answers all of these with the same ``AccessDenied``), the
  requested duration is above the role's maximum, STS is disabled in the region.
* :class:`StsTransientError` - throttling, STS internal errors, timeouts,
  network, clock skew, and the *platform's* own credentials being expired or
  invalid (``ExpiredTokenException``, ``InvalidClientTokenId``, a bad signature):
  that is not a revocation by the customer, it is the platform operators'
  problem, reported as reason :data:`Reason.PLATFORM_CREDENTIALS`.

Error codes: https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html#API_AssumeRole_Errors
and https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html

:class:`RoleSessions` keeps the temporary credentials per (role ARN, external
ID) in process memory only, refreshed before they expire by botocore's own
refreshable-credentials machinery (``DeferredRefreshableCredentials``: one
refresh at a time, under its lock), never stored anywhere else.

Client options, building and caching clients, the timed call and the
service-independent part of the error mapping are shared with :mod:`keys.kms` in
:mod:`keys.aws_clients`.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.credentials
import botocore.exceptions
from django.views.decorators.debug import sensitive_variables

from keys import aws_clients
from keys.aws_clients import MAX_ATTEMPTS
from keys.kms import KmsCredentials, KmsError, KmsPermanentError, KmsTransientError

__all__ = [
    "DEFAULT_DURATION_SECONDS",
    "MAX_ATTEMPTS",
    "CallerIdentity",
    "Reason",
    "RoleSessions",
    "StsClientOptions",
    "StsError",
    "StsPermanentError",
    "StsTransientError",
    "TemporaryCredentials",
    "assume_role",
    "classify",
    "clear_clients",
    "client",
    "get_caller_identity",
    "role_sessions",
    "session_name",
]

# An hour: the default MaxSessionDuration of a role and the lowest value it can
# be set to (3600..43200 s), so it is within every role's maximum; role chaining
# caps sessions at one hour too.
# https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_use.html#id_roles_use_view-role-max-session
DEFAULT_DURATION_SECONDS = 3600
MIN_DURATION_SECONDS = 900
# Client defaults (timeouts, MAX_ATTEMPTS) are keys.aws_clients'.
CLIENT_CACHE_SIZE = 64
SESSIONS_CACHE_SIZE = 4096
# RoleSessionName: [\w+=,.@-]*, 2 to 64 characters.
_SESSION_NAME_BAD = re.compile(r"[^\w+=,.@-]")


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


# Timeouts (seconds) and attempts of an STS client; part of the cache key.
StsClientOptions = aws_clients.ClientOptions
DEFAULT_OPTIONS = aws_clients.DEFAULT_OPTIONS


@dataclass(frozen=True)
class TemporaryCredentials:
    """What AssumeRole returned: temporary credentials of the customer's role.

    The secret and the session token never appear in ``repr()``;
    ``expiration`` is timezone-aware UTC; ``assumed_role_arn`` is
    ``arn:aws:sts::<account>:assumed-role/<role name>/<session name>``.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime
    assumed_role_arn: str = ""

    def kms_credentials(self) -> KmsCredentials:
        """These credentials in the shape :mod:`keys.kms` signs with."""
        return KmsCredentials(
            self.access_key_id, self.secret_access_key, version="sts", session_token=self.session_token
        )


@dataclass(frozen=True)
class CallerIdentity:
    """GetCallerIdentity: who the platform's own credentials belong to."""

    account: str
    arn: str
    user_id: str


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class Reason:
    """The ``reason`` values of :class:`StsError` (plain strings, stable)."""

    # permanent: the customer must act
    ACCESS_DENIED = "role_access_denied"
    DURATION_TOO_LONG = "duration_too_long"
    REGION_DISABLED = "sts_region_disabled"
    VALIDATION = "sts_validation"
    UNEXPECTED = "sts_unexpected"
    # transient: retry, or the platform operators must act
    PLATFORM_CREDENTIALS = "platform_credentials"
    THROTTLED = "sts_throttled"
    INTERNAL = "sts_internal"
    TIMEOUT = "sts_timeout"
    NETWORK = "sts_network"
    CLOCK_SKEW = "sts_clock_skew"


class StsError(KmsError):
    """An STS call failed; the attributes are those of :class:`keys.kms.KmsError`
    (``reason`` is a :class:`Reason` value, ``operation`` "AssumeRole", ...).
    ``platform_fault`` is True when the platform's own credentials are at fault."""

    @property
    def platform_fault(self) -> bool:
        return self.reason == Reason.PLATFORM_CREDENTIALS


class StsPermanentError(StsError, KmsPermanentError):
    """The role cannot be assumed until the customer changes something."""


class StsTransientError(StsError, KmsTransientError):
    """Throttling, outage, network, clock skew or the platform's own credentials: not a revocation."""


_CODES: dict[str, str] = {
    # AssumeRole's answer for: no such role, a trust policy that does not name
    # the platform principal, and a missing or different sts:ExternalId condition.
    # AWS does not say which (on purpose: it would tell an attacker which roles exist).
    "AccessDenied": Reason.ACCESS_DENIED,
    "AccessDeniedException": Reason.ACCESS_DENIED,
    "RegionDisabledException": Reason.REGION_DISABLED,
    "ValidationError": Reason.VALIDATION,
    "MalformedPolicyDocument": Reason.UNEXPECTED,
    "PackedPolicyTooLarge": Reason.UNEXPECTED,
    # The platform's own credentials (its principal) are at fault.
    "ExpiredTokenException": Reason.PLATFORM_CREDENTIALS,
    "ExpiredToken": Reason.PLATFORM_CREDENTIALS,
    "InvalidClientTokenId": Reason.PLATFORM_CREDENTIALS,
    "UnrecognizedClientException": Reason.PLATFORM_CREDENTIALS,
    "SignatureDoesNotMatch": Reason.PLATFORM_CREDENTIALS,
    "IncompleteSignature": Reason.PLATFORM_CREDENTIALS,
    "MissingAuthenticationToken": Reason.PLATFORM_CREDENTIALS,
    "OptInRequired": Reason.PLATFORM_CREDENTIALS,
    "NotAuthorized": Reason.PLATFORM_CREDENTIALS,
    # Transient.
    "Throttling": Reason.THROTTLED,
    "ThrottlingException": Reason.THROTTLED,
    "RequestLimitExceeded": Reason.THROTTLED,
    "InternalFailure": Reason.INTERNAL,
    "InternalError": Reason.INTERNAL,
    "ServiceUnavailable": Reason.INTERNAL,
    "RequestExpired": Reason.CLOCK_SKEW,
}

_PERMANENT_REASONS = frozenset(
    {Reason.ACCESS_DENIED, Reason.DURATION_TOO_LONG, Reason.REGION_DISABLED, Reason.VALIDATION, Reason.UNEXPECTED}
)
# "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
_DURATION_RE = re.compile(r"DurationSeconds|MaxSessionDuration", re.I)

_REASON_TEXT = {
    Reason.ACCESS_DENIED: "access denied (the role does not exist, does not trust the platform, "
    "or requires another external ID)",
    Reason.DURATION_TOO_LONG: "the requested session duration is above the role's maximum",
    Reason.REGION_DISABLED: "STS is not activated in this region",
    Reason.VALIDATION: "the request was rejected as invalid",
    Reason.UNEXPECTED: "unexpected error",
    Reason.PLATFORM_CREDENTIALS: "the platform's own AWS credentials are expired, invalid or missing",
    Reason.THROTTLED: "throttled by STS",
    Reason.INTERNAL: "STS internal error or outage",
    Reason.TIMEOUT: "timed out",
    Reason.NETWORK: "network error",
    Reason.CLOCK_SKEW: "clock skew: the request expired, check this server's clock",
}

# What an answer without a known code, or a botocore error without an answer, means here.
_FALLBACK_REASONS = aws_clients.FallbackReasons(
    access_denied=Reason.ACCESS_DENIED,
    throttled=Reason.THROTTLED,
    internal=Reason.INTERNAL,
    unexpected=Reason.UNEXPECTED,
    timeout=Reason.TIMEOUT,
    network=Reason.NETWORK,
    no_credentials=Reason.PLATFORM_CREDENTIALS,
    validation=Reason.VALIDATION,
)


def classify(error: Exception, *, operation: str) -> StsError:
    """Map a botocore exception to an :class:`StsPermanentError` or
    :class:`StsTransientError` by AWS error code, then message, then HTTP
    status. Returns the error (does not raise it)."""
    if isinstance(error, botocore.exceptions.ClientError):
        code, aws_message, status = aws_clients.client_error_fields(error)
        reason = _reason_for(code, aws_message, status)
        return _make_error(reason, operation=operation, detail=aws_message, code=code or None, http_status=status)
    reason = aws_clients.reason_for_botocore_error(error, _FALLBACK_REASONS)
    return _make_error(reason, operation=operation, detail=str(error))


def _reason_for(code: str, aws_message: str, status: int | None) -> str:
    if code == "SignatureDoesNotMatch" and aws_clients.CLOCK_SKEW_RE.search(aws_message):
        return Reason.CLOCK_SKEW
    if code == "ValidationError" and _DURATION_RE.search(aws_message):
        return Reason.DURATION_TOO_LONG
    if code in _CODES:
        return _CODES[code]
    return aws_clients.reason_for_status(status, _FALLBACK_REASONS)


def _make_error(
    reason: str, *, operation: str, detail: str, code: str | None = None, http_status: int | None = None
) -> StsError:
    cls = StsPermanentError if reason in _PERMANENT_REASONS else StsTransientError
    message = aws_clients.error_message(
        "STS", operation, _REASON_TEXT[reason], detail=detail, code=code, http_status=http_status
    )
    return cls(reason, operation=operation, message=message, code=code, http_status=http_status)


# ---------------------------------------------------------------------------
# Clients (the platform's own credentials, from the standard chain)
# ---------------------------------------------------------------------------

_clients = aws_clients.ClientCache()


def client(*, region: str, endpoint_url: str | None = None, options: StsClientOptions = DEFAULT_OPTIONS) -> Any:
    """A boto3 STS client signed with the platform's own credentials, found by
    the standard AWS credential chain (environment variables, shared config,
    container or instance role); cached per (region, endpoint, options).

    botocore uses the regional endpoint by default (since 1.36), as AWS
    recommends: https://docs.aws.amazon.com/sdkref/latest/guide/feature-sts-regionalized-endpoints.html
    """
    return _clients.get(
        (region, endpoint_url, options),
        lambda: aws_clients.build_client("sts", region=region, endpoint_url=endpoint_url, options=options),
        max_size=CLIENT_CACHE_SIZE,
    )


def clear_clients() -> None:
    """Forget every cached client (tests)."""
    _clients.clear()


def _call(
    operation: str, *, region: str, endpoint_url: str | None, options: StsClientOptions, **params: Any
) -> dict[str, Any]:
    sts_client = client(region=region, endpoint_url=endpoint_url, options=options)
    return aws_clients.call(sts_client, operation, params, to_error=lambda e: classify(e, operation=operation))


# ---------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------


def session_name(label: str) -> str:
    """A RoleSessionName (2-64 of ``[\\w+=,.@-]``) naming what assumes the role,
    e.g. ``portal-env-<public id>``; it shows in the customer's CloudTrail."""
    cleaned = _SESSION_NAME_BAD.sub("-", label)[:64]
    return cleaned if len(cleaned) >= 2 else f"portal-{cleaned}"


@sensitive_variables("response", "credentials")
def assume_role(
    *,
    role_arn: str,
    external_id: str,
    session_name: str,
    region: str,
    duration_seconds: int = DEFAULT_DURATION_SECONDS,
    endpoint_url: str | None = None,
    options: StsClientOptions = DEFAULT_OPTIONS,
) -> TemporaryCredentials:
    """Call AssumeRole with ``RoleArn``, ``ExternalId``, ``RoleSessionName`` and
    ``DurationSeconds`` (900 up to the role's MaxSessionDuration).

    https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html
    Raises :class:`StsPermanentError` or :class:`StsTransientError`.
    """
    response = _call(
        "AssumeRole",
        region=region,
        endpoint_url=endpoint_url,
        options=options,
        RoleArn=role_arn,
        ExternalId=external_id,
        RoleSessionName=session_name,
        DurationSeconds=duration_seconds,
    )
    credentials = response["Credentials"]
    return TemporaryCredentials(
        access_key_id=credentials["AccessKeyId"],
        secret_access_key=credentials["SecretAccessKey"],
        session_token=credentials["SessionToken"],
        expiration=credentials["Expiration"].astimezone(UTC),
        assumed_role_arn=response.get("AssumedRoleUser", {}).get("Arn", ""),
    )


def platform_credentials_found() -> bool:
    """Does the standard AWS credential chain find credentials for the platform?
    (Environment variables, shared files, container or instance metadata; no STS call.)"""
    try:
        return boto3.session.Session().get_credentials() is not None
    except botocore.exceptions.BotoCoreError:  # a container or instance endpoint that answered with an error
        return False


def get_caller_identity(
    *, region: str, endpoint_url: str | None = None, options: StsClientOptions = DEFAULT_OPTIONS
) -> CallerIdentity:
    """Who are the platform's own credentials? (GetCallerIdentity needs no permission.)

    https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html
    """
    response = _call("GetCallerIdentity", region=region, endpoint_url=endpoint_url, options=options)
    return CallerIdentity(account=response["Account"], arn=response["Arn"], user_id=response["UserId"])


# ---------------------------------------------------------------------------
# Temporary credentials in process memory, per (role ARN, external ID)
# ---------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RoleSessions:
    """The temporary credentials of every role this process uses, in memory only.

    One botocore ``DeferredRefreshableCredentials`` per (role ARN, external ID):
    the first use calls AssumeRole; later uses return the same credentials until
    they are within botocore's advisory refresh window (15 minutes before
    expiry: one caller refreshes, the others keep the current credentials) or
    its mandatory window (10 minutes: callers wait for the one refresh under
    the object's lock). A failed mandatory refresh raises the :class:`StsError`
    to every waiting caller; the next call tries again. AssumeRole runs with the
    :class:`StsClientOptions` of the call that created the entry, for its first
    fetch and every refresh (the data plane, its one user, passes its own short
    budget: ``keys.services.records.data_plane_aws_options``).

    ``time_fetcher`` (aware UTC datetimes) and ``assume`` are for tests.
    """

    def __init__(
        self,
        *,
        time_fetcher: Callable[[], datetime] = _utc_now,
        assume: Callable[..., TemporaryCredentials] = assume_role,
        max_entries: int = SESSIONS_CACHE_SIZE,
    ) -> None:
        self._time_fetcher = time_fetcher
        self._assume = assume
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], botocore.credentials.RefreshableCredentials] = OrderedDict()
        self._lock = threading.Lock()

    @sensitive_variables("frozen")
    def credentials(
        self,
        *,
        role_arn: str,
        external_id: str,
        session_name: str,
        region: str,
        duration_seconds: int = DEFAULT_DURATION_SECONDS,
        endpoint_url: str | None = None,
        options: StsClientOptions = DEFAULT_OPTIONS,
    ) -> KmsCredentials:
        """Current temporary credentials for the role, as :class:`keys.kms.KmsCredentials`.

        ``options``: timeouts (seconds) and attempts of the AssumeRole calls, kept by a new
        entry for its refreshes (see the class docstring). Raises :class:`StsError` when
        AssumeRole fails and there are no still-usable credentials.
        """
        entry = self._entry(role_arn, external_id, session_name, region, duration_seconds, endpoint_url, options)
        frozen = entry.get_frozen_credentials()
        return KmsCredentials(frozen.access_key, frozen.secret_key, version="sts", session_token=frozen.token)

    def expiration(self, *, role_arn: str, external_id: str) -> datetime | None:
        """When the held credentials expire (None when none are held)."""
        with self._lock:
            entry = self._entries.get((role_arn, external_id))
        return None if entry is None else entry._expiry_time

    def forget(self, *, role_arn: str, external_id: str) -> None:
        """Drop the credentials of one role (its registration was replaced or retired)."""
        with self._lock:
            self._entries.pop((role_arn, external_id), None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _entry(
        self,
        role_arn: str,
        external_id: str,
        session_name: str,
        region: str,
        duration_seconds: int,
        endpoint_url: str | None,
        options: StsClientOptions,
    ) -> botocore.credentials.RefreshableCredentials:
        key = (role_arn, external_id)
        with self._lock:
            self._drop_expired_locked()
            entry = self._entries.get(key)
            if entry is None:
                fetch = self._fetcher(
                    role_arn, external_id, session_name, region, duration_seconds, endpoint_url, options
                )
                entry = botocore.credentials.DeferredRefreshableCredentials(
                    refresh_using=fetch, method="assume-role", time_fetcher=self._time_fetcher
                )
                self._entries[key] = entry
                while len(self._entries) > self._max_entries:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
            return entry

    def _drop_expired_locked(self) -> None:
        """Forget the credentials that have expired: a role no longer used here (its key
        version was pointed at another role, or retired, in another process) is not kept
        past its session. O(entries), on a data-key cache miss only."""
        now = self._time_fetcher()
        expired = [k for k, e in self._entries.items() if e._expiry_time is not None and e._expiry_time <= now]
        for k in expired:
            del self._entries[k]

    def _fetcher(
        self,
        role_arn: str,
        external_id: str,
        session_name: str,
        region: str,
        duration_seconds: int,
        endpoint_url: str | None,
        options: StsClientOptions,
    ) -> Callable[[], dict[str, str]]:
        @sensitive_variables("temporary")
        def fetch() -> dict[str, str]:
            temporary = self._assume(
                role_arn=role_arn,
                external_id=external_id,
                session_name=session_name,
                region=region,
                duration_seconds=duration_seconds,
                endpoint_url=endpoint_url,
                options=options,
            )
            # The shape botocore's RefreshableCredentials reads (create_credential_resolver's fetchers).
            return {
                "access_key": temporary.access_key_id,
                "secret_key": temporary.secret_access_key,
                "token": temporary.session_token,
                "expiry_time": temporary.expiration.isoformat(),
            }

        return fetch


# The process's one registry: the data plane's (validation assumes the role afresh, through
# keys.diagnosis; lifecycle and registration services drop entries with forget()).
role_sessions = RoleSessions()
