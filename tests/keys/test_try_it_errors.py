"""The "Try it" page (keys/views/try_it.py) never answers 500 for what a user types, and its
record key and body never reach an error report or a log line, even on a genuine 500
(issue 13, item 10; docs/architecture.md, "Invariants", 1)."""

from __future__ import annotations

import json

import pytest
from django.core import mail

from keys.services import records
from keys.models import Record

RECORD_KEY_CANARY = "patient:canary-3b8e41d7"
BODY_CANARY = "body-canary-9f27c5e0"


def try_it_url(environment) -> str:
    return f"/environments/{environment.public_id}/try-it/"


@pytest.mark.parametrize("depth", [990, 5_000, 100_000])
@pytest.mark.parametrize("opener,closer", [("[", "]"), ('{"a":', "}")])
def test_it_refuses_deeply_nested_json_as_a_form_error_and_stores_nothing(
    client_for, environment, alice, depth, opener, closer
):
    body = opener * depth + "1" + closer * depth

    response = client_for(alice).post(try_it_url(environment), {"record_key": "deep", "body": body})

    assert response.status_code == 200
    assert b"nested too deeply" in response.content
    assert not Record.objects.exists()


def test_it_refuses_a_body_that_parses_but_cannot_be_encoded_again(client_for, environment, alice, monkeypatch):
    """GIVEN json.dumps exhausts the stack for a body json.loads accepted
    WHEN it is posted THEN a form error, nothing stored."""

    dumps = json.dumps

    def exhausted(value, *args, **kwargs):
        if value == [[[1]]]:
            raise RecursionError("maximum recursion depth exceeded while encoding a JSON object")
        return dumps(value, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", exhausted)

    response = client_for(alice).post(try_it_url(environment), {"record_key": "r1", "body": "[[[1]]]"})

    assert response.status_code == 200
    assert b"nested too deeply" in response.content
    assert not Record.objects.exists()


def test_it_says_a_number_is_too_long_for_an_integer_of_more_than_4300_digits_and_stores_nothing(
    client_for, environment, alice
):
    """It is valid JSON that Python will not convert (sys.get_int_max_str_digits): the form
    says so, as the API does, instead of "This is not valid JSON"."""
    body = '{"n": ' + "1" * 4301 + "}"

    response = client_for(alice).post(try_it_url(environment), {"record_key": "r1", "body": body})

    assert response.status_code == 200
    assert "A number in the body has more than 4,300 digits; send it as a string." in response.content.decode()
    assert b"not valid JSON" not in response.content and b"set_int_max_str_digits" not in response.content
    assert not Record.objects.exists()


def test_it_stores_and_reads_back_an_integer_of_4300_digits(client_for, environment, alice):
    number = "9" * 4300

    response = client_for(alice).post(try_it_url(environment), {"record_key": "r1", "body": "[-" + number + "]"})

    assert response.status_code == 200
    assert "-" + number in response.content.decode()
    assert records.record_get(environment=environment, record_key="r1").body == [-int(number)]


def test_it_still_stores_a_moderately_nested_body(client_for, environment, alice):
    body = "[" * 200 + "1" + "]" * 200

    response = client_for(alice).post(try_it_url(environment), {"record_key": "nested", "body": body})

    assert response.status_code == 200
    assert records.record_get(environment=environment, record_key="nested").body == json.loads(body)


@pytest.fixture
def reporting(settings, client):
    settings.ADMINS = [("Ops", "ops@example.org")]
    settings.DEBUG = False
    client.raise_request_exception = False
    return mail.outbox


@pytest.mark.parametrize("where", ["record_stored", "record_put"])
def test_a_genuine_500_of_try_it_carries_neither_record_key_nor_body_in_mail_or_logs(
    client_for, environment, alice, reporting, console, monkeypatch, where
):
    """GIVEN a fault inside the records service whose message and frames hold the record
    key and body WHEN the Try it form is posted THEN a 500, mailed to ADMINS and logged,
    with neither the record key nor the body anywhere."""

    def explode(*, environment, record_key, body=None, **kwargs):
        held = {"record_key": record_key, "body": body}  # noqa: F841 (in the frame, as real code would hold it)
        raise RuntimeError(f"forced failure for record {record_key}")

    monkeypatch.setattr(records, where, explode)
    posted_body = json.dumps({"note": BODY_CANARY, "id": RECORD_KEY_CANARY})

    response = client_for(alice).post(try_it_url(environment), {"record_key": RECORD_KEY_CANARY, "body": posted_body})

    assert response.status_code == 500
    assert len(reporting) == 1
    report = reporting[0]
    mailed = report.subject + report.body + "".join(str(a[0]) for a in report.alternatives)
    assert "forced failure for record" in mailed and "try-it" in mailed  # it is the report of this fault
    assert "explode" in mailed  # the frames are there, their variables cleansed
    logged = console.getvalue()
    assert "forced failure for record" in logged
    for canary in ("canary-3b8e41d7", BODY_CANARY):
        assert canary not in mailed
        assert canary not in logged


@pytest.mark.parametrize("body", ['"\\ud800"', '{"name": "\\udfff"}'])
def test_it_says_a_body_with_a_lone_surrogate_is_not_valid_unicode_and_stores_nothing(client_for, environment, alice, body):
    response = client_for(alice).post(try_it_url(environment), {"record_key": "r1", "body": body})

    assert response.status_code == 200
    assert b"must be valid Unicode text: it contains a lone surrogate" in response.content
    assert b"NaN" not in response.content
    assert not Record.objects.exists()
