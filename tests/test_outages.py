"""Outages are answered as outages (portal/outages.py): 503 with Retry-After, a WARNING
once per interval, never an ERROR line or a mail to ADMINS per request; and the API reads
chunked bodies, answers HEAD wherever GET works, and no nesting depth gives a 500."""

import io
import json
import logging

import pytest
from django.core import mail
from django.db import connection

from keys import cache, kms
from keys.services import api_keys
from portal import outages
from tests.factories import error_of, throttle
from tests.support import free_port


@pytest.fixture(autouse=True)
def fresh_intervals():
    outages.reset()
    yield
    outages.reset()


@pytest.fixture
def mails_to_admins(settings):
    settings.ADMINS = [("Ops", "ops@example.org")]
    settings.DEBUG = False
    return mail.outbox


@pytest.fixture
def warnings_and_errors(caplog):
    caplog.set_level(logging.INFO)
    return caplog


@pytest.fixture
def database_down():
    """The default connection points at a port nothing listens on, until the test ends."""
    if connection.vendor != "postgresql":
        pytest.skip("needs a database server to take away")
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["HOST"], connection.settings_dict["PORT"] = "127.0.0.1", str(free_port())
    yield
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(saved)


@pytest.mark.django_db(transaction=True)
def test_it_answers_503_service_unavailable_when_the_database_is_unreachable(
    client, environment, alice, mails_to_admins, warnings_and_errors, request
):
    _, key = api_keys.api_key_create(environment=environment, name="app", actor=alice)
    base = f"/api/v1/environments/{environment.public_id}/records"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    request.getfixturevalue("database_down")

    answers = [
        client.get(f"{base}/customer-1", **auth),
        client.put(f"{base}/customer-1", '{"body": 1}', content_type="application/json", **auth),
        client.delete(f"{base}/customer-1", **auth),
        client.post(f"{base}/find", '{"record_keys": ["a"]}', content_type="application/json", **auth),
        client.get("/healthz"),
        client.get("/healthz"),
    ]

    for answer in answers[:4]:
        assert answer.status_code == 503
        assert error_of(answer)["code"] == "service_unavailable"
        assert int(answer["Retry-After"]) > 0
    for answer in answers[4:]:
        assert answer.status_code == 503 and int(answer["Retry-After"]) > 0
        assert answer.json()["database"]["ok"] is False
    assert mails_to_admins == []
    assert [r for r in warnings_and_errors.records if r.levelno >= logging.ERROR] == []
    outage_lines = [r for r in warnings_and_errors.records if r.name == "portal.outages"]
    assert len(outage_lines) == 1 and outage_lines[0].levelno == logging.WARNING
    assert "database unreachable" in outage_lines[0].getMessage()


def test_it_logs_an_outage_again_after_the_interval_with_the_count(warnings_and_errors, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(outages.time, "monotonic", lambda: clock[0])
    for _ in range(5):
        outages.database_unreachable(OSError("down"))
    clock[0] += outages.LOG_INTERVAL_SECONDS
    outages.database_unreachable(OSError("down"))

    lines = [r.getMessage() for r in warnings_and_errors.records if r.name == "portal.outages"]
    assert len(lines) == 2
    assert "(1 request(s)" in lines[0] and "(5 request(s)" in lines[1]


@pytest.mark.django_db
def test_it_warns_of_key_unavailable_with_the_environment_and_reason_never_the_record_key(
    api, environment, byok, monkeypatch, mails_to_admins, warnings_and_errors
):
    api.put("national-id:790203-1234", {"body": 1})
    cache.clear()
    monkeypatch.setattr(kms, "decrypt", throttle)

    answers = [api.get("national-id:790203-1234") for _ in range(3)]

    assert {a.status_code for a in answers} == {503}
    assert mails_to_admins == []
    assert [r for r in warnings_and_errors.records if r.levelno >= logging.ERROR] == []
    lines = [r for r in warnings_and_errors.records if r.name == "portal.outages"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert str(environment.public_id) in lines[0].getMessage() and "throttled" in lines[0].getMessage()
    assert all("790203-1234" not in r.getMessage() for r in warnings_and_errors.records)


@pytest.mark.django_db
def test_it_reads_a_chunked_body_that_the_server_de_chunked(api):
    body = json.dumps({"body": {"chunked": True}}).encode()
    # What gunicorn hands over for Transfer-Encoding: chunked: no Content-Length, the
    # de-chunked bytes in wsgi.input, and wsgi.input_terminated.
    put = api.put(
        "chunky", b"", CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked",
        **{"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True},
    )

    assert put.status_code == 200, put.content
    assert api.get("chunky").json()["body"] == {"chunked": True}


@pytest.mark.django_db
def test_it_refuses_a_chunked_body_past_the_limit_with_413(api, settings):
    settings.API_MAX_BODY_BYTES = 100
    put = api.put(
        "chunky", b"", CONTENT_LENGTH="",
        **{"wsgi.input": io.BytesIO(b'{"body": "' + b"x" * 500 + b'"}'), "wsgi.input_terminated": True},
    )
    assert put.status_code == 413 and error_of(put)["code"] == "body_too_large"


@pytest.mark.django_db
def test_it_answers_head_wherever_get_answers(api, client):
    api.put("r1", {"body": {"n": 1}})
    get = api.get("r1")

    head = api.call("HEAD", f"{api.base}/r1")
    head_openapi = client.head("/api/v1/openapi.json")
    head_missing = api.call("HEAD", f"{api.base}/nothing-here")

    assert head.status_code == 200 and head.content == b""
    assert int(head["Content-Length"]) == len(get.content)
    assert head_openapi.status_code == 200
    assert head_missing.status_code == 404
    assert api.call("HEAD", f"{api.base}/find").status_code == 405


@pytest.mark.django_db
@pytest.mark.parametrize("depth", [10, 500, 938, 939, 940, 990, 5000, 100_000])
def test_it_never_answers_500_for_any_nesting_depth(api, depth):
    nested = "[" * depth + "]" * depth
    put = api.put("deep", '{"body": ' + nested + "}")
    batch = api.post("batch", '{"records": [{"record_key": "deep", "body": ' + nested + "}]}")

    for answer in (put, batch):
        assert answer.status_code in (200, 400), (depth, answer.status_code)
        if answer.status_code == 400:
            assert error_of(answer)["code"] in ("invalid_json", "invalid_request")
    if put.status_code == 200:
        assert api.get("deep").status_code == 200
