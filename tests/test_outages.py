"""Outages are answered as outages (portal/outages.py): 503 with Retry-After, a WARNING
once per interval, never an ERROR line or a mail to ADMINS per request; and the API reads
chunked bodies, answers HEAD wherever GET works, and no nesting depth gives a 500."""

import io
import json
import logging
import socket
import time

import pytest
from django.conf import settings
from django.core import mail
from django.db import connection
from django.test import Client

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


@pytest.mark.django_db(transaction=True)
def test_it_answers_503_within_the_connect_timeout_when_the_database_accepts_and_never_answers(
    client, environment, alice, warnings_and_errors
):
    """A database that accepts the TCP connection and says nothing (hung, or a half-dead
    path) must not hold the request: the handshake gives up after the connect timeout."""
    if connection.vendor != "postgresql":
        pytest.skip("needs a database server to take away")
    _, key = api_keys.api_key_create(environment=environment, name="app", actor=alice)
    saved = dict(connection.settings_dict)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes the handshake; nothing ever reads or answers
    connection.close()
    connection.settings_dict["HOST"], connection.settings_dict["PORT"] = "127.0.0.1", str(silent.getsockname()[1])
    connection.settings_dict["OPTIONS"] = {**saved["OPTIONS"], "connect_timeout": 1}
    try:
        started = time.monotonic()
        answer = client.get(
            f"/api/v1/environments/{environment.public_id}/records/r1", HTTP_AUTHORIZATION=f"Bearer {key}"
        )
        waited = time.monotonic() - started
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
        silent.close()
    assert answer.status_code == 503 and error_of(answer)["code"] == "service_unavailable"
    assert waited < 10, waited  # 1 s per address libpq tries; unbounded before
    assert settings.DATABASES["default"]["OPTIONS"]["connect_timeout"] == settings.DATABASE_CONNECT_TIMEOUT_SECONDS


@pytest.mark.django_db(transaction=True)
def test_a_portal_page_answers_503_not_a_500_and_a_mail_when_the_database_is_unreachable(
    alice, mails_to_admins, warnings_and_errors, request
):
    browser = Client(raise_request_exception=False)
    browser.force_login(alice)  # the session is read from the database on every page
    request.getfixturevalue("database_down")

    pages = [browser.get("/"), browser.get("/")]

    assert [p.status_code for p in pages] == [503, 503]
    assert int(pages[0]["Retry-After"]) > 0
    assert b"cannot reach its database" in pages[0].content
    assert mails_to_admins == []
    assert [r for r in warnings_and_errors.records if r.levelno >= logging.ERROR] == []
    assert len([r for r in warnings_and_errors.records if r.name == "portal.outages"]) == 1


@pytest.mark.django_db(transaction=True)
def test_metrics_scrapes_answer_and_say_the_outage_once_when_the_database_is_unreachable(
    client, settings, mails_to_admins, warnings_and_errors, request
):
    settings.METRICS_TOKEN = "metrics-token-for-outage-test"
    request.getfixturevalue("database_down")

    scrapes = [client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-token-for-outage-test") for _ in range(3)]

    assert [s.status_code for s in scrapes] == [200, 200, 200]
    assert b"byok_api_requests_total" in scrapes[0].content or b"# HELP" in scrapes[0].content
    assert [r for r in warnings_and_errors.records if r.exc_info] == []  # no traceback per scrape
    assert len([r for r in warnings_and_errors.records if r.name == "portal.outages"]) == 1


def test_other_errors_on_a_page_are_still_djangos_500(rf):
    from portal.views import server_error

    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        response = server_error(rf.get("/"))
    assert response.status_code == 500 and not getattr(response, "_has_been_logged", False)


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
    # Error answers to a HEAD have no body either (gunicorn warns of one on every such answer).
    assert head_missing.status_code == 404 and head_missing.content == b""
    assert int(head_missing["Content-Length"]) == len(api.get("nothing-here").content)
    head_post_only = api.call("HEAD", f"{api.base}/find")
    assert head_post_only.status_code == 405 and head_post_only.content == b""
    unauthenticated = client.head(f"{api.base}/r1")
    assert unauthenticated.status_code == 401 and unauthenticated.content == b""


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
