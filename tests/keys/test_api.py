"""Tests of keys/api.py, the data-plane API: round trips, every error code, auth, limits."""

from __future__ import annotations

import base64
import json

import pytest

from keys import cache, crypto, kms
from keys.services import api_keys
from keys.models import AuditEvent, KeyRegistration, Record
from tests.factories import error_of, refuse, stored, tamper, throttle

Status = KeyRegistration.Status


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


def test_it_round_trips_a_record_through_the_api_under_the_managed_key(api, environment):
    body = {"name": "Ada Lovelace", "born": 1815, "tags": ["math"], "unicode": "Zürich ✓"}

    put = api.put("customer:42", {"body": body})
    got = api.get("customer:42")

    assert put.status_code == 200
    assert put.json()["key_version"] == 1 and put.json()["record_key"] == "customer:42"
    assert got.status_code == 200
    assert got.json()["body"] == body
    assert got.json()["record_key"] == "customer:42"
    assert got.json()["key_version"] == 1
    assert got.json()["updated_at"].startswith("20")
    assert got["Cache-Control"] == "no-store"
    assert b"Ada" not in bytes(stored(environment, "customer:42").ciphertext)


def test_it_round_trips_a_record_through_the_api_under_a_byok_key(api, environment, byok):  # noqa: F811
    put = api.put("r1", {"body": {"card": "4111 1111 1111 1111"}})
    got = api.get("r1")

    assert put.status_code == 200 and put.json()["key_version"] == byok.registration.version
    assert got.json()["body"] == {"card": "4111 1111 1111 1111"}
    row = stored(environment, "r1")
    assert row.registration_id == byok.registration.pk
    # The stored ciphertext opens with the customer's data key (and only with it).
    plaintext = crypto.decrypt_record(
        data_key=byok.plaintext_data_key(), envelope=bytes(row.ciphertext),
        environment_id=str(environment.public_id), record_key="r1", key_version=row.key_version,
    )
    assert json.loads(plaintext) == {"card": "4111 1111 1111 1111"}


def test_it_stores_two_different_ciphertexts_for_two_puts_of_the_same_body(api, environment):
    api.put("r1", {"body": "same"})
    first = bytes(stored(environment, "r1").ciphertext)
    api.put("r1", {"body": "same"})

    assert bytes(stored(environment, "r1").ciphertext) != first


@pytest.mark.parametrize("body", [None, 0, -1.5, "", "text", [], [1, [2]], {}, {"a": {"b": None}}, True])
def test_it_round_trips_any_json_value(api, body):
    assert api.put("r1", {"body": body}).status_code == 200
    assert api.get("r1").json()["body"] == body


def test_it_deletes_a_record(api, environment):
    api.put("r1", {"body": 1})

    response = api.delete("r1")

    assert response.status_code == 204
    assert not Record.objects.filter(environment=environment).exists()
    assert error_of(api.get("r1"))["code"] == "not_found"
    assert api.delete("r1").status_code == 404


def test_it_writes_a_batch_and_finds_it(api, environment, byok):  # noqa: F811
    batch = [{"record_key": f"customer:{i}", "body": {"i": i}} for i in range(100)]

    written = api.post("batch", {"records": batch})
    found = api.post("find", {"record_keys": ["customer:3", "customer:99", "nope"]})

    assert written.status_code == 200
    assert written.json()["count"] == 100 and written.json()["key_version"] == byok.registration.version
    assert Record.objects.filter(environment=environment).count() == 100
    assert found.status_code == 200
    assert [(r["record_key"], r["body"]) for r in found.json()["records"]] == [
        ("customer:3", {"i": 3}), ("customer:99", {"i": 99})
    ]
    assert found.json()["errors"] == [
        {"record_key": "nope", "code": "not_found", "message": "No such record in this environment."}
    ]


# ---------------------------------------------------------------------------
# Integrity
# ---------------------------------------------------------------------------


def test_it_answers_an_integrity_error_for_a_tampered_record_and_lists_it_in_find(api, environment):
    api.put("good", {"body": "fine"})
    api.put("bad", {"body": "card 4111"})
    tamper(stored(environment, "bad"))

    got = api.get("bad")
    found = api.post("find", {"record_keys": ["good", "bad"]})

    assert got.status_code == 422
    assert error_of(got)["code"] == "integrity_error"
    assert b"4111" not in got.content
    assert [r["record_key"] for r in found.json()["records"]] == ["good"]
    assert [(e["record_key"], e["code"]) for e in found.json()["errors"]] == [("bad", "integrity_error")]


def test_it_answers_an_integrity_error_for_a_ciphertext_moved_to_another_record(api, environment):
    api.put("alice", {"body": "alice's"})
    api.put("mallory", {"body": "mallory's"})
    Record.objects.filter(record_key="mallory").update(ciphertext=bytes(stored(environment, "alice").ciphertext))

    got = api.get("mallory")

    assert got.status_code == 422 and error_of(got)["code"] == "integrity_error"
    assert b"alice's" not in got.content


# ---------------------------------------------------------------------------
# Authentication and tenancy
# ---------------------------------------------------------------------------


def test_it_answers_401_without_an_api_key(client, environment):
    response = client.get(f"/api/v1/environments/{environment.public_id}/records/r1")

    assert response.status_code == 401
    assert error_of(response)["code"] == "unauthenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer byok_00000000_" + "A" * 43, "Bearer not-a-key", "Basic YWxpY2U6cGFzcw==", "Bearer ", "byok_x_y"],
)
def test_it_answers_401_for_a_wrong_or_malformed_api_key(client, environment, api_key, header):
    response = client.get(f"/api/v1/environments/{environment.public_id}/records/r1", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert error_of(response)["code"] in ("invalid_api_key", "unauthenticated")


def test_it_answers_401_for_a_key_with_the_right_prefix_and_a_wrong_secret(client, environment, api_key):
    forged = api_key[:-4] + ("AAAA" if not api_key.endswith("AAAA") else "BBBB")

    response = client.get(f"/api/v1/environments/{environment.public_id}/records/r1", HTTP_AUTHORIZATION=f"Bearer {forged}")

    assert response.status_code == 401 and error_of(response)["code"] == "invalid_api_key"


def test_it_answers_401_for_a_revoked_api_key(api, environment, alice):
    api.put("r1", {"body": 1})
    api_keys.api_key_revoke(api_key=environment.api_keys.get(), actor=alice)

    response = api.get("r1")

    assert response.status_code == 401
    assert error_of(response)["code"] == "api_key_revoked"


def test_it_answers_404_for_another_environments_api_key(client, environment, environment_b, charlie, api):
    api.put("r1", {"body": "org A's"})
    _, key_b = api_keys.api_key_create(environment=environment_b, name="b", actor=charlie)

    response = client.get(
        f"/api/v1/environments/{environment.public_id}/records/r1", HTTP_AUTHORIZATION=f"Bearer {key_b}"
    )
    unknown = client.get(
        "/api/v1/environments/00000000-0000-0000-0000-000000000000/records/r1", HTTP_AUTHORIZATION=f"Bearer {key_b}"
    )

    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert response.json() == unknown.json()
    assert b"org A" not in response.content


def test_it_answers_404_for_a_malformed_environment_id_and_unknown_paths(api):
    assert error_of(api.call("GET", "/api/v1/environments/not-a-uuid/records/r1"))["code"] == "not_found"
    response = api.call("GET", "/api/v1/nothing/here")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"


def test_it_updates_last_used_at_at_most_once_a_minute(api, environment):
    api.get("r1")
    first = environment.api_keys.get().last_used_at
    api.get("r1")

    assert first is not None
    assert environment.api_keys.get().last_used_at == first


def test_it_needs_no_csrf_token(environment, api_key):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.put(
        f"/api/v1/environments/{environment.public_id}/records/r1", json.dumps({"body": 1}),
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )

    assert response.status_code == 200


# ---------------------------------------------------------------------------
# Bad input and limits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"{not json", b"", b"\xff\xfe", b'{"body": NaN}', b'{"body": Infinity}'])
def test_it_answers_400_invalid_json(api, payload):
    response = api.put("r1", payload)

    assert response.status_code == 400 and error_of(response)["code"] == "invalid_json"


@pytest.mark.parametrize("number", [b"1e400", b"-1e999999", b"1" + b"0" * 400 + b".5"])
def test_it_says_a_number_is_beyond_a_float_not_that_it_is_nan(api, byok, number):  # noqa: F811
    """A finite JSON number past 64-bit floats parses as an infinity: the answer names the
    range (it said "no NaN or Infinity", which the client never sent)."""
    response = api.put("r1", b'{"body": {"amount": ' + number + b"}}")

    assert response.status_code == 400 and error_of(response)["code"] == "invalid_request"
    assert "beyond the range of a 64-bit float" in error_of(response)["message"]
    assert not Record.objects.exists()


# Half of a UTF-16 surrogate pair: JSON can escape it and Python's json accepts it (raw
# bytes ED A0 80 too), but it is not Unicode text. It used to be refused as "A record body
# must be a JSON value (no NaN or Infinity)", which sent the client looking for a NaN.
LONE_SURROGATE_BODIES = [
    ("put", b'{"body": "\\ud800"}', "invalid_request", "A record body"),
    ("put", b'{"body": {"name": "ok \\udfff"}}', "invalid_request", "A record body"),
    ("put", b'{"body": {"\\udc00": 1}}', "invalid_request", "A record body"),
    ("put", b'{"body": "\xed\xa0\x80"}', "invalid_request", "A record body"),
    ("batch", b'{"records": [{"record_key": "r1", "body": ["\\ud83d"]}]}', "invalid_request", "records[0]: A record body"),
    ("batch", b'{"records": [{"record_key": "r\\ud800", "body": 1}]}', "invalid_record_key", "records[0]: A record key"),
    ("find", b'{"record_keys": ["\\ud800"]}', "invalid_record_key", "A record key"),
]


@pytest.mark.parametrize("where,payload,code,what", LONE_SURROGATE_BODIES)
def test_it_answers_400_saying_the_text_is_not_valid_unicode_for_a_lone_surrogate(api, byok, where, payload, code, what):  # noqa: F811
    response = api.put("r1", payload) if where == "put" else api.post(where, payload)

    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == code
    assert error["message"].startswith(f"{what} must be valid Unicode text: it contains a lone surrogate")
    assert "NaN" not in error["message"]
    assert not Record.objects.exists()


def test_it_still_stores_a_surrogate_pair_escaped_in_json(api, byok):  # noqa: F811
    """Both halves of the pair make one character (U+1F600): valid, and returned as such."""
    assert api.put("r1", b'{"body": "\\ud83d\\ude00"}').status_code == 200

    assert api.get("r1").json()["body"] == "\U0001F600"


# CPython refuses to convert a decimal string of more than 4,300 digits to an int
# (sys.get_int_max_str_digits, CVE-2020-10735), json.loads included. The JSON is
# well-formed: it used to be answered "not valid JSON".
LONG = "1" * 4301
LONG_NUMBER_BODIES = [
    ("put", '{"body": ' + LONG + "}"),
    ("put", '{"body": {"n": [1, -' + LONG + "]}}"),
    ("batch", '{"records": [{"record_key": "r1", "body": 1}, {"record_key": "r2", "body": ' + LONG + "}]}"),
    ("batch", '{"records": [{"record_key": ' + LONG + ', "body": 1}]}'),
    ("find", '{"record_keys": ["r1", ' + LONG + "]}"),
]


@pytest.mark.parametrize("where,payload", LONG_NUMBER_BODIES)
def test_it_answers_400_saying_a_number_is_too_long_for_an_integer_of_more_than_4300_digits(
    api, environment, where, payload
):
    response = api.put("r1", payload) if where == "put" else api.post(where, payload)

    assert response.status_code == 400
    assert error_of(response) == {
        "code": "invalid_request",
        "message": "A number in the body has more than 4,300 digits; send it as a string.",
    }
    assert not Record.objects.filter(environment=environment).exists()


@pytest.mark.parametrize(
    "payload", [b'{"body": NaN, "n": ' + LONG.encode() + b"}", b'{"body": ' + LONG.encode() + b",}", b'{"body": 1' + LONG.encode()]
)
def test_it_still_answers_invalid_json_when_the_body_is_broken_before_or_besides_a_long_number(api, payload):
    """Only a long integer that is the parser's first failure is "too long"; a NaN before
    it, or broken syntax after it, is still invalid JSON."""
    response = api.put("r1", payload)

    assert response.status_code == 400 and error_of(response)["code"] == "invalid_json", response.content


@pytest.mark.parametrize("number", [int("9" * 4300), -int("9" * 4300)])
def test_it_round_trips_an_integer_of_4300_digits_in_put_batch_and_find(api, environment, number):
    """The longest integer accepted is encoded again (stored, returned) without fail."""
    text = str(number)

    put = api.put("r1", '{"body": {"n": ' + text + "}}")
    batch = api.post("batch", '{"records": [{"record_key": "r2", "body": [' + text + "]}]}")
    got = api.get("r1")
    found = api.post("find", {"record_keys": ["r1", "r2"]})

    assert put.status_code == 200 and batch.status_code == 200, (put.content, batch.content)
    assert got.status_code == 200 and json.loads(got.content)["body"] == {"n": number}
    assert ('"n":' + text + "}") in got.content.decode()
    bodies = {r["record_key"]: r["body"] for r in json.loads(found.content)["records"]}
    assert bodies == {"r1": {"n": number}, "r2": [number]}


@pytest.mark.parametrize("payload", [[], {"nobody": 1}, '"just a string"', 42])
def test_it_answers_400_invalid_request_for_a_put_of_the_wrong_shape(api, payload):
    response = api.put("r1", payload)

    assert response.status_code == 400 and error_of(response)["code"] == "invalid_request"


@pytest.mark.parametrize("record_key", ["has%20space", "a%2Fb", "nested/key", "-dash", "x" * 256, "caf%C3%A9", "%00"])
def test_it_answers_400_invalid_record_key(api, record_key):
    for response in (api.call("GET", f"{api.base}/{record_key}"), api.put(record_key, {"body": 1})):
        assert response.status_code == 400
        assert error_of(response)["code"] == "invalid_record_key"


def test_it_keeps_batch_and_find_for_the_bulk_endpoints(api, environment):
    # "batch" and "find" are reserved record keys: these paths are the bulk endpoints (POST only).
    for response in (api.put("batch", {"body": 1}), api.get("find"), api.delete("batch"), api.put("find", {"body": 1})):
        assert response.status_code == 405
        assert error_of(response) == {"code": "method_not_allowed", "message": "Use POST."}
        assert response["Allow"] == "POST"
    assert not Record.objects.filter(environment=environment).exists()


@pytest.mark.parametrize("reserved", ["batch", "find"])
def test_it_answers_400_invalid_record_key_for_a_reserved_key_in_a_batch_or_find_body(api, environment, reserved):
    written = api.post("batch", {"records": [{"record_key": reserved, "body": 1}]})
    found = api.post("find", {"record_keys": [reserved]})

    for response in (written, found):
        assert response.status_code == 400
        assert error_of(response)["code"] == "invalid_record_key"
        assert "reserved" in error_of(response)["message"]
    assert not Record.objects.filter(environment=environment).exists()


def test_it_answers_413_for_a_body_over_the_limit(api, settings, environment):
    settings.API_MAX_BODY_BYTES = 1000

    response = api.put("r1", {"body": "x" * 1000})

    assert response.status_code == 413 and error_of(response)["code"] == "body_too_large"
    assert not Record.objects.filter(environment=environment).exists()


def test_it_answers_413_on_a_declared_content_length_without_reading_the_body(api, settings):
    settings.API_MAX_BODY_BYTES = 1000

    response = api.put("r1", b'{"body": 1}', CONTENT_LENGTH="5000000")

    assert response.status_code == 413 and error_of(response)["code"] == "body_too_large"


def test_it_answers_413_for_a_batch_over_the_byte_limit(api, settings):
    settings.API_MAX_BODY_BYTES = 1000  # batch requests may be 16 x that

    response = api.post("batch", {"records": [{"record_key": "r1", "body": "x" * 17_000}]})

    assert response.status_code == 413


def test_it_answers_400_for_a_batch_over_the_record_limit(api, settings, environment):
    settings.API_MAX_BATCH_RECORDS = 5

    batch = api.post("batch", {"records": [{"record_key": f"r{i}", "body": i} for i in range(6)]})
    find = api.post("find", {"record_keys": [f"r{i}" for i in range(6)]})

    assert batch.status_code == 400 and error_of(batch)["code"] == "too_many_records"
    assert find.status_code == 400 and error_of(find)["code"] == "too_many_records"
    assert not Record.objects.filter(environment=environment).exists()


def test_it_answers_400_for_the_default_limit_of_1000_records(api, environment):
    response = api.post("batch", {"records": [{"record_key": f"r{i}", "body": i} for i in range(1001)]})

    assert response.status_code == 400 and error_of(response)["code"] == "too_many_records"


@pytest.mark.parametrize(
    "payload,code",
    [
        ({"records": "nope"}, "invalid_request"),
        ({"records": [{"record_key": "r1"}]}, "invalid_request"),
        ({"records": []}, "invalid_request"),
        ({"records": [{"record_key": "bad key", "body": 1}]}, "invalid_record_key"),
        ({"records": [{"record_key": "r1", "body": 1}, {"record_key": "r1", "body": 2}]}, "duplicate_record_key"),
    ],
)
def test_it_refuses_a_bad_batch_and_writes_nothing(api, environment, payload, code):
    response = api.post("batch", payload)

    assert response.status_code == 400 and error_of(response)["code"] == code
    assert not Record.objects.filter(environment=environment).exists()


def test_it_refuses_a_bad_find(api):
    assert error_of(api.post("find", {"keys": []}))["code"] == "invalid_request"
    assert error_of(api.post("find", {"record_keys": ["ok", "not ok"]}))["code"] == "invalid_record_key"


@pytest.mark.parametrize(
    "method,what", [("POST", "r1"), ("PATCH", "r1"), ("GET", "batch"), ("PUT", "find"), ("DELETE", "batch")]
)
def test_it_answers_405_with_allow_for_the_wrong_method(api, method, what):
    response = api.call(method, f"{api.base}/{what}")

    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert response["Allow"] in ("GET, PUT, DELETE, HEAD", "POST")


# ---------------------------------------------------------------------------
# KMS refusals and outages
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [kms.Reason.DISABLED, kms.Reason.PENDING_DELETION, kms.Reason.ACCESS_DENIED])
def test_it_answers_503_key_unavailable_and_marks_the_version_inaccessible_when_kms_refuses(
    api, environment, byok, monkeypatch, reason  # noqa: F811
):
    """GIVEN records under an active BYOK version and an empty cache
    WHEN KMS refuses Decrypt (the customer disabled the key, scheduled its deletion or removed the policy)
    THEN reads and writes answer 503 key_unavailable with the reason, without Retry-After,
    the version becomes inaccessible (audited as the data plane), and KMS is not asked again."""
    api.put("r1", {"body": 1})
    cache.clear()
    calls = []
    monkeypatch.setattr(kms, "decrypt", lambda **kw: calls.append(1) or refuse(reason)(**kw))

    got = api.get("r1")
    put = api.put("r2", {"body": 2})

    assert got.status_code == 503
    assert error_of(got)["code"] == "key_unavailable" and error_of(got)["reason"] == reason
    assert "Retry-After" not in got
    assert put.status_code == 503 and error_of(put)["reason"] == reason
    byok.registration.refresh_from_db()
    assert byok.registration.status == Status.INACCESSIBLE
    assert byok.registration.inaccessible_reason == reason
    assert AuditEvent.objects.filter(registration=byok.registration, actor_label="data plane").count() == 1
    assert calls == [1]  # the second request was refused on the row's status
    assert not Record.objects.filter(record_key="r2").exists()


def test_it_answers_503_with_retry_after_and_changes_nothing_when_kms_throttles(api, environment, byok, monkeypatch):  # noqa: F811
    api.put("r1", {"body": 1})
    cache.clear()
    monkeypatch.setattr(kms, "decrypt", throttle)

    got = api.get("r1")

    assert got.status_code == 503
    assert error_of(got)["code"] == "key_unavailable" and error_of(got)["reason"] == "throttled"
    assert int(got["Retry-After"]) > 0
    byok.registration.refresh_from_db()
    assert byok.registration.status == Status.ACTIVE
    assert not AuditEvent.objects.filter(registration=byok.registration, actor_label="data plane").exists()

    monkeypatch.undo()
    # Held for TRANSIENT_FAILURE_HOLD_SECONDS: KMS is not asked again at once...
    held = api.get("r1")
    assert held.status_code == 503 and error_of(held)["reason"] == "throttled" and int(held["Retry-After"]) > 0
    cache.clear()  # ...and once the hold is over (cleared here), it is asked: never cached as a key.
    assert api.get("r1").status_code == 200


def test_it_answers_503_unreachable_when_kms_cannot_be_reached(api, byok, monkeypatch, settings):  # noqa: F811
    settings.AWS_KMS_ENDPOINT_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    settings.KMS_CONNECT_TIMEOUT_SECONDS = 0.5

    response = api.put("r1", {"body": 1})

    assert response.status_code == 503
    assert error_of(response)["reason"] == "unreachable"
    assert "Retry-After" in response


def test_it_answers_503_for_a_version_already_inaccessible_without_calling_kms(api, environment, byok, monkeypatch):  # noqa: F811
    api.put("r1", {"body": 1})
    KeyRegistration.objects.filter(pk=byok.registration.pk).update(
        status=Status.INACCESSIBLE, restore_status=Status.ACTIVE, inaccessible_reason="pending_deletion"
    )
    monkeypatch.setattr(kms, "decrypt", lambda **kw: pytest.fail("KMS must not be called"))

    got = api.get("r1")
    found = api.post("find", {"record_keys": ["r1"]})

    assert error_of(got)["reason"] == "pending_deletion"
    assert found.status_code == 200
    assert found.json()["errors"][0]["code"] == "key_unavailable"
    assert found.json()["errors"][0]["reason"] == "pending_deletion"


def test_it_answers_503_no_active_version(api, environment):
    KeyRegistration.objects.filter(environment=environment).update(status=Status.DECRYPT_ONLY)

    response = api.put("r1", {"body": 1})

    assert response.status_code == 503 and error_of(response)["reason"] == "no_active_version"


def test_it_never_answers_plaintext_or_500_for_garbage_in_the_ciphertext_column(api, environment):
    api.put("r1", {"body": "secret"})
    Record.objects.filter(record_key="r1").update(ciphertext=base64.b64encode(b"garbage"))

    response = api.get("r1")

    assert response.status_code == 422 and error_of(response)["code"] == "integrity_error"
