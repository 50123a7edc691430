"""Tests of keys/records.py, the data-plane services (write and read paths).

Platform-managed keys need no KMS. BYOK keys run against moto in-process (``mock_aws``):
the customer's KMS key and encrypted data key are made there, and the registration row is
built directly with sealed IAM credentials, then made active. moto does not enforce key
states, so KMS refusals and throttling are injected by patching ``keys.kms.decrypt`` with
the adapter's own error types (docs/architecture.md, "Testing KMS honestly").

The fixtures (``aws``, ``byok``) are in tests/conftest.py and the helpers in
tests/factories.py, shared by every module that needs them.
"""

from __future__ import annotations

import base64
import logging

import pytest
from django.conf import settings
from django.db import connection

from keys import cache, crypto, kms
from keys.services import records
from keys.services import sealing
from keys.models import AuditEvent, KeyRegistration, Record
from keys.services.records import IntegrityFailure, KeyUnavailable, RecordNotFound
from tests.factories import (
    SECRET_ACCESS_KEY,
    active,
    make_byok,
    refuse,
    stored,
    tamper,
    throttle,
)

Status = KeyRegistration.Status


# ---------------------------------------------------------------------------
# Fixtures (shared)
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------


def test_it_round_trips_a_record_under_the_platform_managed_key(environment):
    body = {"name": "Ada", "tags": ["a", 1, None, True], "nested": {"x": 1.5}}

    records.record_put(environment=environment, record_key="customer:42", body=body)
    value = records.record_get(environment=environment, record_key="customer:42")

    assert value.body == body
    assert value.key_version == 1
    assert value.record_key == "customer:42"
    row = stored(environment, "customer:42")
    assert row.registration == active(environment)
    assert row.key_version == 1
    assert b"Ada" not in bytes(row.ciphertext)
    assert crypto.envelope_key_version(bytes(row.ciphertext)) == 1


def test_it_round_trips_a_record_under_a_byok_key(environment, byok):
    records.record_put(environment=environment, record_key="r1", body={"secret": "s3cr3t"})

    value = records.record_get(environment=environment, record_key="r1")

    assert value.body == {"secret": "s3cr3t"}
    assert value.key_version == byok.registration.version == 2
    assert stored(environment, "r1").registration_id == byok.registration.pk
    assert cache.stats()["kms_decrypts"] == 1  # the write loaded it; the read hit the cache


def test_it_round_trips_under_a_byok_key_with_an_encryption_context(environment, aws):
    make_byok(environment, aws, encryption_context={"environment": str(environment.public_id)})

    records.record_put(environment=environment, record_key="r1", body="plain string body")

    assert records.record_get(environment=environment, record_key="r1").body == "plain string body"


def test_it_gives_two_different_ciphertexts_for_two_writes_of_the_same_body(environment):
    records.record_put(environment=environment, record_key="r1", body={"same": True})
    first = bytes(stored(environment, "r1").ciphertext)
    records.record_put(environment=environment, record_key="r1", body={"same": True})
    second = bytes(stored(environment, "r1").ciphertext)

    assert first != second
    assert first[24:36] != second[24:36]  # fresh nonce
    assert Record.objects.filter(environment=environment).count() == 1


def test_it_replaces_a_record_and_keeps_it_unique(environment):
    records.record_put(environment=environment, record_key="r1", body=1)
    records.record_put(environment=environment, record_key="r1", body=2)

    assert records.record_get(environment=environment, record_key="r1").body == 2
    assert Record.objects.filter(environment=environment, record_key="r1").count() == 1


def test_it_reads_records_of_a_decrypt_only_version_after_rotation(environment, aws):
    records.record_put(environment=environment, record_key="old", body="under v1")
    byok = make_byok(environment, aws)
    records.record_put(environment=environment, record_key="new", body="under v2")

    assert records.record_get(environment=environment, record_key="old").key_version == 1
    assert records.record_get(environment=environment, record_key="new").key_version == byok.registration.version
    assert active(environment) == byok.registration


def test_it_deletes_a_record_even_while_its_key_version_is_inaccessible(environment, byok, monkeypatch):
    records.record_put(environment=environment, record_key="r1", body=1)
    KeyRegistration.objects.filter(pk=byok.registration.pk).update(status=Status.INACCESSIBLE)

    records.record_delete(environment=environment, record_key="r1")

    assert not Record.objects.filter(environment=environment).exists()
    with pytest.raises(RecordNotFound):
        records.record_delete(environment=environment, record_key="r1")


# ---------------------------------------------------------------------------
# Integrity
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("at", [0, 5, 30, 40, -1])
def test_it_refuses_a_tampered_ciphertext_with_an_integrity_failure(environment, at):
    records.record_put(environment=environment, record_key="r1", body={"card": "4111"})
    tamper(stored(environment, "r1"), at)

    with pytest.raises(IntegrityFailure) as raised:
        records.record_get(environment=environment, record_key="r1")

    assert raised.value.record_key == "r1"
    assert "4111" not in str(raised.value)


def test_it_refuses_a_ciphertext_moved_to_another_record_key(environment):
    records.record_put(environment=environment, record_key="alice", body="alice's data")
    records.record_put(environment=environment, record_key="mallory", body="mallory's data")
    Record.objects.filter(environment=environment, record_key="mallory").update(
        ciphertext=bytes(stored(environment, "alice").ciphertext)
    )

    with pytest.raises(IntegrityFailure):
        records.record_get(environment=environment, record_key="mallory")
    assert records.record_get(environment=environment, record_key="alice").body == "alice's data"


def test_it_refuses_a_ciphertext_moved_to_another_environment(environment, environment_b):
    records.record_put(environment=environment, record_key="r1", body="org A's data")
    records.record_put(environment=environment_b, record_key="r1", body="org B's data")
    source = stored(environment, "r1")

    # Only the ciphertext moved: B's own key version cannot open it.
    Record.objects.filter(environment=environment_b, record_key="r1").update(ciphertext=bytes(source.ciphertext))
    with pytest.raises(IntegrityFailure):
        records.record_get(environment=environment_b, record_key="r1")

    # Ciphertext and key version reference moved together: bound to A by AAD and by row.
    Record.objects.filter(environment=environment_b, record_key="r1").update(registration=source.registration)
    with pytest.raises(IntegrityFailure):
        records.record_get(environment=environment_b, record_key="r1")


def test_it_refuses_a_ciphertext_whose_key_version_was_changed(environment, aws):
    records.record_put(environment=environment, record_key="r1", body=1)
    byok = make_byok(environment, aws)
    Record.objects.filter(environment=environment, record_key="r1").update(
        registration=byok.registration, key_version=byok.registration.version
    )

    with pytest.raises(IntegrityFailure):
        records.record_get(environment=environment, record_key="r1")


# ---------------------------------------------------------------------------
# Write path refusals
# ---------------------------------------------------------------------------


def test_it_refuses_to_write_when_the_active_version_is_inaccessible_and_never_falls_back(environment, byok):
    KeyRegistration.objects.filter(pk=byok.registration.pk).update(
        status=Status.INACCESSIBLE, restore_status=Status.ACTIVE, inaccessible_reason="disabled"
    )

    with pytest.raises(KeyUnavailable) as raised:
        records.record_put(environment=environment, record_key="r1", body=1)

    assert raised.value.reason == "disabled"
    assert raised.value.retry_after is None
    assert not Record.objects.filter(environment=environment).exists()  # not written under v1


def test_it_refuses_to_write_when_no_version_is_active(environment):
    KeyRegistration.objects.filter(environment=environment).update(status=Status.DECRYPT_ONLY)

    with pytest.raises(KeyUnavailable) as raised:
        records.record_put(environment=environment, record_key="r1", body=1)

    assert raised.value.reason == "no_active_version"


def test_it_leaves_the_previous_record_intact_when_a_write_fails(environment, byok, monkeypatch):
    records.record_put(environment=environment, record_key="r1", body="old")
    before = bytes(stored(environment, "r1").ciphertext)
    cache.clear()
    monkeypatch.setattr(kms, "decrypt", throttle)

    with pytest.raises(KeyUnavailable):
        records.record_put(environment=environment, record_key="r1", body="new")

    assert bytes(stored(environment, "r1").ciphertext) == before
    monkeypatch.undo()
    cache.clear()  # past the transient-failure hold (keys/cache.py)
    assert records.record_get(environment=environment, record_key="r1").body == "old"


def test_it_marks_the_version_inaccessible_when_kms_refuses_on_the_data_plane(environment, byok, monkeypatch, mailoutbox, alice):
    monkeypatch.setattr(kms, "decrypt", refuse(kms.Reason.DISABLED))

    with pytest.raises(KeyUnavailable) as raised:
        records.record_put(environment=environment, record_key="r1", body=1)

    assert raised.value.reason == "disabled"
    byok.registration.refresh_from_db()
    assert byok.registration.status == Status.INACCESSIBLE
    assert byok.registration.inaccessible_reason == "disabled"
    assert byok.registration.restore_status == Status.ACTIVE
    event = AuditEvent.objects.filter(registration=byok.registration, action=AuditEvent.Action.STATUS_CHANGED).first()
    assert event.actor_label == "data plane"
    assert event.before == {"status": "active"} and event.after["status"] == "inaccessible"
    assert mailoutbox and "alice@example.org" in mailoutbox[0].to


def test_it_flips_nothing_when_kms_throttles(environment, byok, monkeypatch):
    monkeypatch.setattr(kms, "decrypt", throttle)
    generation = byok.registration.generation

    with pytest.raises(KeyUnavailable) as raised:
        records.record_put(environment=environment, record_key="r1", body=1)

    assert raised.value.reason == "throttled"
    assert raised.value.retry_after == records.TRANSIENT_RETRY_AFTER_SECONDS
    byok.registration.refresh_from_db()
    assert byok.registration.status == Status.ACTIVE
    assert byok.registration.generation == generation


@pytest.mark.parametrize(
    "record_key",
    ["", "a" * 256, "has space", "slash/inside", "-leading-dash", ".hidden", "ünïcode", "batch", "find", 42, None],
)
def test_it_refuses_a_bad_record_key(environment, record_key):
    with pytest.raises(records.InvalidRecordKey):
        records.record_put(environment=environment, record_key=record_key, body=1)


def test_it_accepts_record_keys_of_the_documented_set(environment):
    for record_key in ["a", "A-Z_0.9:x", "customer:42:profile", "9" * 255]:
        records.record_put(environment=environment, record_key=record_key, body=record_key)
        assert records.record_get(environment=environment, record_key=record_key).body == record_key


def test_it_refuses_a_body_that_is_not_json(environment):
    with pytest.raises(records.InvalidRecordInput):
        records.record_put(environment=environment, record_key="r1", body=float("nan"))
    with pytest.raises(records.InvalidRecordInput):
        records.record_put(environment=environment, record_key="r1", body={1, 2})


def test_it_refuses_a_body_over_the_limit(environment, settings):
    settings.API_MAX_BODY_BYTES = 100
    with pytest.raises(records.RecordTooLarge):
        records.record_put(environment=environment, record_key="r1", body="x" * 100)


# ---------------------------------------------------------------------------
# Batch and find
# ---------------------------------------------------------------------------


def test_it_writes_a_batch_and_finds_it(environment, byok):
    batch = [(f"r{i}", {"i": i}) for i in range(50)]

    written = records.records_put_batch(environment=environment, records=batch)
    found, errors = records.records_find(environment=environment, record_keys=[k for k, _ in batch])

    assert len(written) == 50
    assert errors == []
    assert [(r.record_key, r.body) for r in found] == batch
    assert cache.stats()["kms_decrypts"] == 1


def test_it_writes_a_batch_over_existing_records(environment):
    records.record_put(environment=environment, record_key="r1", body="old")

    records.records_put_batch(environment=environment, records=[("r1", "new"), ("r2", "two")])

    assert records.record_get(environment=environment, record_key="r1").body == "new"
    assert Record.objects.filter(environment=environment).count() == 2


def test_it_writes_nothing_of_a_batch_with_one_bad_item(environment):
    records.record_put(environment=environment, record_key="r1", body="old")

    with pytest.raises(records.InvalidRecordKey) as raised:
        records.records_put_batch(environment=environment, records=[("r1", "new"), ("bad key", 2)])

    assert "records[1]" in str(raised.value)
    assert records.record_get(environment=environment, record_key="r1").body == "old"
    assert Record.objects.filter(environment=environment).count() == 1


def test_it_refuses_a_batch_with_a_duplicate_record_key(environment):
    with pytest.raises(records.DuplicateRecordKey):
        records.records_put_batch(environment=environment, records=[("r1", 1), ("r1", 2)])


def test_it_refuses_a_batch_over_the_limit(environment, settings):
    settings.API_MAX_BATCH_RECORDS = 3
    with pytest.raises(records.TooManyRecords):
        records.records_put_batch(environment=environment, records=[(f"r{i}", i) for i in range(4)])
    with pytest.raises(records.TooManyRecords):
        records.records_find(environment=environment, record_keys=[f"r{i}" for i in range(4)])


def test_it_lists_undecryptable_and_missing_records_under_errors_in_find(environment):
    records.records_put_batch(environment=environment, records=[("good", 1), ("tampered", 2)])
    tamper(stored(environment, "tampered"))

    found, errors = records.records_find(environment=environment, record_keys=["good", "tampered", "missing"])

    assert [r.record_key for r in found] == ["good"]
    assert {(e.record_key, e.code) for e in errors} == {("tampered", "integrity_error"), ("missing", "not_found")}


def test_it_fails_only_the_records_of_a_refused_version_in_find(environment, aws, monkeypatch):
    records.record_put(environment=environment, record_key="managed", body="v1")
    byok = make_byok(environment, aws)
    records.record_put(environment=environment, record_key="byok", body="v2")
    cache.clear()
    monkeypatch.setattr(kms, "decrypt", refuse(kms.Reason.PENDING_DELETION))

    found, errors = records.records_find(environment=environment, record_keys=["managed", "byok"])

    assert [r.record_key for r in found] == ["managed"]
    assert [(e.record_key, e.code, e.reason) for e in errors] == [("byok", "key_unavailable", "pending_deletion")]
    byok.registration.refresh_from_db()
    assert byok.registration.status == Status.INACCESSIBLE


# ---------------------------------------------------------------------------
# The canary: the plaintext data key is nowhere but in process memory
# ---------------------------------------------------------------------------


def _forms(secret: bytes) -> list[bytes]:
    """The plaintext data key as raw bytes, hex, and base64 (standard and URL-safe)."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def _database_dump() -> bytes:
    """Every row of every table, as bytes (bytea columns raw, everything else as text)."""
    chunks: list[bytes] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        chunks.append(bytes(value))
                    else:
                        chunks.append(str(value).encode())
    return b"\n".join(chunks)


def _redis_dump() -> bytes:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL or "redis://127.0.0.1:6379/15")
    chunks: list[bytes] = []
    for key in client.keys("*"):
        kind = client.type(key)
        chunks.append(key)
        if kind == b"string":
            chunks.append(client.get(key) or b"")
        elif kind == b"list":
            chunks.extend(client.lrange(key, 0, -1))
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                chunks += [field, value]
        elif kind == b"set":
            chunks.extend(client.smembers(key))
        elif kind == b"zset":
            chunks.extend(client.zrange(key, 0, -1))
    return b"\n".join(chunks)


def test_it_never_puts_the_plaintext_data_key_in_the_database_redis_or_logs(environment, aws, monkeypatch, caplog):
    """GIVEN a managed and a BYOK key version with records written, read, found, tampered,
    refused and throttled through the data plane
    THEN neither plaintext data key appears in any row of any table, in any Redis value,
    or in any log record, in any common encoding."""
    caplog.set_level(logging.DEBUG)
    managed = active(environment)
    managed_key = bytes(sealing.unseal_field(managed, "sealed_data_key"))
    records.record_put(environment=environment, record_key="m1", body="managed")
    byok = make_byok(environment, aws)
    byok_key = byok.plaintext_data_key()
    records.records_put_batch(environment=environment, records=[(f"b{i}", {"i": i}) for i in range(20)])
    records.records_find(environment=environment, record_keys=["m1", "b0", "b1", "nope"])
    tamper(stored(environment, "b1"))
    with pytest.raises(IntegrityFailure):
        records.record_get(environment=environment, record_key="b1")
    cache.clear()
    monkeypatch.setattr(kms, "decrypt", throttle)
    with pytest.raises(KeyUnavailable):
        records.record_get(environment=environment, record_key="b0")
    monkeypatch.setattr(kms, "decrypt", refuse())
    with pytest.raises(KeyUnavailable):
        records.record_get(environment=environment, record_key="b0")

    database, redis_values = _database_dump(), _redis_dump()
    logs = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records).encode()
    assert len(byok_key) == len(managed_key) == 32
    assert Record.objects.count() >= 21 and len(database) > 5_000
    for secret in (managed_key, byok_key):
        for form in _forms(secret):
            assert form not in database
            assert form not in redis_values
            assert form not in logs
    assert SECRET_ACCESS_KEY.encode() not in database + logs
    # The sanity of the canary: the sealed and encrypted forms are in the database.
    assert byok.encrypted_data_key in database
    assert managed.sealed_data_key.encode() in database
