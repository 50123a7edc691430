"""Retirement of a drained key version (keys/lifecycle.py ``registration_retire``): its
sealed credentials, sealed data key and encrypted data key are overwritten, it becomes
``retired`` (audited, cached plaintext evicted), and nothing can use it any more."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connections, transaction

from environments.services import environment_create
from keys import cache
from keys.services import records
from keys.services import registrations, sealing
from keys.services.lifecycle import DESTROYED_FIELDS, LifecycleRefused, registration_retire
from keys.models import AuditEvent, KeyRegistration, Record
from keys.services.registrations import TransitionError
from keys.services.validation import (
    ActivationError,
    ValidationRequestRefused,
    registration_activate,
    registration_request_validation,
)
from tests.factories import keys, make_byok, new_managed_version, put_records, run

Status = KeyRegistration.Status


@pytest.fixture
def drained(environment, alice, aws):  # noqa: F811
    """GIVEN BYOK v2 (decrypt-only) whose records were all re-encrypted to managed v3."""
    byok = make_byok(environment, aws)
    put_records(environment, keys(5))
    new_managed_version(environment, alice)
    from keys.services import reencryption

    run(reencryption.reencryption_start(environment=environment, actor=alice))
    registration = KeyRegistration.objects.get(pk=byok.registration.pk)
    assert registration.status == Status.DECRYPT_ONLY
    assert not Record.objects.filter(registration=registration).exists()
    return registration


def test_it_overwrites_the_material_and_retires_the_version(alice, drained):
    sealed = (drained.sealed_access_key_id, drained.sealed_secret_access_key)
    generation = drained.generation

    retired = registration_retire(registration=drained, actor=alice)

    row = KeyRegistration.objects.get(pk=drained.pk)
    assert row.status == Status.RETIRED and retired.status == Status.RETIRED
    assert {f: getattr(row, f) for f in DESTROYED_FIELDS if f != "encrypted_data_key"} == {
        "sealed_access_key_id": "", "sealed_secret_access_key": "", "sealed_data_key": ""
    }
    assert bytes(row.encrypted_data_key) == b""
    assert row.retired_at is not None and row.generation > generation
    assert sealing.credentials_state(registration=row) == "not set"
    # The rest of the row stays for the record: ARN, region, masked access key ID.
    assert row.kms_key_arn and row.access_key_id_last4
    assert all(s not in json.dumps(list(AuditEvent.objects.values("before", "after", "message"))) for s in sealed)


def test_it_audits_the_destruction_with_safe_summaries_only(alice, drained):
    blob = bytes(drained.encrypted_data_key)

    registration_retire(registration=drained, actor=alice)

    event = AuditEvent.objects.get(registration=drained, action=AuditEvent.Action.MATERIAL_DESTROYED)
    assert event.actor == alice
    assert set(event.before) == {"sealed_access_key_id", "sealed_secret_access_key", "encrypted_data_key"}
    assert event.before["sealed_secret_access_key"] == "set"
    assert event.before["encrypted_data_key"].startswith(f"{len(blob)} bytes, fingerprint ")
    assert set(event.after.values()) == {"destroyed"}
    change = AuditEvent.objects.get(registration=drained, action="status_changed", after__status="retired")
    assert change.before == {"status": "decrypt_only"} and change.actor == alice


def test_it_destroys_a_platform_managed_data_key(environment, alice):
    put_records(environment, keys(2))
    new_managed_version(environment, alice)
    from keys.services import reencryption

    run(reencryption.reencryption_start(environment=environment, actor=alice))
    v1 = environment.key_registrations.get(version=1)
    assert v1.sealed_data_key

    registration_retire(registration=v1, actor=alice)

    v1.refresh_from_db()
    assert (v1.status, v1.sealed_data_key) == (Status.RETIRED, "")
    event = AuditEvent.objects.get(registration=v1, action="material_destroyed")
    assert event.before == {"sealed_data_key": "set"}


def test_it_evicts_the_cached_data_key_at_once(environment, alice, drained):
    with records.data_key_for(drained):
        pass
    assert drained.pk in cache.get_cache()

    registration_retire(registration=drained, actor=alice)

    assert drained.pk not in cache.get_cache()


def test_it_refuses_the_data_plane_anything_still_pointing_at_a_retired_version(environment, alice, drained):
    registration_retire(registration=drained, actor=alice)
    # Cannot happen through the services (retirement refuses while a record remains); forced here.
    Record.objects.filter(environment=environment, record_key="r00001").update(registration=drained, key_version=2)

    with pytest.raises(records.KeyUnavailable) as refused:
        records.record_get(environment=environment, record_key="r00001")

    assert refused.value.reason == "retired" and not refused.value.transient
    found, errors = records.records_find(environment=environment, record_keys=["r00001", "r00002"])
    assert [r.record_key for r in found] == ["r00002"]
    assert (errors[0].code, errors[0].reason) == ("key_unavailable", "retired")


def test_it_never_brings_a_retired_version_back(alice, drained):
    retired = registration_retire(registration=drained, actor=alice)

    with pytest.raises(ActivationError):
        registration_activate(registration=retired, actor=alice)
    with pytest.raises(TransitionError):
        registrations.registration_replace_credentials(
            registration=retired, actor=alice, access_key_id="AKIAIOSFODNN7NEWONE1", secret_access_key="y" * 40
        )
    with pytest.raises(ValidationRequestRefused):
        registration_request_validation(registration=retired, actor=alice)
    with pytest.raises(LifecycleRefused, match="retired"):
        registration_retire(registration=retired, actor=alice)


def test_it_refuses_while_a_record_remains(environment, alice):
    put_records(environment, keys(3))
    new_managed_version(environment, alice)
    v1 = environment.key_registrations.get(version=1)

    with pytest.raises(LifecycleRefused, match="still encrypts 3 record"):
        registration_retire(registration=v1, actor=alice)

    v1.refresh_from_db()
    assert v1.status == Status.DECRYPT_ONLY and v1.sealed_data_key
    assert not AuditEvent.objects.filter(action="material_destroyed").exists()


@pytest.mark.parametrize("status", [Status.ACTIVE, Status.VALID, Status.INACCESSIBLE, Status.PENDING_VALIDATION, Status.FAILED])
def test_it_retires_only_a_decrypt_only_version(environment, alice, status):
    v1 = environment.key_registrations.get(version=1)
    KeyRegistration.objects.filter(pk=v1.pk).update(status=status)
    v1.refresh_from_db()

    with pytest.raises(LifecycleRefused, match="Only a decrypt-only key version can be retired"):
        registration_retire(registration=v1, actor=alice)

    v1.refresh_from_db()
    assert v1.status == status and v1.sealed_data_key


def _in_thread(target, ready: threading.Event, release: threading.Event):
    def body() -> None:
        try:
            with transaction.atomic():
                target()
                ready.set()
                release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=body)
    thread.start()
    assert ready.wait(10)
    return thread


@pytest.mark.django_db(transaction=True)
def test_it_refuses_while_a_reencryption_batch_is_still_moving_the_last_records(alice, org_a):
    """GIVEN a re-encryption batch that has moved v1's last record to v2 but not committed
    WHEN the owner retires v1
    THEN the record still counts under v1 (the batch may yet roll back) and retirement
    refuses; once the batch commits, retirement goes through."""
    environment = environment_create(organization=org_a, name="race", actor=alice)
    put_records(environment, keys(1))
    v2 = new_managed_version(environment, alice)
    v1 = environment.key_registrations.get(version=1)
    moved, release = threading.Event(), threading.Event()

    batch = _in_thread(
        lambda: Record.objects.filter(registration=v1).update(registration=v2, key_version=2), moved, release
    )
    try:
        with pytest.raises(LifecycleRefused, match="still encrypts 1 record"):
            registration_retire(registration=v1, actor=alice)
    finally:
        release.set()
        batch.join(10)

    assert registration_retire(registration=v1, actor=alice).status == Status.RETIRED


@pytest.mark.django_db(transaction=True)
def test_it_never_leaves_a_record_under_a_retired_version_after_a_write_in_flight(alice, org_a, monkeypatch):
    """GIVEN a data-plane PUT that chose v1 while it was active and has not stored yet
    (e.g. it waited for KMS on a cache miss)
    WHEN meanwhile v2 is activated and the owner retires the drained v1, then the PUT stores
    THEN no record may end up under the retired version (it could never be read again):
    the PUT must fail (and be retried by the client) or the retirement must refuse."""
    environment = environment_create(organization=org_a, name="race", actor=alice)
    v2 = new_managed_version(environment, alice, activate=False)
    v1 = environment.key_registrations.get(version=1)
    chosen, release = threading.Event(), threading.Event()
    real_upsert = records._upsert

    def slow_upsert(*args):
        chosen.set()
        release.wait(30)
        return real_upsert(*args)

    monkeypatch.setattr(records, "_upsert", slow_upsert)
    outcome: list[object] = []

    def put() -> None:
        try:
            outcome.append(records.record_put(environment=environment, record_key="late", body={"n": 1}))
        except Exception as e:  # noqa: BLE001  (whatever the fix raises)
            outcome.append(e)
        finally:
            connections.close_all()

    writer = threading.Thread(target=put)
    writer.start()
    try:
        assert chosen.wait(10)
        from keys.services.validation import registration_activate

        registration_activate(registration=v2, actor=alice)
        try:
            registration_retire(registration=KeyRegistration.objects.get(pk=v1.pk), actor=alice)
        except LifecycleRefused:
            pass
    finally:
        release.set()
        writer.join(10)

    assert outcome
    assert not Record.objects.filter(registration=v1).exists()
