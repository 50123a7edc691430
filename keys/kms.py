"""The AWS KMS adapter: with :mod:`keys.sts`, the only module that makes AWS calls.

One function per KMS operation (:func:`describe_key`, :func:`decrypt`,
:func:`generate_data_key_allowed`), each returning a small frozen dataclass,
never a raw boto3 dict, in the manner of healthchecks' ``hc/lib/s3.py``.

Every botocore error is turned into a :class:`KmsError` (``raise ... from e``)
of one of two kinds, because callers act on the kind, not on the AWS code:

* :class:`KmsPermanentError` - revoked or misconfigured: access denied, bad
  credentials, key disabled / pending deletion / not found, wrong key, invalid
  ciphertext. Retrying does not help; an admin has to act.
* :class:`KmsTransientError` - throttling, timeouts, KMS internal errors,
  network failures, clock skew. Retried with backoff; never a revocation.

The mapping (:func:`classify`) looks at the AWS error code *and* the HTTP
status, because not every KMS endpoint speaks the documented codes: moto
answers authentication failures with HTTP 403 and the code ``'403'`` (the real
code sits in an XML body botocore cannot parse as JSON), and answers a wrong
``KeyId`` on Decrypt with ``AccessDeniedException`` where AWS documents
``IncorrectKeyException``.

Sources for the error codes:

* Decrypt: https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html#API_Decrypt_Errors
* DescribeKey: https://docs.aws.amazon.com/kms/latest/APIReference/API_DescribeKey.html#API_DescribeKey_Errors
* GenerateDataKey (DryRun): https://docs.aws.amazon.com/kms/latest/APIReference/API_GenerateDataKey.html#API_GenerateDataKey_Errors
* Common errors (throttling, signature, unknown client):
  https://docs.aws.amazon.com/kms/latest/APIReference/CommonErrors.html

Client options, building and caching clients, the timed call and the
service-independent part of the error mapping are shared with :mod:`keys.sts` in
:mod:`keys.aws_clients`. No ORM and no Django settings here: callers pass
``endpoint_url`` and may override the client timeouts with :class:`KmsClientOptions`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import botocore.exceptions
from django.views.decorators.debug import sensitive_variables

from keys import aws_clients
from keys.aws_clients import CONNECT_TIMEOUT_SECONDS, MAX_ATTEMPTS, READ_TIMEOUT_SECONDS

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "DecryptResult",
    "KeyDescription",
    "KmsClientOptions",
    "KmsCredentials",
    "KmsError",
    "KmsPermanentError",
    "KmsTransientError",
    "MAX_ATTEMPTS",
    "READ_TIMEOUT_SECONDS",
    "Reason",
    "classify",
    "clear_clients",
    "client",
    "decrypt",
    "describe_key",
    "generate_data_key_allowed",
]

# Client defaults (CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS, MAX_ATTEMPTS) are
# keys.aws_clients'. Clients held at most; one per (region, credentials, endpoint, options).
CLIENT_CACHE_SIZE = 256


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KmsCredentials:
    """IAM credentials of the customer's IAM user, or the temporary credentials
    of the customer's role (role mode, from :mod:`keys.sts`: ``session_token`` set).

    ``version`` is the credential version of the registration (it changes when
    the credentials are replaced); it is part of the client cache key.
    The secret and the session token never appear in ``repr()``.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    version: str = ""
    session_token: str = field(default="", repr=False)


# Timeouts (seconds) and attempts of a KMS client; part of the cache key.
KmsClientOptions = aws_clients.ClientOptions
DEFAULT_OPTIONS = aws_clients.DEFAULT_OPTIONS


@dataclass(frozen=True)
class KeyDescription:
    """What DescribeKey says about a KMS key (``KeyMetadata``, trimmed).

    ``key_state`` is one of Creating, Enabled, Disabled, PendingDeletion,
    PendingImport, PendingReplicaDeletion, Unavailable, Updating;
    ``deletion_date`` is set (UTC) only for PendingDeletion.
    https://docs.aws.amazon.com/kms/latest/APIReference/API_KeyMetadata.html
    """

    key_id: str
    arn: str
    account_id: str
    key_state: str
    key_usage: str
    key_spec: str
    key_manager: str
    origin: str
    enabled: bool
    deletion_date: datetime | None
    custom_key_store_id: str | None
    multi_region: bool


@dataclass(frozen=True)
class DecryptResult:
    """What Decrypt returned.

    ``key_id`` is the ARN of the KMS key KMS used; ``encryption_algorithm`` is
    None when the endpoint does not report it (moto does not).
    ``plaintext`` is the plaintext data key as a ``bytearray`` so the caller can
    zero it (:meth:`wipe`) once done; it is kept out of ``repr()`` and equality.
    """

    key_id: str
    encryption_algorithm: str | None
    plaintext: bytearray = field(repr=False, compare=False)

    def wipe(self) -> None:
        """Overwrite the plaintext with zeros, in place."""
        self.plaintext[:] = bytes(len(self.plaintext))


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class Reason:
    """The ``reason`` values of :class:`KmsError` (plain strings, stable)."""

    # permanent: revoked or misconfigured
    ACCESS_DENIED = "access_denied"
    INVALID_CREDENTIALS = "invalid_credentials"
    BAD_SIGNATURE = "bad_signature"
    INCOMPLETE_SIGNATURE = "incomplete_signature"
    OPT_IN_REQUIRED = "opt_in_required"
    DISABLED = "disabled"
    PENDING_DELETION = "pending_deletion"
    PENDING_IMPORT = "pending_import"
    UNAVAILABLE_STATE = "unavailable_state"
    NOT_FOUND = "not_found"
    INCORRECT_KEY = "incorrect_key"
    INVALID_CIPHERTEXT = "invalid_ciphertext"
    INVALID_KEY_USAGE = "invalid_key_usage"
    INVALID_ARN = "invalid_arn"
    VALIDATION = "validation"
    UNEXPECTED = "unexpected"
    # transient: retry
    THROTTLED = "throttled"
    INTERNAL = "internal"
    TIMEOUT = "timeout"
    NETWORK = "network"
    CLOCK_SKEW = "clock_skew"
    KEY_UNAVAILABLE = "key_unavailable"
    EXPIRED_TOKEN = "expired_token"


class KmsError(aws_clients.AwsCallError):
    """A KMS call failed. ``str(error)`` is safe to show and log.

    Attributes: ``reason`` (a :class:`Reason` value), ``code`` (the AWS error
    code, or None for network errors), ``http_status`` (int or None),
    ``operation`` ("Decrypt", "DescribeKey", ...), ``message`` (safe text: no
    credentials), ``permanent`` (False for :class:`KmsTransientError`).
    """

    permanent: bool = True

    def __init__(
        self,
        reason: str,
        *,
        operation: str,
        message: str,
        code: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.operation = operation
        self.message = message
        self.code = code
        self.http_status = http_status

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(reason={self.reason!r}, code={self.code!r}, "
            f"http_status={self.http_status!r}, operation={self.operation!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle as cls(*args); ours need keyword arguments
        # (Celery and multiprocessing pickle exceptions).
        return (_rebuild_error, (type(self), self.reason, self.operation, self.message, self.code, self.http_status))


def _rebuild_error(
    cls: type[KmsError], reason: str, operation: str, message: str, code: str | None, http_status: int | None
) -> KmsError:
    return cls(reason, operation=operation, message=message, code=code, http_status=http_status)


class KmsPermanentError(KmsError):
    """Revoked or misconfigured: retrying will not help, an admin must act."""

    permanent = True


class KmsTransientError(KmsError):
    """Throttling, timeout, KMS internal or network error: retry later."""

    permanent = False


# AWS error code -> reason, for codes that mean the same on every operation.
# KMSInvalidStateException, InvalidSignatureException / SignatureDoesNotMatch
# and AccessDeniedException need their message too: see classify().
_PERMANENT_CODES: dict[str, str] = {
    "AccessDeniedException": Reason.ACCESS_DENIED,
    "AccessDenied": Reason.ACCESS_DENIED,  # IAM's spelling (moto's 403 body)
    "UnrecognizedClientException": Reason.INVALID_CREDENTIALS,
    "InvalidClientTokenId": Reason.INVALID_CREDENTIALS,
    "MissingAuthenticationToken": Reason.INVALID_CREDENTIALS,
    "MissingAuthenticationTokenException": Reason.INVALID_CREDENTIALS,
    "InvalidSignatureException": Reason.BAD_SIGNATURE,
    "SignatureDoesNotMatch": Reason.BAD_SIGNATURE,
    # "The request signature does not conform to AWS standards" (HTTP 400): a
    # malformed request from this platform; retrying the same request cannot help.
    "IncompleteSignature": Reason.INCOMPLETE_SIGNATURE,
    # "The AWS access key ID needs a subscription for the service" (HTTP 403): the
    # account has not enabled this opt-in Region (af-south-1, ap-east-1, ...).
    "OptInRequired": Reason.OPT_IN_REQUIRED,
    "DisabledException": Reason.DISABLED,
    "NotFoundException": Reason.NOT_FOUND,
    "IncorrectKeyException": Reason.INCORRECT_KEY,
    "InvalidCiphertextException": Reason.INVALID_CIPHERTEXT,
    "InvalidKeyUsageException": Reason.INVALID_KEY_USAGE,
    "InvalidArnException": Reason.INVALID_ARN,
    "ValidationException": Reason.VALIDATION,
    "InvalidGrantTokenException": Reason.VALIDATION,
    "UnsupportedOperationException": Reason.VALIDATION,
}

_TRANSIENT_CODES: dict[str, str] = {
    "ThrottlingException": Reason.THROTTLED,
    "Throttling": Reason.THROTTLED,
    "ThrottledException": Reason.THROTTLED,
    "TooManyRequestsException": Reason.THROTTLED,
    "RequestLimitExceeded": Reason.THROTTLED,
    # KMS documents LimitExceededException for resource quotas (keys, grants),
    # which Decrypt/DescribeKey do not touch; if it shows up there it is a rate
    # limit by another name, so it is retried rather than treated as revocation.
    "LimitExceededException": Reason.THROTTLED,
    "KMSInternalException": Reason.INTERNAL,
    "DependencyTimeoutException": Reason.INTERNAL,
    "InternalFailure": Reason.INTERNAL,
    "InternalError": Reason.INTERNAL,
    "InternalServerError": Reason.INTERNAL,
    "ServiceUnavailable": Reason.INTERNAL,
    "ServiceUnavailableException": Reason.INTERNAL,
    # "The request reached the service more than 15 minutes after the date stamp
    # on the request" (HTTP 400): this server's clock, or a request stuck in a queue.
    "RequestExpired": Reason.CLOCK_SKEW,
    # The security token of temporary (role-mode) credentials expired: the platform
    # assumes the role again and retries; not a revocation. With an IAM user's
    # long-term access key KMS does not send it.
    "ExpiredTokenException": Reason.EXPIRED_TOKEN,
    "RequestTimeout": Reason.TIMEOUT,
    "RequestTimeoutException": Reason.TIMEOUT,
    # "The request was rejected because the specified KMS key was not
    # available. You can retry the request."
    # https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html#API_Decrypt_Errors
    "KeyUnavailableException": Reason.KEY_UNAVAILABLE,
}

_TRANSIENT_REASONS = frozenset(_TRANSIENT_CODES.values()) | {
    Reason.NETWORK,
    Reason.CLOCK_SKEW,
}

# KMSInvalidStateException messages name the state: "<arn> is pending deletion."
_INVALID_STATE_REASONS = (
    (re.compile(r"pending (replica )?deletion", re.I), Reason.PENDING_DELETION),
    (re.compile(r"pending import", re.I), Reason.PENDING_IMPORT),
)
# moto sends IAM/auth failures as an XML body to a JSON-protocol client; botocore
# then reports the HTTP status as the code and the XML as the message.
_XML_CODE_RE = re.compile(r"<Code>([^<]{1,100})</Code>")
_XML_MESSAGE_RE = re.compile(r"<Message>([^<]*)</Message>")
# An AccessDeniedException from Decrypt that is about the *policy* says who may
# not do what: "User: arn:... is not authorized to perform: kms:Decrypt ...".
# Any other one (moto: empty; AWS: "The ciphertext refers to a customer master
# key that does not exist, does not exist in this region, or you are not allowed
# to access.") means the blob names a key other than the one we can use.
_POLICY_DENIAL_RE = re.compile(r"not authorized to perform|kms:Decrypt", re.I)

_REASON_TEXT = {
    Reason.ACCESS_DENIED: "access denied",
    Reason.INVALID_CREDENTIALS: "the access key ID is not recognised",
    Reason.BAD_SIGNATURE: "the request signature does not match (wrong secret access key)",
    Reason.INCOMPLETE_SIGNATURE: "the request signature is incomplete (a platform error)",
    Reason.OPT_IN_REQUIRED: "the AWS account has not enabled this Region (opt-in required)",
    Reason.DISABLED: "the KMS key is disabled",
    Reason.PENDING_DELETION: "the KMS key is pending deletion",
    Reason.PENDING_IMPORT: "the KMS key is pending import of its key material",
    Reason.UNAVAILABLE_STATE: "the KMS key is not in a usable state",
    Reason.NOT_FOUND: "the KMS key was not found",
    Reason.INCORRECT_KEY: "the ciphertext was encrypted under another KMS key",
    Reason.INVALID_CIPHERTEXT: "the ciphertext or its encryption context is invalid",
    Reason.INVALID_KEY_USAGE: "the KMS key cannot be used for this operation",
    Reason.INVALID_ARN: "the ARN is invalid",
    Reason.VALIDATION: "the request was rejected as invalid",
    Reason.UNEXPECTED: "unexpected error",
    Reason.THROTTLED: "throttled by KMS",
    Reason.INTERNAL: "KMS internal error",
    Reason.TIMEOUT: "timed out",
    Reason.NETWORK: "network error",
    Reason.CLOCK_SKEW: "clock skew: the request signature expired, check this server's clock",
    Reason.KEY_UNAVAILABLE: "the KMS key is temporarily unavailable",
    Reason.EXPIRED_TOKEN: "the temporary credentials' security token expired",
}

# What an answer without a known code, or a botocore error without an answer, means here.
_FALLBACK_REASONS = aws_clients.FallbackReasons(
    access_denied=Reason.ACCESS_DENIED,
    throttled=Reason.THROTTLED,
    internal=Reason.INTERNAL,
    unexpected=Reason.UNEXPECTED,
    timeout=Reason.TIMEOUT,
    network=Reason.NETWORK,
    no_credentials=Reason.INVALID_CREDENTIALS,
    validation=Reason.VALIDATION,
)


def classify(error: Exception, *, operation: str) -> KmsError:
    """Map a botocore exception to a :class:`KmsPermanentError` or
    :class:`KmsTransientError`; the mapping is by AWS error code, then by
    message where the code is ambiguous, then by HTTP status.

    Returns the error (does not raise it). Anything that is not a botocore
    error is classified as a transient ``internal`` error: an error we do not
    understand is not evidence of a revocation.
    """
    if isinstance(error, botocore.exceptions.ClientError):
        return _classify_client_error(error, operation=operation)
    reason = aws_clients.reason_for_botocore_error(error, _FALLBACK_REASONS)
    return _make_error(reason, operation=operation, detail=str(error))


def _classify_client_error(
    error: botocore.exceptions.ClientError, *, operation: str
) -> KmsError:
    code, aws_message, status = aws_clients.client_error_fields(error)
    if code.isdigit() or not code:
        # No usable code (moto's 403s, a proxy's 5xx page): look inside an XML
        # body for the real one, else decide by the HTTP status below.
        inner_code = _XML_CODE_RE.search(aws_message)
        inner_message = _XML_MESSAGE_RE.search(aws_message)
        code = inner_code.group(1) if inner_code else ""
        aws_message = inner_message.group(1) if inner_message else aws_message
    reason = _reason_for(code, aws_message, status, operation=operation)
    return _make_error(
        reason,
        operation=operation,
        detail=aws_message,
        code=code or None,
        http_status=status,
    )


def _reason_for(code: str, aws_message: str, status: int | None, *, operation: str) -> str:
    if code in ("InvalidSignatureException", "SignatureDoesNotMatch") and aws_clients.CLOCK_SKEW_RE.search(
        aws_message
    ):
        return Reason.CLOCK_SKEW
    if code == "KMSInvalidStateException":
        return _invalid_state_reason(aws_message)
    if code == "AccessDeniedException" and operation == "Decrypt":
        if not _POLICY_DENIAL_RE.search(aws_message):
            return Reason.INCORRECT_KEY
    if code in _PERMANENT_CODES:
        return _PERMANENT_CODES[code]
    if code in _TRANSIENT_CODES:
        return _TRANSIENT_CODES[code]
    return aws_clients.reason_for_status(status, _FALLBACK_REASONS)


def _invalid_state_reason(aws_message: str) -> str:
    """KMSInvalidStateException covers every non-usable key state; the message
    names it. https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html
    """
    for pattern, reason in _INVALID_STATE_REASONS:
        if pattern.search(aws_message):
            return reason
    return Reason.UNAVAILABLE_STATE


def _make_error(
    reason: str,
    *,
    operation: str,
    detail: str,
    code: str | None = None,
    http_status: int | None = None,
) -> KmsError:
    cls = KmsTransientError if reason in _TRANSIENT_REASONS else KmsPermanentError
    message = aws_clients.error_message(
        "KMS", operation, _REASON_TEXT[reason], detail=detail, code=code, http_status=http_status
    )
    return cls(reason, operation=operation, message=message, code=code, http_status=http_status)


@sensitive_variables("credentials")
def _redacted(error: KmsError, credentials: KmsCredentials) -> KmsError:
    """Make sure neither credential appears in the message, whatever the
    endpoint echoed back. The access key ID shrinks to its last four characters."""
    message = error.message
    if credentials.session_token:
        message = message.replace(credentials.session_token, "[redacted]")
    if credentials.secret_access_key:
        message = message.replace(credentials.secret_access_key, "[redacted]")
    if credentials.access_key_id:
        message = message.replace(credentials.access_key_id, "…" + credentials.access_key_id[-4:])
    if message != error.message:
        error.message = message
        error.args = (message,)
    return error


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------

_clients = aws_clients.ClientCache()
# Keys the secret's fingerprint in the cache key, so that a changed secret under
# the same access key ID and version gets a new client, and the cache key is
# useless outside this process.
_fingerprint_key = secrets.token_bytes(32)


@sensitive_variables("credentials")
def _cache_key(
    region: str, credentials: KmsCredentials, endpoint_url: str | None, options: KmsClientOptions
) -> tuple[Any, ...]:
    fingerprint = hmac.new(
        _fingerprint_key,
        f"{credentials.secret_access_key}\0{credentials.session_token}".encode(),
        hashlib.sha256,
    ).digest()
    return (region, credentials.access_key_id, credentials.version, fingerprint, endpoint_url, options)


# Host names of AWS's own endpoints (commercial, China, dual-stack).
AWS_ENDPOINT_DOMAINS = ("amazonaws.com", "amazonaws.com.cn", "api.aws")


def is_aws_endpoint(endpoint_url: str | None) -> bool:
    """True when ``endpoint_url`` is unset (boto3 then calls AWS itself) or names an AWS
    host, e.g. ``https://kms.eu-west-1.amazonaws.com``; False for an emulator such as
    ``http://127.0.0.1:4566``, which need not enforce IAM policies (keys.diagnosis), and
    which ``manage.py customer_demo`` may write to without ``--real-aws``."""
    if not endpoint_url:
        return True
    host = (urlsplit(endpoint_url).hostname or "").lower().rstrip(".")
    return any(host == domain or host.endswith("." + domain) for domain in AWS_ENDPOINT_DOMAINS)


@sensitive_variables("credentials")
def client(
    *,
    region: str,
    credentials: KmsCredentials,
    endpoint_url: str | None = None,
    options: KmsClientOptions = DEFAULT_OPTIONS,
) -> Any:
    """A boto3 KMS client for these credentials, cached per (region, access key
    ID, credential version, secret fingerprint, endpoint, options).

    Each client is built from its own ``boto3.session.Session`` (sessions are
    not thread-safe, clients are): :func:`keys.aws_clients.build_client`.
    """
    cache_key = _cache_key(region, credentials, endpoint_url, options)
    return _clients.get(
        cache_key, lambda: _build_client(region, credentials, endpoint_url, options), max_size=CLIENT_CACHE_SIZE
    )


@sensitive_variables("credentials")
def _build_client(
    region: str, credentials: KmsCredentials, endpoint_url: str | None, options: KmsClientOptions
) -> Any:
    return aws_clients.build_client(
        "kms",
        region=region,
        endpoint_url=endpoint_url,
        options=options,
        access_key_id=credentials.access_key_id,
        secret_access_key=credentials.secret_access_key,
        session_token=credentials.session_token,
    )


def clear_clients() -> None:
    """Forget every cached client (tests; credential revocation)."""
    _clients.clear()


# ---------------------------------------------------------------------------
# Operations
# ---------------------------------------------------------------------------


@sensitive_variables("credentials")
def _call(
    operation: str,
    *,
    region: str,
    credentials: KmsCredentials,
    endpoint_url: str | None,
    options: KmsClientOptions,
    **params: Any,
) -> dict[str, Any]:
    kms_client = client(region=region, credentials=credentials, endpoint_url=endpoint_url, options=options)
    return aws_clients.call(
        kms_client,
        operation,
        params,
        to_error=lambda e: _redacted(classify(e, operation=operation), credentials),
        ok_codes=("DryRunOperationException",),  # DryRun: "would have succeeded"
    )


def describe_key(
    *,
    region: str,
    credentials: KmsCredentials,
    key_id: str,
    endpoint_url: str | None = None,
    options: KmsClientOptions = DEFAULT_OPTIONS,
) -> KeyDescription:
    """Call DescribeKey with ``KeyId=key_id`` (a key ARN, key ID or alias).

    https://docs.aws.amazon.com/kms/latest/APIReference/API_DescribeKey.html
    DescribeKey works on keys in any state (a disabled or pending-deletion key
    is described, with its state), so a state problem shows in the result, not
    as an error. Documented errors: NotFoundException, InvalidArnException
    (permanent), DependencyTimeoutException, KMSInternalException (transient);
    plus the common AccessDeniedException, UnrecognizedClientException,
    InvalidSignatureException, ThrottlingException.

    Raises :class:`KmsPermanentError` or :class:`KmsTransientError`.
    """
    response = _call(
        "DescribeKey",
        region=region,
        credentials=credentials,
        endpoint_url=endpoint_url,
        options=options,
        KeyId=key_id,
    )
    return _key_description(response["KeyMetadata"])


def _key_description(metadata: dict[str, Any]) -> KeyDescription:
    deletion_date = metadata.get("DeletionDate")
    if deletion_date is not None:
        deletion_date = deletion_date.astimezone(UTC)
    return KeyDescription(
        key_id=metadata.get("KeyId", ""),
        arn=metadata.get("Arn", ""),
        account_id=metadata.get("AWSAccountId", ""),
        key_state=metadata.get("KeyState", ""),
        key_usage=metadata.get("KeyUsage", ""),
        # KeySpec replaced CustomerMasterKeySpec (deprecated, still returned).
        key_spec=metadata.get("KeySpec") or metadata.get("CustomerMasterKeySpec", ""),
        key_manager=metadata.get("KeyManager", ""),
        origin=metadata.get("Origin", ""),
        enabled=bool(metadata.get("Enabled", False)),
        deletion_date=deletion_date,
        custom_key_store_id=metadata.get("CustomKeyStoreId"),
        multi_region=bool(metadata.get("MultiRegion", False)),
    )


@sensitive_variables("credentials", "response", "plaintext")
def decrypt(
    *,
    region: str,
    credentials: KmsCredentials,
    kms_key_arn: str,
    ciphertext_blob: bytes,
    encryption_context: dict[str, str] | None = None,
    endpoint_url: str | None = None,
    options: KmsClientOptions = DEFAULT_OPTIONS,
) -> DecryptResult:
    """Call Decrypt on an encrypted data key, always with ``KeyId=kms_key_arn``.

    https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html
    Passing the KeyId is the documented best practice for symmetric keys: KMS
    then refuses a ciphertext made under another key (IncorrectKeyException)
    instead of silently using whatever key the blob names.
    ``encryption_context`` must equal the one used at encryption, else KMS
    answers InvalidCiphertextException; None or {} sends none.

    Returns a :class:`DecryptResult` whose ``plaintext`` (a ``bytearray``; 32
    bytes for an AES_256 data key) the caller must :meth:`~DecryptResult.wipe`.
    botocore's own ``bytes`` copy of the response cannot be wiped; it is dropped
    at once.

    Documented errors: NotFoundException, DisabledException,
    InvalidCiphertextException, IncorrectKeyException, InvalidKeyUsageException,
    KMSInvalidStateException, InvalidGrantTokenException (permanent);
    KeyUnavailableException, DependencyTimeoutException, KMSInternalException
    (transient). Raises :class:`KmsPermanentError` or :class:`KmsTransientError`.
    """
    params: dict[str, Any] = {"KeyId": kms_key_arn, "CiphertextBlob": ciphertext_blob}
    if encryption_context:
        params["EncryptionContext"] = dict(encryption_context)
    response = _call(
        "Decrypt",
        region=region,
        credentials=credentials,
        endpoint_url=endpoint_url,
        options=options,
        **params,
    )
    plaintext = bytearray(response.pop("Plaintext"))
    return DecryptResult(
        key_id=response.get("KeyId", ""),
        encryption_algorithm=response.get("EncryptionAlgorithm"),
        plaintext=plaintext,
    )


@sensitive_variables("credentials", "response")
def generate_data_key_allowed(
    *,
    region: str,
    credentials: KmsCredentials,
    kms_key_arn: str,
    endpoint_url: str | None = None,
    options: KmsClientOptions = DEFAULT_OPTIONS,
) -> bool:
    """Excess-privilege probe: may these credentials call kms:GenerateDataKey?

    Calls GenerateDataKey with ``DryRun=True``, which checks permissions
    without generating anything; KMS answers DryRunOperationException (HTTP
    412) when the call *would have succeeded*.
    https://docs.aws.amazon.com/kms/latest/developerguide/programming-dryrun.html

    Returns True when allowed (DryRunOperationException, or a real answer from
    an endpoint that ignores DryRun, like moto: its plaintext is zeroed and
    dropped), False on access denied. Any other error is raised as
    :class:`KmsPermanentError` / :class:`KmsTransientError`.
    """
    try:
        response = _call(
            "GenerateDataKey",
            region=region,
            credentials=credentials,
            endpoint_url=endpoint_url,
            options=options,
            KeyId=kms_key_arn,
            KeySpec="AES_256",
            DryRun=True,
        )
    except KmsError as e:
        if e.code == "DryRunOperationException":
            return True
        if e.reason == Reason.ACCESS_DENIED:
            return False
        raise
    # Only an endpoint that ignores DryRun gets here, with a real data key: drop it.
    response.pop("Plaintext", None)
    return True
