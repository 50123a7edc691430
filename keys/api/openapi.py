"""The OpenAPI 3.1 description of the data-plane API (``keys.api.views``), served at
``GET /api/v1/openapi.json`` (public: it holds nothing secret).

Built as a Python dict, so that the limits in it (``maxItems``, body sizes, the rate limit)
are the running settings'. ``tests/keys/test_openapi.py`` keeps it true: it validates as
OpenAPI, names exactly the routes of ``keys.api.urlpatterns`` with their methods, lists
every error code of ``keys.api.views``'s table, real answers validate against its response
schemas, and schemathesis fuzzes the API from it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from keys.services.records import RECORD_KEY_RE, RESERVED_RECORD_KEYS

API_PREFIX = "/api/v1"
JSON = "application/json"

# Error codes by HTTP status, as ``keys.api.views``'s docstring lists them.
ERROR_CODES: dict[int, tuple[str, ...]] = {
    400: (
        "invalid_json", "invalid_request", "invalid_record_key", "too_many_records", "duplicate_record_key",
        "bad_request",
    ),
    401: ("unauthenticated", "invalid_api_key", "api_key_revoked"),
    404: ("not_found",),
    405: ("method_not_allowed",),
    411: ("length_required",),
    413: ("body_too_large",),
    422: ("integrity_error",),
    429: ("rate_limited",),
    503: ("key_unavailable", "service_unavailable"),
    500: ("internal_error",),
}
ALL_ERROR_CODES = tuple(code for codes in ERROR_CODES.values() for code in codes)
KEY_UNAVAILABLE_REASONS = (
    "disabled, pending_deletion, access_denied, incorrect_key, invalid_credentials, not_found, "
    "throttled, unreachable, internal, no_active_version, rotating, credentials_unreadable, "
    "sealing_key_unavailable, invalid_data_key, …"
)

_RESPONSE_NAMES = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    405: "MethodNotAllowed",
    411: "LengthRequired",
    413: "BodyTooLarge",
    422: "IntegrityError",
    429: "RateLimited",
    503: "Unavailable",
    500: "InternalError",
}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _error_schema(codes: tuple[str, ...], **extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string", "enum": list(codes)}, "message": {"type": "string"}, **extra},
            }
        },
    }


def _error_responses() -> dict[str, Any]:
    retry_after = {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
    descriptions = {
        400: "Bad input: body not JSON (or NaN/Infinity), wrong shape, empty batch or find, bad record key "
        "(or a reserved one, `batch` or `find`, as a record_key in a batch or find body), more than "
        "API_MAX_BATCH_RECORDS items, a record key twice in one batch, an integer of more than 4,300 "
        "digits (send it as a string); `bad_request`: a Host header this service does not answer to.",
        401: "No `Authorization: Bearer` header, or a malformed, unknown, wrong or revoked API key.",
        404: "Unknown environment (or another environment than the API key's), record, or path.",
        405: "The path exists but not with this method; `Allow` lists the methods it has. A record key "
        "`batch` or `find` names the bulk endpoints, which only take POST.",
        411: "A chunked request body that this server cannot read (the development server does not "
        "de-chunk); send Content-Length.",
        413: "The request body is over its limit (declared Content-Length or bytes read).",
        422: "The stored ciphertext fails its integrity check: the record cannot be decrypted.",
        429: "Over API_RATE_LIMIT_PER_MINUTE requests for this API key.",
        503: "`key_unavailable`: the data key is unavailable; `reason` says why (" + KEY_UNAVAILABLE_REASONS + "). "
        "`Retry-After` is sent when the cause is transient (throttling, KMS unreachable). "
        "`service_unavailable`: the service cannot reach its database (or, behind the front proxy, "
        "the application server) right now; `Retry-After` is always sent.",
        500: "A bug; nothing else is said.",
    }
    headers: dict[int, dict[str, Any]] = {
        401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
        405: {"Allow": {"required": True, "schema": {"type": "string"}}},
        429: {"Retry-After": {**retry_after, "required": True}},
        503: {"Retry-After": retry_after},
    }
    out = {}
    for status, name in _RESPONSE_NAMES.items():
        response: dict[str, Any] = {"description": descriptions[status], "content": _json(_ref("schemas", name + "Error"))}
        if status in headers:
            response["headers"] = headers[status]
        out[name] = response
    return out


def _error_schemas() -> dict[str, Any]:
    extras: dict[int, dict[str, Any]] = {
        422: {"record_key": {"type": "string"}},
        503: {"reason": {"type": "string"}},
    }
    return {name + "Error": _error_schema(ERROR_CODES[status], **extras.get(status, {})) for status, name in _RESPONSE_NAMES.items()}


def _schemas() -> dict[str, Any]:
    max_records = settings.API_MAX_BATCH_RECORDS
    record_key = {"$ref": "#/components/schemas/RecordKey"}
    timestamp = {"type": "string", "format": "date-time"}
    key_version = {"type": "integer", "minimum": 1}
    return {
        "RecordKey": {
            "type": "string",
            "description": "1 to 255 characters of A-Z a-z 0-9 . _ : -, starting with a letter or digit; "
            "`batch` and `find` are reserved: in the path they are the bulk endpoints (any other method than "
            "POST answers 405), in a batch or find body they answer 400 invalid_record_key.",
            "pattern": f"^{RECORD_KEY_RE.pattern}$",
            "not": {"enum": sorted(RESERVED_RECORD_KEYS)},
        },
        "Body": {"description": "Any JSON value (object, array, string, number, boolean or null)."},
        "PutRecord": {
            "type": "object",
            "required": ["body"],
            "properties": {"body": _ref("schemas", "Body")},
        },
        "StoredRecord": {
            "type": "object",
            "required": ["record_key", "key_version", "updated_at"],
            "properties": {"record_key": {"type": "string"}, "key_version": key_version, "updated_at": timestamp},
        },
        "Record": {
            "type": "object",
            "required": ["record_key", "body", "key_version", "updated_at"],
            "properties": {
                "record_key": {"type": "string"},
                "body": _ref("schemas", "Body"),
                "key_version": key_version,
                "updated_at": timestamp,
            },
        },
        "Batch": {
            "type": "object",
            "required": ["records"],
            "properties": {
                "records": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_records,
                    "items": {
                        "type": "object",
                        "required": ["record_key", "body"],
                        "properties": {"record_key": record_key, "body": _ref("schemas", "Body")},
                    },
                }
            },
        },
        "BatchResult": {
            "type": "object",
            "required": ["count", "key_version", "updated_at"],
            "properties": {"count": {"type": "integer", "minimum": 1}, "key_version": key_version, "updated_at": timestamp},
        },
        "Find": {
            "type": "object",
            "required": ["record_keys"],
            "properties": {"record_keys": {"type": "array", "minItems": 1, "maxItems": max_records, "items": record_key}},
        },
        "RecordFailure": {
            "type": "object",
            "required": ["record_key", "code", "message"],
            "properties": {
                "record_key": {"type": "string"},
                "code": {"type": "string", "enum": ["not_found", "integrity_error", "key_unavailable"]},
                "message": {"type": "string"},
                "reason": {"type": "string"},
                "retry_after": {"type": "integer", "minimum": 0},
            },
        },
        "FindResult": {
            "type": "object",
            "required": ["records", "errors"],
            "properties": {
                "records": {"type": "array", "items": _ref("schemas", "Record")},
                "errors": {"type": "array", "items": _ref("schemas", "RecordFailure")},
            },
        },
        "ErrorCode": {"type": "string", "enum": list(ALL_ERROR_CODES)},
        **_error_schemas(),
    }


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _ref("responses", _RESPONSE_NAMES[status]) for status in statuses}


def _body(schema_name: str, description: str) -> dict[str, Any]:
    return {"required": True, "description": description, "content": _json(_ref("schemas", schema_name))}


def _ok(schema_name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref("schemas", schema_name))}


def _paths() -> dict[str, Any]:
    environment = _ref("parameters", "EnvironmentId")
    record = f"{API_PREFIX}/environments/{{environment_id}}/records"
    return {
        f"{record}/{{record_key}}": {
            "parameters": [environment, _ref("parameters", "RecordKey")],
            "get": {
                "operationId": "getRecord",
                "summary": "Read one record (decrypted).",
                "responses": {"200": _ok("Record", "The record."), **_errors(400, 401, 404, 405, 422, 429, 503, 500)},
            },
            "put": {
                "operationId": "putRecord",
                "summary": "Encrypt and store one record (create or replace).",
                "requestBody": _body("PutRecord", "At most API_MAX_BODY_BYTES bytes."),
                "responses": {"200": _ok("StoredRecord", "Stored."), **_errors(400, 401, 404, 405, 411, 413, 429, 503, 500)},
            },
            "delete": {
                "operationId": "deleteRecord",
                "summary": "Delete one record.",
                "responses": {"204": {"description": "Deleted."}, **_errors(400, 401, 404, 405, 429, 500)},
            },
        },
        f"{record}/batch": {
            "parameters": [environment],
            "post": {
                "operationId": "putRecords",
                "summary": "Encrypt and store many records in one transaction (all or none).",
                "requestBody": _body(
                    "Batch",
                    "At most API_MAX_BATCH_RECORDS records and API_MAX_BATCH_BODY_BYTES bytes; each record "
                    "body at most API_MAX_BODY_BYTES once encoded.",
                ),
                "responses": {"200": _ok("BatchResult", "All stored."), **_errors(400, 401, 404, 411, 413, 429, 503, 500)},
            },
        },
        f"{record}/find": {
            "parameters": [environment],
            "post": {
                "operationId": "findRecords",
                "summary": "Read many records; those that cannot be returned are listed under `errors`.",
                "requestBody": _body("Find", "At most API_MAX_BATCH_RECORDS record keys and API_MAX_BATCH_BODY_BYTES bytes."),
                "responses": {"200": _ok("FindResult", "Found records and per-record errors."), **_errors(400, 401, 404, 411, 413, 429, 500)},
            },
        },
        f"{API_PREFIX}/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document.",
                "security": [],
                "responses": {"200": {"description": "The OpenAPI document.", "content": _json({"type": "object"})}},
            },
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (a fresh dict: callers may change it)."""
    limit = getattr(settings, "API_RATE_LIMIT_PER_MINUTE", 0)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "BYOK Portal data-plane API",
            "version": "1",
            "description": (
                "Records of one environment, encrypted with AES-256-GCM under the environment's data key "
                "(platform-managed, or wrapped by the customer's AWS KMS key). Authenticate with an API key of "
                "that environment: `Authorization: Bearer byok_<prefix>_<secret>`. Errors are "
                '`{"error": {"code", "message"}}`. Limits: request body '
                f"{settings.API_MAX_BODY_BYTES} bytes (PUT), {_batch_body_limit()} bytes (batch, find); "
                f"{settings.API_MAX_BATCH_RECORDS} records per batch or find; "
                + (f"{limit} requests a minute per API key." if limit else "no request rate limit.")
            ),
        },
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "byok_<prefix>_<secret>"}
            },
            "parameters": {
                "EnvironmentId": {
                    "name": "environment_id",
                    "in": "path",
                    "required": True,
                    "description": "The environment's public id (the API key's own environment).",
                    "schema": {"type": "string", "format": "uuid"},
                },
                "RecordKey": {
                    "name": "record_key",
                    "in": "path",
                    "required": True,
                    "schema": _ref("schemas", "RecordKey"),
                },
            },
            "schemas": _schemas(),
            "responses": _error_responses(),
        },
        "security": [{"bearerAuth": []}],
    }


def _batch_body_limit() -> int:
    return getattr(settings, "API_MAX_BATCH_BODY_BYTES", settings.API_MAX_BODY_BYTES * 16)
