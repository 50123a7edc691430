"""Record keys never reach logs, metrics or error reports (docs/architecture.md, "Invariants", 1; issue 12
item 5): a record key may itself be regulated data (an e-mail address, a national ID).

A canary record key is planted and used on every path of the API — success, 404, 400,
405, 413, 422, 503 ``key_unavailable``, 503 ``service_unavailable`` and a 500 whose
exception text holds it — with ADMINS set and DEBUG off; then every formatted log line
(the configured JSON handlers, all loggers at DEBUG), every mail in ``mail.outbox`` and a
``/metrics`` scrape are searched for it."""

import json
import logging

import pytest
from django.core import mail
from django.db import connection

from keys import cache, kms
from keys.models import Record
from keys.services import records
from portal import outages
from tests.factories import throttle
from tests.support import free_port

CANARY = "national-id:canary-5f1e9b27"
TOKEN = "canary-metrics-token-0123456789"
# What the access log says instead: the route name.
ROUTE_WORDS = ("record", "records_find", "records_batch")


@pytest.fixture
def reporting(settings):
    settings.ADMINS = [("Ops", "ops@example.org")]
    settings.DEBUG = False
    settings.METRICS_TOKEN = TOKEN
    outages.reset()
    return mail.outbox


def scrape(client) -> str:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    return response.content.decode()


def everything_written(console, client) -> str:
    mails = "".join(
        m.subject + m.body + "".join(str(a[0]) for a in getattr(m, "alternatives", [])) for m in mail.outbox
    )
    return console.getvalue() + "\n" + mails + "\n" + scrape(client)


@pytest.mark.django_db
def test_the_canary_record_key_appears_in_no_log_line_mail_or_metric_on_any_path(
    api, client, console, environment, byok, monkeypatch, reporting, settings
):
    logging.getLogger("keys.api.access").setLevel(logging.DEBUG)
    answers = {}
    answers["put"] = api.put(CANARY, {"body": {"n": 1}})
    answers["get"] = api.get(CANARY)
    answers["head"] = api.call("HEAD", f"{api.base}/{CANARY}")
    answers["find"] = api.post("find", {"record_keys": [CANARY, CANARY + "-missing"]})
    answers["batch"] = api.post("batch", {"records": [{"record_key": CANARY + "-b", "body": 1}]})
    answers["404"] = api.get(CANARY + "-missing")
    answers["400 json"] = api.put(CANARY, "{not json")
    answers["400 key"] = api.put(CANARY + "/x?", {"body": 1})
    answers["405"] = api.call("PATCH", f"{api.base}/{CANARY}")
    answers["404 path"] = api.call("GET", f"/api/v1/{CANARY}/nowhere")
    # Look-alikes of an API path (a base URL ending in "/", "/./", upper case) are the
    # API's JSON 404 too, not the portal's page, whose log lines carry the path.
    answers["404 //api"] = api.call("GET", "/", PATH_INFO=f"/{api.base}/{CANARY}")
    answers["404 /./api"] = api.call("GET", f"/.{api.base}/{CANARY}")
    answers["404 /API"] = api.call("GET", api.base.replace("/api/", "/API/", 1) + f"/{CANARY}")
    settings.API_MAX_BODY_BYTES = 10
    answers["413"] = api.put(CANARY, {"body": "x" * 100})
    settings.API_MAX_BODY_BYTES = 1024 * 1024
    row = Record.objects.get(record_key=CANARY)
    Record.objects.filter(pk=row.pk).update(ciphertext=bytes(row.ciphertext)[:-1] + b"\x00")
    answers["422"] = api.get(CANARY)
    cache.clear()
    monkeypatch.setattr(kms, "decrypt", throttle)
    answers["503 key"] = api.get(CANARY)
    monkeypatch.setattr(records, "record_read", _explode)
    answers["500"] = api.get(CANARY)

    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {
        "put": 200, "get": 200, "head": 200, "find": 200, "batch": 200, "404": 404, "400 json": 400,
        "400 key": 400, "405": 405, "404 path": 404, "404 //api": 404, "404 /./api": 404, "404 /API": 404,
        "413": 413, "422": 422, "503 key": 503, "500": 500,
    }
    for name in ("404 //api", "404 /./api", "404 /API"):
        assert json.loads(answers[name].content)["error"]["code"] == "not_found", name
    written = everything_written(console, client)
    assert '"logger": "keys.api.access"' in written and '"route": "record"' in written
    assert "data-plane API error" in written  # the 500 was logged, without the canary
    assert "byok_api_requests_total" in written
    assert "canary-5f1e9b27" not in written


@pytest.mark.django_db(transaction=True)
def test_the_canary_record_key_stays_out_when_the_database_is_unreachable(
    client, console, environment, alice, reporting
):
    if connection.vendor != "postgresql":
        pytest.skip("needs a database server to take away")
    from keys.services import api_keys

    _, key = api_keys.api_key_create(environment=environment, name="app", actor=alice)
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        answer = client.get(
            f"/api/v1/environments/{environment.public_id}/records/{CANARY}", HTTP_AUTHORIZATION=f"Bearer {key}"
        )
    finally:
        connection.close()
        connection.settings_dict.update(saved)
    assert answer.status_code == 503 and json.loads(answer.content)["error"]["code"] == "service_unavailable"
    written = everything_written(console, client)
    assert "database unreachable" in written
    assert "canary-5f1e9b27" not in written


def _explode(**kwargs):
    raise RuntimeError(f"forced failure for record {kwargs.get('record_key')}")
