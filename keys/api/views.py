"""The data-plane API (JSON over HTTP), mounted at ``/api/v1/`` (docs/architecture.md, "The data-plane API").

::

    PUT    environments/{environment_id}/records/{record_key}   {"body": <any JSON>}
    GET    environments/{environment_id}/records/{record_key}
    DELETE environments/{environment_id}/records/{record_key}
    POST   environments/{environment_id}/records/batch          {"records": [{"record_key", "body"}, …]}
    POST   environments/{environment_id}/records/find           {"record_keys": […]}

Authentication: ``Authorization: Bearer byok_<prefix>_<secret>``; an API key serves its
own environment only: another environment's id answers 404 as if unknown.

Errors are ``{"error": {"code", "message"}}`` (plus ``reason`` for ``key_unavailable``):

====  ======================  =====================================================
400   ``invalid_json``        body is not JSON (or uses NaN / Infinity, or nests too deeply)
400   ``invalid_request``     JSON of the wrong shape (or an empty batch / find), a body that is not Unicode text (a lone surrogate), or an integer of more than 4,300 digits (``sys.get_int_max_str_digits``)
400   ``invalid_record_key``  record key outside ``[A-Za-z0-9][A-Za-z0-9._:-]{0,254}``, or ``batch`` / ``find`` in a batch or find body
400   ``too_many_records``    batch or find over ``API_MAX_BATCH_RECORDS``
400   ``duplicate_record_key`` a record key twice in one batch
400   ``bad_request``         a Host header that is not in ``ALLOWED_HOSTS``
401   ``unauthenticated``     no ``Authorization: Bearer`` header
401   ``invalid_api_key``     malformed, unknown or wrong API key
401   ``api_key_revoked``     the API key was revoked
404   ``not_found``           unknown environment (or another environment's), record, or path
405   ``method_not_allowed``  with an ``Allow`` header; also PUT / GET / DELETE of ``…/records/batch`` or ``…/records/find`` ("Use POST.")
411   ``length_required``     a chunked body the server did not de-chunk (the development server, ``make run``); send Content-Length
413   ``body_too_large``      request over the limit (Content-Length or the bytes read)
422   ``integrity_error``     the stored ciphertext fails its integrity check
429   ``rate_limited``        over ``API_RATE_LIMIT_PER_MINUTE`` for this API key; ``Retry-After``
503   ``key_unavailable``     with ``reason``; ``Retry-After`` when transient
503   ``service_unavailable`` the database (or, behind nginx, gunicorn) cannot be reached; ``Retry-After``
500   ``internal_error``      a bug; nothing else is said
====  ======================  =====================================================

422 for integrity failures: the request is well-formed and the record exists, but what is
stored cannot be processed; it is not a server bug (500) nor a state conflict the client
could resolve (409). ``find`` reports such records under ``errors`` with the same codes.

Limits: a PUT's request body is at most ``API_MAX_BODY_BYTES``; a batch or find request at
most ``API_MAX_BATCH_BODY_BYTES`` (default ``16 × API_MAX_BODY_BYTES``) and each record body
in a batch at most ``API_MAX_BODY_BYTES`` once re-encoded. Each API key may make
``API_RATE_LIMIT_PER_MINUTE`` requests a minute (``keys.api.ratelimit``: a token bucket in Redis,
failing open when Redis is down); over it, 429 with ``Retry-After`` in seconds.

``GET openapi.json`` (public) describes all of this as OpenAPI 3.1 (``keys.api.openapi``).
Every answer is counted and timed in ``keys.metrics`` by method, URL name and status class.

Views are thin: parse, call one service in ``keys.services.records``, map its errors.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt

from keys import metrics
from keys.api import openapi, ratelimit
from keys.services import api_keys, records
from keys.services.api_keys import InvalidApiKey, RevokedApiKey
from keys.services.records import (
    DecryptedRecord,
    DuplicateRecordKey,
    IntegrityFailure,
    InvalidRecordInput,
    InvalidRecordKey,
    KeyUnavailable,
    RecordFailure,
    RecordNotFound,
    RecordTooLarge,
    TooManyRecords,
)
from portal import outages
from portal.logging import request_id_var
from portal.middleware import REQUEST_ID_HEADER, request_id_for

log = logging.getLogger(__name__)
# One line per API request: method, route name, environment public id, status, duration.
access_log = logging.getLogger("keys.api.access")

JSON = "application/json"
# What the portal's CSP middleware would say, fixed for JSON: nothing loads, nothing frames.
API_CSP = "default-src 'none'; frame-ancestors 'none'"


class ApiError(Exception):
    """An error answer: HTTP ``status``, ``code``, safe ``message``, extra fields/headers."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def _json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    return _raw_json_response(json.dumps(payload, separators=(",", ":")), status, headers)


def _raw_json_response(text: str, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(text, content_type=JSON, status=status, headers=headers)
    response["Cache-Control"] = "no-store"
    return response


def _error_response(error: ApiError) -> HttpResponse:
    return _json_response(
        {"error": {"code": error.code, "message": error.message, **error.extra}}, error.status, error.headers
    )


# ---------------------------------------------------------------------------
# Error mapping
# ---------------------------------------------------------------------------


_INPUT_ERRORS = (
    (InvalidRecordKey, "invalid_record_key"),
    (DuplicateRecordKey, "duplicate_record_key"),
    (TooManyRecords, "too_many_records"),
    (InvalidRecordInput, "invalid_request"),
)


def _api_error(e: Exception) -> ApiError:
    if isinstance(e, ApiError):
        return e
    if isinstance(e, KeyUnavailable):
        headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else {}
        return ApiError(503, "key_unavailable", str(e), headers=headers, reason=e.reason)
    if isinstance(e, IntegrityFailure):
        return ApiError(422, "integrity_error", str(e), record_key=e.record_key)
    if isinstance(e, RecordNotFound):
        return ApiError(404, "not_found", str(e))
    if isinstance(e, RecordTooLarge):
        return ApiError(413, "body_too_large", str(e))
    for error_type, code in _INPUT_ERRORS:
        if isinstance(e, error_type):
            return ApiError(400, code, str(e))
    raise e


# ---------------------------------------------------------------------------
# Request handling
# ---------------------------------------------------------------------------


def _presented(request: HttpRequest) -> str:
    """The API key the request presents (``Authorization: Bearer …``), else 401."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise ApiError(
            401, "unauthenticated", "Send an API key: Authorization: Bearer byok_…",
            headers={"WWW-Authenticate": 'Bearer realm="byok"'},
        )
    return presented.strip()


@contextmanager
def _api_key_errors() -> Iterator[None]:
    try:
        yield
    except RevokedApiKey as e:
        raise ApiError(401, "api_key_revoked", str(e), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    except InvalidApiKey as e:
        raise ApiError(401, "invalid_api_key", str(e), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _authenticate(request: HttpRequest, **joins: Any):
    presented = _presented(request)
    with _api_key_errors():
        api_key = api_keys.api_key_authenticate(presented=presented, **joins)
    _check_rate_limit(api_key)
    return api_key


def _check_rate_limit(api_key) -> None:
    decision = ratelimit.api_key_hit(api_key.prefix)
    if decision is not None and not decision.allowed:
        raise ApiError(
            429, "rate_limited",
            f"This API key may make {decision.limit} requests a minute; retry after {decision.retry_after} s.",
            headers={"Retry-After": str(decision.retry_after)},
        )


def _public_id(environment_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(environment_id)
    except ValueError:
        return None


def _delete(request: HttpRequest, environment_id: str, record_key: str) -> HttpResponse:
    """DELETE of a record: one statement that authenticates and deletes (issue 12), the
    rate limit looked at before and charged after (``keys.api.ratelimit``, "DELETE:
    checked before, charged after"). An empty bucket, or a malformed record key, takes the
    usual path: authenticate (401s first), then 429 or 400, nothing deleted."""
    presented = _presented(request)
    prefix = api_keys.api_key_prefix(presented)
    decision = ratelimit.api_key_peek(prefix) if prefix is not None else None
    valid_key = records.RECORD_KEY_RE.fullmatch(record_key) and record_key not in records.RESERVED_RECORD_KEYS
    if (decision is not None and not decision.allowed) or not valid_key:
        environment = _environment(request, environment_id)
        records.record_delete(environment=environment, record_key=record_key)
        return HttpResponse(status=204)
    with _api_key_errors():
        api_key, deleted = api_keys.api_key_record_delete(
            presented=presented, environment_public_id=_public_id(environment_id), record_key=record_key
        )
    ratelimit.api_key_hit(api_key.prefix)  # charged whatever it answers: the statement ran
    if api_key.environment.public_id != _public_id(environment_id):
        raise ApiError(404, "not_found", "No such environment.")
    request.api_environment = api_key.environment
    if not deleted:
        raise RecordNotFound(f"No record {record_key!r} in this environment.")
    return HttpResponse(status=204)


def _environment(request: HttpRequest, environment_id: str):
    """The API key's environment if ``environment_id`` names it; any other id (unknown,
    malformed, or another environment's) is the same 404."""
    return _api_key_for(request, environment_id).environment


def _api_key_for(request: HttpRequest, environment_id: str, **joins: Any):
    """The API key row if its environment is ``environment_id`` (else 404), with what
    ``joins`` asked the same query to bring (``api_keys.api_key_authenticate``)."""
    api_key = _authenticate(request, **joins)
    wanted = _public_id(environment_id)
    if wanted is None or api_key.environment.public_id != wanted:
        raise ApiError(404, "not_found", "No such environment.")
    request.api_environment = api_key.environment  # for the access log and outage warnings
    return api_key


def _read_json(request: HttpRequest, limit: int) -> Any:
    """The request body parsed as JSON; 413 past ``limit`` bytes (declared or read), 411 for
    a chunked body the server left unread (:func:`_chunks_left_unread`)."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    too_large = ApiError(413, "body_too_large", f"The request body may be at most {limit} bytes.")
    if declared > limit:
        raise too_large
    if _chunks_left_unread(request.META):
        raise ApiError(411, "length_required", "This server cannot read a chunked body; send Content-Length.")
    body = _body(request, limit + 1)
    if len(body) > limit:
        raise too_large
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError):
        too_long = records.number_too_long(body, parse_constant=_refuse_constant)
        if too_long is not None:  # well-formed JSON: the request, not its syntax, is refused
            raise ApiError(400, "invalid_request", too_long)
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.")
    except RecursionError:
        # json.loads recurses once per nesting level: "[" * 5000 exhausts the stack.
        raise ApiError(400, "invalid_json", "The request body is nested too deeply.")


def _body(request: HttpRequest, limit: int) -> bytes:
    """At most ``limit`` bytes of the request body. A chunked body has no Content-Length,
    so Django reads it as empty; a server that de-chunks it says so with
    ``wsgi.input_terminated`` (gunicorn does; PEP 3333 extension), and then the stream
    itself ends where the body ends."""
    if not request.META.get("CONTENT_LENGTH") and request.META.get("wsgi.input_terminated"):
        stream = request.META["wsgi.input"]
        chunks, size = [], 0
        while size < limit:
            chunk = stream.read(min(65536, limit - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    return request.read(limit)


def _chunks_left_unread(meta: dict[str, Any]) -> bool:
    """Whether the request has a chunked body that its WSGI server did not de-chunk.

    Django's development server (``make run``: runserver, on wsgiref) passes
    ``Transfer-Encoding: chunked`` through with no Content-Length and a stream that reads
    as empty, so the body would look empty ("not valid JSON"); it is answered 411 instead
    (RFC 9110, 15.5.12), and runserver closes the connection after an answer without a
    Content-Length, so the unread chunks are never taken for a next request. A server
    that de-chunks says so with ``wsgi.input_terminated`` (gunicorn), a proxy that buffers
    sends Content-Length (nginx), and ASGI reads the whole body before the view (no
    ``wsgi.input``): those bodies are read."""
    return (
        "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
        and not meta.get("CONTENT_LENGTH")
        and not meta.get("wsgi.input_terminated")
        and "wsgi.input" in meta
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _batch_body_limit() -> int:
    return getattr(settings, "API_MAX_BATCH_BODY_BYTES", settings.API_MAX_BODY_BYTES * 16)


def api_view(*methods: str) -> Callable:
    """Mark a data-plane view: JSON 405 for other methods (HEAD wherever GET is allowed),
    domain errors mapped to JSON answers, an unreachable database to 503
    ``service_unavailable``, anything unexpected to a bare 500; each answer observed
    (:func:`_observed`: request id, access log, metrics). The API's handler runs no
    middleware (portal/handlers.py), so no CSRF check applies: bearer auth, no cookies."""
    allowed = (*methods, "HEAD") if "GET" in methods else methods

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @functools.wraps(view)
        @_observed
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if request.method not in allowed:
                    raise ApiError(
                        405, "method_not_allowed", f"Use {', '.join(allowed)}.", headers={"Allow": ", ".join(allowed)}
                    )
                if request.method == "HEAD":  # answered as a GET; _observed drops the body
                    return view(_as_get(request), *args, **kwargs)
                return view(request, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - every answer of the API is JSON
                return _error_response(_answer_for(e, request))

        wrapper.api_methods = allowed  # read by tests/keys/test_openapi.py
        return wrapper

    return decorate


def _as_get(request: HttpRequest) -> HttpRequest:
    request.method = "GET"
    return request


def _head(response: HttpResponse) -> HttpResponse:
    """The GET answer without its body; Content-Length still says how long it would be."""
    length = len(response.content)
    response.content = b""
    response["Content-Length"] = str(length)
    return response


def _answer_for(e: Exception, request: HttpRequest) -> ApiError:
    try:
        error = _api_error(e)
    except outages.DATABASE_ERRORS as db_error:
        outages.database_unreachable(db_error)
        return ApiError(
            503, "service_unavailable", "The service cannot reach its database right now; retry later.",
            headers={"Retry-After": str(outages.RETRY_AFTER_SECONDS)},
        )
    except DisallowedHost:
        return ApiError(400, "bad_request", "The Host header is not one this service answers to.")
    except Exception:
        # Never the path or the exception's text: either may hold a record key.
        log.error(
            "data-plane API error on %s %s: %s\n%s", request.method, _route_of(request), type(e).__name__,
            "".join(traceback.format_tb(e.__traceback__)),
        )
        return ApiError(500, "internal_error", "Internal error.")
    if error.code == "key_unavailable":
        outages.key_unavailable(environment=getattr(request, "api_environment", None), reason=error.extra["reason"])
    return error


# The URL names of the API, as metrics and access-log labels ("api_record" -> "record");
# any other path is "unknown".
ROUTES = frozenset({"record", "records_batch", "records_find", "openapi"})


def _route_of(request: HttpRequest) -> str:
    match = request.resolver_match
    name = (match.url_name or "").removeprefix("api_") if match is not None else ""
    return name if name in ROUTES else "unknown"


def _observed(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Give the request an id (``X-Request-ID``, as ``portal.middleware`` does for pages),
    then count, time and log its answer: one ``keys.api.access`` line and the
    ``keys.metrics`` series, by method, route name, environment public id and status —
    never the path, which holds record keys. Django's own ``django.request`` line (which
    has the path, and mails ADMINS for 5xx) is suppressed: this line replaces it."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        started = time.perf_counter()
        method = request.method or ""  # before a HEAD is answered as a GET
        request.request_id = request_id_for(request)
        token = request_id_var.set(request.request_id)
        try:
            try:
                request.get_host()  # ALLOWED_HOSTS, as CommonMiddleware checks it for pages
                response = view(request, *args, **kwargs)
            except DisallowedHost as e:
                response = _error_response(_answer_for(e, request))
            if method == "HEAD":  # every HEAD answer, errors included: a HEAD response has no body
                response = _head(response)
            seconds = time.perf_counter() - started
            route = _route_of(request)
            environment = getattr(request, "api_environment", None)
            response[REQUEST_ID_HEADER] = request.request_id
            response["X-Content-Type-Options"] = "nosniff"
            response["Content-Security-Policy"] = API_CSP
            response._has_been_logged = True  # no django.request line: it would carry the path
            metrics.api_request_observed(method=method, route=route, status=response.status_code, seconds=seconds)
            access_log.info(
                "%s %s %s", method, route, response.status_code,
                extra={
                    "method": method, "route": route, "status": response.status_code,
                    "environment": str(environment.public_id) if environment is not None else None,
                    "duration_ms": round(seconds * 1000, 1),
                },
            )
            return response
        finally:
            request_id_var.reset(token)

    return wrapper


# ---------------------------------------------------------------------------
# Serialising records
# ---------------------------------------------------------------------------


# What json.dumps does with a str, without its per-call encoder set-up (find writes a
# thousand records; the same escaping, in C).
_json_string = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _record_json(record: DecryptedRecord) -> str:
    # body_json is the exact JSON text stored and authenticated: spliced in, not re-parsed.
    return (
        '{"record_key":' + _json_string(record.record_key)
        + ',"body":' + record.body_json
        + ',"key_version":' + str(record.key_version)
        + ',"updated_at":' + _json_string(record.updated_at.isoformat())
        + "}"
    )


def _failure_json(failure: RecordFailure) -> dict[str, Any]:
    item: dict[str, Any] = {"record_key": failure.record_key, "code": failure.code, "message": failure.message}
    if failure.reason is not None:
        item["reason"] = failure.reason
    if failure.retry_after is not None:
        item["retry_after"] = failure.retry_after
    return item


# ---------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------


@api_view("GET", "PUT", "DELETE")
def record(request: HttpRequest, environment_id: str, record_key: str) -> HttpResponse:
    # Round trips (pinned by tests/keys/test_round_trips.py): a GET is one statement (the
    # API key, the record and its key version in one query); a PUT one in steady state
    # (the upsert guarded by the API key and the active version, see _put), two otherwise;
    # a DELETE one (the API key and the DELETE guarded by its hash, together).
    if request.method == "GET":
        # A malformed record key is never sent to the database (a NUL byte would fail
        # there): record_read answers 400 for it, after authentication as for any request.
        joined = record_key if records.RECORD_KEY_RE.fullmatch(record_key) else None
        api_key = _api_key_for(request, environment_id, record_key=joined)
        value = records.record_read(
            environment=api_key.environment, record_key=record_key, record=getattr(api_key, "record_row", None)
        )
        return _raw_json_response(_record_json(value))
    if request.method == "DELETE":
        return _delete(request, environment_id, record_key)
    return _put(request, environment_id, record_key)


def _put(request: HttpRequest, environment_id: str, record_key: str) -> HttpResponse:
    """PUT of a record. Steady state: one statement that authenticates and writes
    (``records.record_put_guarded``), the rate limit looked at before and charged after,
    as for DELETE. Otherwise (no version seen yet in this process, an empty bucket, a body
    to refuse), or when that statement wrote nothing: the usual path, whose answers come
    in their usual order (401, then 429, then 404, then the body's 400 / 413), then
    ``records.record_put`` (two statements)."""
    presented = _presented(request)
    refused: ApiError | None = None
    try:
        payload = _read_json(request, settings.API_MAX_BODY_BYTES)
        if not isinstance(payload, dict) or "body" not in payload:
            raise ApiError(400, "invalid_request", 'Send {"body": <any JSON>}.')
    except ApiError as e:
        refused = e
    if refused is None:
        prefix = api_keys.api_key_prefix(presented)
        decision = ratelimit.api_key_peek(prefix) if prefix is not None else None
        if decision is None or decision.allowed:
            with _api_key_errors():
                done = records.record_put_guarded(
                    presented=presented, environment_public_id=_public_id(environment_id), record_key=record_key,
                    body=payload["body"],
                )
            if done is not None and done.written:
                ratelimit.api_key_hit(done.api_key.prefix)  # charged after: the statement ran
                request.api_environment = done.api_key.environment
                return _stored_json(record_key, done.key_version, done.updated_at)
    api_key = _api_key_for(request, environment_id, with_active_version=True)
    if refused is not None:
        raise refused
    stored = records.record_put(
        environment=api_key.environment, record_key=record_key, body=payload["body"], active=api_key.active_version
    )
    return _stored_json(stored.record_key, stored.key_version, stored.updated_at)


def _stored_json(record_key: str, key_version: int | None, updated_at: Any) -> HttpResponse:
    return _json_response({"record_key": record_key, "key_version": key_version, "updated_at": updated_at.isoformat()})


def _bounded_list(payload: object, field: str, shape: str, what: str) -> list:
    """``payload[field]``, a list of at most ``API_MAX_BATCH_RECORDS`` items.

    Raises ``ApiError`` 400 ``invalid_request`` (saying to send ``shape``) or
    ``too_many_records`` (naming the limit and ``what`` it counts)."""
    items = payload.get(field) if isinstance(payload, dict) else None
    if not isinstance(items, list):
        raise ApiError(400, "invalid_request", f"Send {shape}.")
    if len(items) > settings.API_MAX_BATCH_RECORDS:
        raise ApiError(400, "too_many_records", f"At most {settings.API_MAX_BATCH_RECORDS} {what}.")
    return items


@api_view("POST")
def records_batch(request: HttpRequest, environment_id: str) -> HttpResponse:
    api_key = _api_key_for(request, environment_id, with_active_version=True)
    payload = _read_json(request, _batch_body_limit())
    items = _bounded_list(payload, "records", '{"records": [{"record_key": …, "body": …}, …]}', "records per batch")
    pairs = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or "record_key" not in item or "body" not in item:
            raise ApiError(400, "invalid_request", f"records[{index}] must be {{\"record_key\": …, \"body\": …}}.")
        pairs.append((item["record_key"], item["body"]))
    stored = records.records_put_batch(environment=api_key.environment, records=pairs, active=api_key.active_version)
    return _json_response(
        {
            "count": len(stored),
            "key_version": stored[0].key_version,
            "updated_at": stored[0].updated_at.isoformat(),
        }
    )


@api_view("POST")
def records_find(request: HttpRequest, environment_id: str) -> HttpResponse:
    environment = _environment(request, environment_id)
    payload = _read_json(request, _batch_body_limit())
    keys = _bounded_list(payload, "record_keys", '{"record_keys": ["…", …]}', "record keys per request")
    found, errors = records.records_find(environment=environment, record_keys=keys)
    text = (
        '{"records":[' + ",".join(_record_json(r) for r in found) + "],"
        + '"errors":' + json.dumps([_failure_json(f) for f in errors], separators=(",", ":"))
        + "}"
    )
    return _raw_json_response(text)


@api_view("GET")
def openapi_json(request: HttpRequest) -> HttpResponse:
    """The OpenAPI description of this API (``keys.api.openapi``); public, no API key."""
    return _json_response(openapi.document())


@csrf_exempt
@_observed
def unknown_path(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Everything else under /api/v1/: a JSON 404, not the portal's HTML page."""
    return _error_response(ApiError(404, "not_found", "No such API endpoint."))


urlpatterns = [
    path("openapi.json", openapi_json, name="api_openapi"),
    path("environments/<str:environment_id>/records/batch", records_batch, name="api_records_batch"),
    path("environments/<str:environment_id>/records/find", records_find, name="api_records_find"),
    path("environments/<str:environment_id>/records/<path:record_key>", record, name="api_record"),
    re_path(r"", unknown_path, name="api_unknown"),
]
