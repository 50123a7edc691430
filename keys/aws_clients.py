"""What the two AWS adapters (:mod:`keys.kms`, :mod:`keys.sts`) share: client options,
building and caching boto3 clients, calling one operation (timed, its botocore error
turned into the adapter's own), and the parts of the error mapping that do not depend on
the service.

Only :mod:`keys.kms` and :mod:`keys.sts` import this module; they stay the only modules
that make AWS calls and own their operations, error classes, reasons and error codes
(docs/architecture.md, "Apps and packages"). No ORM and no Django settings here.

* A client per (region, credentials, endpoint, options), each built from its own
  ``boto3.session.Session``: sessions are not thread-safe, clients are, so a cached client
  may be shared by threads.
  https://boto3.amazonaws.com/v1/documentation/api/latest/guide/clients.html#multithreading-or-multiprocessing-with-clients
* Explicit timeouts and botocore's "standard" retries.
  https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html
* Errors are classified by AWS error code first (each adapter's own table), then by HTTP
  status (:func:`reason_for_status`); an error without a response by its botocore class
  (:func:`reason_for_botocore_error`).
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config
from django.views.decorators.debug import sensitive_variables

from keys import metrics

__all__ = [
    "CLOCK_SKEW_RE",
    "CONNECT_TIMEOUT_SECONDS",
    "DEFAULT_OPTIONS",
    "MAX_ATTEMPTS",
    "READ_TIMEOUT_SECONDS",
    "AwsCallError",
    "ClientCache",
    "ClientOptions",
    "FallbackReasons",
    "build_client",
    "call",
    "client_error_fields",
    "error_message",
    "reason_for_botocore_error",
    "reason_for_status",
]

# Client defaults. KMS answers Decrypt in milliseconds and STS AssumeRole about as fast; a
# slow answer is better reported as a timeout (transient) than left to hang a web request.
CONNECT_TIMEOUT_SECONDS = 3.0
READ_TIMEOUT_SECONDS = 10.0
# botocore "standard" retry mode; MAX_ATTEMPTS counts the first call, so 3 means up to 2
# retries, with exponential backoff and jitter, for throttling, 5xx and connection errors.
MAX_ATTEMPTS = 3
# AWS messages are short; this only bounds what a hostile endpoint can put in ours.
MESSAGE_MAX_CHARS = 300
# SigV4 rejects a request whose timestamp is more than 5 minutes off:
# "Signature expired: 20240101T000000Z is now earlier than ..." or
# "Signature not yet current: ... is still later than ...".
CLOCK_SKEW_RE = re.compile(r"signature expired|signature not yet current", re.I)


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientOptions:
    """Timeouts (seconds) and attempts of a client; part of the client cache key.
    :mod:`keys.kms` and :mod:`keys.sts` name it ``KmsClientOptions`` / ``StsClientOptions``."""

    connect_timeout: float = CONNECT_TIMEOUT_SECONDS
    read_timeout: float = READ_TIMEOUT_SECONDS
    max_attempts: int = MAX_ATTEMPTS


DEFAULT_OPTIONS = ClientOptions()


@sensitive_variables("secret_access_key", "session_token")
def build_client(
    service_name: str,
    *,
    region: str,
    endpoint_url: str | None,
    options: ClientOptions,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
) -> Any:
    """A new boto3 client of ``service_name`` ("kms", "sts") from its own
    ``boto3.session.Session``: signed with the given credentials, or without them with the
    standard AWS credential chain (environment, shared files, container or instance role).
    An empty ``session_token`` sends none."""
    session = boto3.session.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token or None,
        region_name=region,
    )
    config = Config(
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        # total_max_attempts counts the first call; botocore's "max_attempts"
        # key counts retries only (max_attempts=3 would mean 4 calls).
        # https://botocore.amazonaws.com/v1/documentation/api/latest/reference/config.html
        retries={"mode": "standard", "total_max_attempts": options.max_attempts},
        user_agent_extra="byok-portal",
    )
    return session.client(service_name, endpoint_url=endpoint_url, config=config)


class ClientCache:
    """Clients by cache key, least recently used evicted first, under one lock: two threads
    asking for the same new client must not build two (each build reads config files and
    costs tens of milliseconds), and an ``OrderedDict`` is not safe to mutate concurrently."""

    def __init__(self) -> None:
        self._clients: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], Any], *, max_size: int) -> Any:
        """The client cached under ``key``, else ``build()``'s, cached; at most ``max_size`` kept."""
        with self._lock:
            aws_client = self._clients.get(key)
            if aws_client is None:
                aws_client = build()
                self._clients[key] = aws_client
                while len(self._clients) > max_size:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(key)
            return aws_client

    def clear(self) -> None:
        """Forget every cached client."""
        with self._lock:
            self._clients.clear()

    def __len__(self) -> int:
        return len(self._clients)


# ---------------------------------------------------------------------------
# Calls
# ---------------------------------------------------------------------------


class AwsCallError(Exception):
    """What :func:`call` reads of an adapter's error: its kind and AWS error code.
    :class:`keys.kms.KmsError` (and so :class:`keys.sts.StsError`) subclasses it."""

    permanent: bool = True
    code: str | None = None


def call(
    aws_client: Any,
    operation: str,
    params: dict[str, Any],
    *,
    to_error: Callable[[Exception], AwsCallError],
    ok_codes: Collection[str] = (),
) -> dict[str, Any]:
    """Call ``operation`` ("Decrypt", "AssumeRole", ...) on ``aws_client`` with ``params``
    and return the response dict. A botocore error is raised as ``to_error(e)``, from it.

    Timed here, the one place every KMS and STS call passes: latency and outcome per
    operation (``keys.metrics.kms_call_observed``), botocore's retries included. An error
    whose code is in ``ok_codes`` counts as ``ok`` (KMS's DryRunOperationException means
    "would have succeeded")."""
    method = getattr(aws_client, _snake_case(operation))
    started = time.perf_counter()
    try:
        response = method(**params)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
        error = to_error(e)
        _observe(operation, error, started, ok_codes)
        raise error from e
    _observe(operation, None, started, ok_codes)
    return response


def _observe(operation: str, error: AwsCallError | None, started: float, ok_codes: Collection[str]) -> None:
    if error is None or error.code in ok_codes:
        outcome = "ok"
    else:
        outcome = "permanent" if error.permanent else "transient"
    metrics.kms_call_observed(operation=operation, outcome=outcome, seconds=time.perf_counter() - started)


def _snake_case(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


# ---------------------------------------------------------------------------
# Error mapping, the part every service shares
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FallbackReasons:
    """An adapter's ``reason`` values for failures its table of AWS error codes does not
    name: by HTTP status (:func:`reason_for_status`) and by botocore error class
    (:func:`reason_for_botocore_error`)."""

    access_denied: str  # HTTP 403
    throttled: str  # HTTP 429
    internal: str  # HTTP 5xx, and a botocore error of no class below
    unexpected: str  # any other status
    timeout: str  # connect or read timeout
    network: str  # connection refused, reset, DNS
    no_credentials: str  # no or partial credentials found
    validation: str  # botocore refused the parameters before sending


def client_error_fields(error: botocore.exceptions.ClientError) -> tuple[str, str, int | None]:
    """``(code, message, http_status)`` of a ``ClientError``: "" for a missing code or
    message, None for a missing status."""
    details = error.response.get("Error", {})
    code = str(details.get("Code") or "")
    message = str(details.get("Message") or "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, message, status


def reason_for_status(status: int | None, reasons: FallbackReasons) -> str:
    """The reason of an answer whose error code says nothing we know: 403 access denied,
    429 throttled, 5xx internal (transient), anything else unexpected."""
    if status == 403:
        return reasons.access_denied
    if status == 429:
        return reasons.throttled
    if status is not None and status >= 500:
        return reasons.internal
    return reasons.unexpected


def reason_for_botocore_error(error: Exception, reasons: FallbackReasons) -> str:
    """The reason of a botocore error that carries no AWS answer (timeouts, network, missing
    credentials, invalid parameters); anything else is ``internal``: an error we do not
    understand is not evidence of a revocation."""
    exc = botocore.exceptions
    # ConnectTimeoutError is also an EndpointConnectionError: test it first.
    if isinstance(error, (exc.ConnectTimeoutError, exc.ReadTimeoutError)):
        return reasons.timeout
    if isinstance(error, (exc.ConnectionError, exc.HTTPClientError)):
        return reasons.network
    if isinstance(error, (exc.NoCredentialsError, exc.PartialCredentialsError)):
        return reasons.no_credentials
    if isinstance(error, (exc.ParamValidationError, exc.ValidationError)):
        return reasons.validation
    return reasons.internal


def error_message(
    service: str, operation: str, reason_text: str, *, detail: str, code: str | None, http_status: int | None
) -> str:
    """The safe text of an error: ``"KMS Decrypt failed: <reason text> (<code>, HTTP
    <status>): <detail>"``, the detail's white space folded and cut to
    :data:`MESSAGE_MAX_CHARS` characters."""
    parts = [f"{service} {operation} failed: {reason_text}"]
    if code or http_status:
        parts.append(f" ({code or 'no error code'}, HTTP {http_status or '?'})")
    detail = " ".join(detail.split())[:MESSAGE_MAX_CHARS]
    if detail:
        parts.append(f": {detail}")
    return "".join(parts)
