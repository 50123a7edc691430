"""The OpenAPI description of the data-plane API (keys/openapi.py), kept true:

* it is a valid OpenAPI 3.1 document, served in public at /api/v1/openapi.json;
* it names exactly the routes (and methods) of ``keys.api.urlpatterns``;
* it lists exactly the error codes of ``keys.api.views``'s table, as does README.md;
* real answers of the API validate against its response schemas (jsonschema);
* schemathesis, fed the document, never gets a 500 or an answer off the schema.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.urls import URLPattern
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from keys.api import views as api_module
from keys import cache, kms
from keys.api import openapi, ratelimit
from keys.services import records
from tests.factories import error_of, refuse, stored, tamper, throttle
from portal.wsgi import application as wsgi_application

ROOT = Path(__file__).resolve().parent.parent.parent
DOCUMENT_URI = "urn:byok:openapi"


def document() -> dict:
    return openapi.document()


# ---------------------------------------------------------------------------
# The document itself
# ---------------------------------------------------------------------------


def test_it_is_a_valid_openapi_3_1_document():
    doc = document()

    validate(doc)

    assert doc["openapi"].startswith("3.1")
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "byok_<prefix>_<secret>"
    }


@pytest.mark.django_db
def test_it_serves_the_document_in_public_without_an_api_key(client):
    response = client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == json.loads(json.dumps(document()))


@pytest.mark.django_db
def test_it_answers_405_to_a_post_of_the_document(client):
    response = client.post("/api/v1/openapi.json")

    assert response.status_code == 405 and error_of(response)["code"] == "method_not_allowed"


def _api_routes() -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every route in keys.api.urlpatterns but the catch-all."""
    routes = set()
    for pattern in api_module.urlpatterns:
        assert isinstance(pattern, URLPattern)
        if pattern.name == "api_unknown":
            continue
        path = openapi.API_PREFIX + "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", str(pattern.pattern))
        for method in pattern.callback.api_methods:
            if method != "HEAD":  # answered wherever GET is, as RFC 9110 section 9.3.2 asks; not described apart
                routes.add((path, method.lower()))
    return routes


def test_it_describes_every_route_of_the_api_and_nothing_else():
    described = {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "head", "options"}
    }

    assert described == _api_routes()


def test_it_describes_every_path_parameter_of_each_route():
    for path, item in document()["paths"].items():
        named = set(re.findall(r"{(\w+)}", path))
        declared = {
            openapi_ref(param)["name"] for param in item.get("parameters", [])
        }
        assert named == declared, path


def openapi_ref(obj: dict) -> dict:
    """Follow an OpenAPI ``$ref`` inside the document (one level is all this document uses)."""
    if "$ref" not in obj:
        return obj
    node = document()
    for part in obj["$ref"].removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _docstring_codes() -> set[tuple[int, str]]:
    rows = re.findall(r"^(\d{3})\s+``(\w+)``", api_module.__doc__, re.M)
    return {(int(status), code) for status, code in rows}


def test_it_lists_exactly_the_error_codes_of_the_api_docstring():
    listed = {(status, code) for status, codes in openapi.ERROR_CODES.items() for code in codes}

    assert listed == _docstring_codes()
    assert set(document()["components"]["schemas"]["ErrorCode"]["enum"]) == {code for _, code in listed}


def test_it_documents_each_operations_errors_with_their_codes():
    doc = document()
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method == "parameters" or operation.get("security") == []:
                continue
            statuses = set(operation["responses"])
            assert {"400", "401", "404", "429", "500"} <= statuses, (method, path)


def test_the_readme_lists_every_error_code_and_limit():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Data-plane API", 1)[1].split("\n## ", 1)[0]

    for status, code in _docstring_codes():
        assert re.search(rf"\|\s*{status}\s*\|\s*`{code}`", section), (status, code)
    for setting in ("API_MAX_BODY_BYTES", "API_MAX_BATCH_BODY_BYTES", "API_MAX_BATCH_RECORDS", "API_RATE_LIMIT_PER_MINUTE"):
        assert setting in section
    assert "A-Za-z0-9" in section and "/api/v1/openapi.json" in section


def test_the_readme_and_the_docstring_say_what_a_reserved_record_key_answers():
    """``PUT …/records/batch`` is the batch endpoint with the wrong method: 405 "Use POST."
    (tests/keys/test_api.py); ``batch`` / ``find`` as a record_key of a body: 400."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Data-plane API", 1)[1].split("\n## ", 1)[0]
    docstring = api_module.__doc__
    for text in (section, docstring):
        invalid_key = next(line for line in text.splitlines() if "invalid_record_key" in line and "400" in line)
        not_allowed = next(line for line in text.splitlines() if "method_not_allowed" in line and "405" in line)
        assert "in a batch or find body" in invalid_key and not invalid_key.rstrip(" |").endswith("or reserved")
        assert "/records/batch" in not_allowed and "/records/find" in not_allowed and "Use POST." in not_allowed


# ---------------------------------------------------------------------------
# Real answers against the response schemas
# ---------------------------------------------------------------------------


def _validator(path: str, method: str, status: int) -> jsonschema.Validator:
    doc = document()
    response = openapi_ref(doc["paths"][path][method]["responses"][str(status)])
    schema = response["content"]["application/json"]["schema"]
    registry = Registry().with_resource(DOCUMENT_URI, Resource.from_contents(doc, default_specification=DRAFT202012))
    # "#/components/…" inside the schema resolves against the document.
    return jsonschema.Draft202012Validator(
        {"$ref": DOCUMENT_URI + schema["$ref"]} if "$ref" in schema else schema,
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


RECORD = "/api/v1/environments/{environment_id}/records/{record_key}"
BATCH = "/api/v1/environments/{environment_id}/records/batch"
FIND = "/api/v1/environments/{environment_id}/records/find"


def assert_documented(response, path: str, method: str) -> None:
    operation = document()["paths"][path][method]
    assert str(response.status_code) in operation["responses"], (method, path, response.status_code)
    if response.status_code == 204:
        assert response.content == b""
        return
    _validator(path, method, response.status_code).validate(json.loads(response.content))


@pytest.fixture
def no_rate_limit(settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 0
    ratelimit._limiter = None
    yield
    ratelimit._limiter = None


def test_it_validates_real_answers_against_the_response_schemas(api, environment, settings, client, no_rate_limit):  # noqa: F811
    assert_documented(api.put("customer:1", {"body": {"a": [1, None]}}), RECORD, "put")
    assert_documented(api.get("customer:1"), RECORD, "get")
    assert_documented(api.post("batch", {"records": [{"record_key": "b1", "body": 1}, {"record_key": "b2", "body": "x"}]}), BATCH, "post")
    assert_documented(api.post("find", {"record_keys": ["b1", "nope"]}), FIND, "post")
    assert_documented(api.delete("b1"), RECORD, "delete")
    # 400s
    assert_documented(api.put("customer:1", b"{not json"), RECORD, "put")
    assert_documented(api.put("customer:1", {"no": "body"}), RECORD, "put")
    assert_documented(api.put("-bad", {"body": 1}), RECORD, "put")
    assert_documented(api.post("batch", {"records": []}), BATCH, "post")
    assert_documented(api.post("batch", {"records": [{"record_key": "d", "body": 1}] * 2}), BATCH, "post")
    settings.API_MAX_BATCH_RECORDS = 2
    assert_documented(api.post("find", {"record_keys": ["a", "b", "c"]}), FIND, "post")
    # 401, 404, 413
    assert_documented(client.get(f"{api.base}/customer:1"), RECORD, "get")
    assert_documented(client.get(f"{api.base}/customer:1", HTTP_AUTHORIZATION="Bearer nope"), RECORD, "get")
    assert_documented(api.get("nope"), RECORD, "get")
    assert_documented(api.delete("nope"), RECORD, "delete")
    settings.API_MAX_BODY_BYTES = 100
    assert_documented(api.put("customer:1", {"body": "x" * 200}), RECORD, "put")


def test_it_validates_an_integrity_error_against_its_schema(api, environment, no_rate_limit):  # noqa: F811
    api.put("bad", {"body": 1})
    tamper(stored(environment, "bad"))

    response = api.get("bad")

    assert response.status_code == 422
    assert_documented(response, RECORD, "get")
    assert_documented(api.post("find", {"record_keys": ["bad"]}), FIND, "post")


def test_it_validates_key_unavailable_answers_against_their_schema(api, environment, byok, monkeypatch, no_rate_limit):  # noqa: F811
    assert api.put("r1", {"body": 1}).status_code == 200
    monkeypatch.setattr(kms, "decrypt", throttle)
    cache.set_cache(None)

    throttled = api.get("r1")
    batch = api.post("batch", {"records": [{"record_key": "r2", "body": 1}]})
    monkeypatch.setattr(kms, "decrypt", refuse())
    cache.clear()  # past the hold of the transient failure above
    refused = api.get("r1")

    assert throttled.status_code == 503 and throttled["Retry-After"]
    assert refused.status_code == 503 and "Retry-After" not in refused
    assert_documented(throttled, RECORD, "get")
    assert_documented(batch, BATCH, "post")
    assert_documented(refused, RECORD, "get")
    assert_documented(api.post("find", {"record_keys": ["r1"]}), FIND, "post")


def test_it_validates_a_rate_limited_answer_against_its_schema(api, settings):  # noqa: F811
    settings.API_RATE_LIMIT_PER_MINUTE = 1
    settings.REDIS_URL = ""
    ratelimit._limiter = None
    try:
        api.get("r1")
        response = api.get("r1")
    finally:
        ratelimit._limiter = None

    assert response.status_code == 429
    assert_documented(response, RECORD, "get")
    assert "Retry-After" in openapi_ref(document()["paths"][RECORD]["get"]["responses"]["429"])["headers"]


# ---------------------------------------------------------------------------
# Fuzzing with schemathesis
# ---------------------------------------------------------------------------

SCHEMA = schemathesis.openapi.from_dict(openapi.document())
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def wsgi_app():
    """The project's WSGI application, in the test's transaction: Django's test client
    does the same (it disconnects close_old_connections, which would close the connection
    holding the test transaction at the end of each request)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield wsgi_application
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@SCHEMA.parametrize()
@hypothesis_settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_it_never_answers_500_and_answers_as_documented(case, wsgi_app, environment, api_key, no_rate_limit):  # noqa: F811
    """Every operation, with generated valid and invalid input, against a managed
    environment and a valid API key of it."""
    if "environment_id" in (case.path_parameters or {}):
        case.path_parameters["environment_id"] = str(environment.public_id)
    record_key = (case.path_parameters or {}).get("record_key")
    if case.method in ("GET", "DELETE") and isinstance(record_key, str) and len(record_key) % 2 == 0:
        # Half the reads and deletes find a record (the others a 404): both answers are checked.
        try:
            records.record_put(environment=environment, record_key=record_key, body={"seeded": [1, "x", None]})
        except records.InvalidRecordInput:
            pass

    response = case.call(app=wsgi_app, headers={"Authorization": f"Bearer {api_key}"})

    case.validate_response(response, checks=CHECKS)
