"""Key rotation end to end, in process: managed v1 → BYOK v2 → BYOK v3 (the customer's AWS
side played by moto in-process through tests/keys/moto_customer.py), re-encryption with
every record read between batches, retirement of the drained versions, a switch back to a
fresh platform-managed key, and IAM credential replacement without a new key version.
"""

from __future__ import annotations

import pytest
from django.urls import reverse
from moto.core import enable_iam_authentication

from keys import cache
from keys.services import records, reencryption
from keys.services.lifecycle import LifecycleRefused, registration_retire
from keys.models import AuditEvent, KeyRegistration, Record, ReencryptionJob
from keys.services.registrations import registration_replace_credentials
from keys.services.validation import registration_activate, registration_validate
from tests.factories import counts, keys, plaintexts, put_records, run
from tests.keys.moto_customer import Customer, register, set_up_customer

Status = KeyRegistration.Status


def byok_version(environment, actor, customer: Customer) -> KeyRegistration:
    """Register the customer's five items, validate them against (moto's) KMS, activate."""
    registration = register(environment, actor, customer)
    registration_validate(registration_id=registration.pk, trigger="registration")
    registration.refresh_from_db()
    assert registration.status == Status.VALID, registration.validation_runs.first().checks
    return registration_activate(registration=registration, actor=actor)


@pytest.fixture
def three_versions(environment, alice, aws):  # noqa: F811
    """GIVEN 30 records under each of managed v1, BYOK v2 (customer key A) and BYOK v3
    (customer key B), v3 active."""
    put_records(environment, keys(30, "m"), tag="v1")
    customer_a = set_up_customer(user_name="portal-a")
    v2 = byok_version(environment, alice, customer_a)
    put_records(environment, keys(30, "a"), tag="v2")
    customer_b = set_up_customer(user_name="portal-b")
    v3 = byok_version(environment, alice, customer_b)
    put_records(environment, keys(30, "b"), tag="v3")
    assert counts(environment) == {1: 30, 2: 30, 3: 30}
    return {"v2": v2, "v3": v3, "a": customer_a, "b": customer_b}


def test_it_reads_every_record_during_and_after_reencryption_across_three_versions(environment, alice, three_versions):
    """GIVEN records under three versions (managed, BYOK, BYOK), v3 active
    WHEN the re-encryption job runs, in batches of 8
    THEN every record reads between every two batches and afterwards, with the same body;
    the counts of v1 and v2 fall to zero; everything ends under v3."""
    expected = plaintexts(environment)
    assert len(expected) == 90
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    older: list[int] = []

    def between() -> None:
        cache.clear()  # every read goes to KMS / unsealing again, not only to warm entries
        assert plaintexts(environment) == expected
        c = counts(environment)
        older.append(c.get(1, 0) + c.get(2, 0))

    run(job, batch_size=8, between_batches=between)

    assert older == sorted(older, reverse=True) and older[-1] == 0
    assert len(older) == 8  # 60 records, 8 per batch: 4 batches of v1 (8, 8, 8, 6), 4 of v2
    assert counts(environment) == {3: 90}
    assert plaintexts(environment) == expected
    job = ReencryptionJob.objects.get(pk=job.pk)
    assert (job.status, job.records_moved, job.target_id) == ("done", 60, three_versions["v3"].pk)
    assert {v.version: v.records for v in reencryption.job_progress(environment=environment).versions} == {3: 90, 2: 0, 1: 0}


def test_it_retires_the_drained_versions_and_destroys_their_material(environment, alice, three_versions):
    run(reencryption.reencryption_start(environment=environment, actor=alice))

    for version in (1, 2):
        registration_retire(registration=environment.key_registrations.get(version=version), actor=alice)

    for version in (1, 2):
        row = KeyRegistration.objects.get(environment=environment, version=version)
        assert row.status == Status.RETIRED and row.retired_at is not None
        assert (row.sealed_access_key_id, row.sealed_secret_access_key, row.sealed_data_key) == ("", "", "")
        assert bytes(row.encrypted_data_key or b"") == b""
        assert AuditEvent.objects.filter(registration=row, action="material_destroyed").count() == 1
    assert len(plaintexts(environment)) == 90  # everything still reads, under v3


def test_it_refuses_to_retire_a_version_while_records_remain_or_for_a_non_owner(
    environment, alice, carol, bob, client_for, three_versions
):
    v2 = three_versions["v2"]
    v2.refresh_from_db()

    with pytest.raises(LifecycleRefused, match="still encrypts 30 record"):
        registration_retire(registration=v2, actor=alice)

    run(reencryption.reencryption_start(environment=environment, actor=alice))
    url = reverse("registration_retire", args=[environment.public_id, v2.public_id])
    for user in (carol, bob):
        assert client_for(user).post(url).status_code == 403
    v2.refresh_from_db()
    assert v2.status == Status.DECRYPT_ONLY and v2.sealed_secret_access_key

    response = client_for(alice).post(url)

    assert response.status_code == 302
    v2.refresh_from_db()
    assert v2.status == Status.RETIRED and not v2.sealed_secret_access_key


def test_it_switches_back_to_a_fresh_platform_managed_key_version(environment, alice, carol, client_for, three_versions):
    """GIVEN records under BYOK versions
    WHEN an admin creates a new platform-managed key version and activates it
    THEN new writes use it at once, older versions stay decrypt-only and readable, and
    re-encryption moves everything to it."""
    expected = plaintexts(environment)
    client = client_for(carol)

    assert client.post(reverse("managed_version_new", args=[environment.public_id])).status_code == 302
    v4 = environment.key_registrations.get(version=4)
    assert (v4.kind, v4.status) == ("managed", Status.VALID)
    client.post(reverse("registration_activate", args=[environment.public_id, v4.public_id]))

    v4.refresh_from_db()
    assert v4.status == Status.ACTIVE
    assert environment.key_registrations.get(version=3).status == Status.DECRYPT_ONLY
    records.record_put(environment=environment, record_key="new-1", body={"after": "switch"})
    assert Record.objects.get(record_key="new-1").key_version == 4
    assert {k: v for k, v in plaintexts(environment).items() if k != "new-1"} == expected

    run(reencryption.reencryption_start(environment=environment, actor=alice))

    assert counts(environment) == {4: 91}


# ---------------------------------------------------------------------------
# Replacing IAM credentials: no new version, nothing re-encrypted
# ---------------------------------------------------------------------------


def _replace(environment, registration, customer: Customer, access_key_id: str, secret: str, actor, capture) -> KeyRegistration:
    with capture(execute=True):  # the validation job runs (eagerly) once the change commits
        registration_replace_credentials(registration=registration, actor=actor, access_key_id=access_key_id, secret_access_key=secret)
    registration.refresh_from_db()
    return registration


def test_it_replaces_credentials_without_a_new_version_or_touching_records(
    environment, alice, three_versions, django_capture_on_commit_callbacks
):
    """GIVEN an active BYOK version with records, and moto's IAM simulation on
    WHEN the customer rotates the IAM user's access key and the admin enters the new one
    THEN the validation with the new credentials passes and the version stays active; no
    version is added; every ciphertext is byte for byte the same; reads work with the new
    credentials even after the old access key is deleted in AWS."""
    v3, customer = three_versions["v3"], three_versions["b"]
    v3.refresh_from_db()
    versions_before = environment.key_registrations.count()
    ciphertexts = dict(Record.objects.values_list("pk", "ciphertext"))
    generation = v3.generation
    new_key = customer.iam().create_access_key(UserName=customer.user_name)["AccessKey"]

    with enable_iam_authentication():
        v3 = _replace(environment, v3, customer, new_key["AccessKeyId"], new_key["SecretAccessKey"], alice,
                      django_capture_on_commit_callbacks)
        customer.iam().delete_access_key(UserName=customer.user_name, AccessKeyId=customer.access_key_id)
        reads = plaintexts(environment)

    assert v3.status == Status.ACTIVE
    assert (v3.credentials_version, v3.access_key_id_last4) == (2, new_key["AccessKeyId"][-4:])
    assert v3.generation > generation  # cached data keys evicted everywhere
    run_ = v3.validation_runs.first()
    assert (run_.trigger, run_.outcome) == ("credentials", "passed")
    assert environment.key_registrations.count() == versions_before
    assert {pk: bytes(c) for pk, c in Record.objects.values_list("pk", "ciphertext")} == {pk: bytes(c) for pk, c in ciphertexts.items()}
    assert len(reads) == 90
    assert not ReencryptionJob.objects.exists()
    assert AuditEvent.objects.filter(registration=v3, action="credentials_replaced").count() == 1


def test_it_makes_an_active_version_inaccessible_when_its_new_credentials_are_refused(
    environment, alice, three_versions, django_capture_on_commit_callbacks
):
    """The new credentials are the version's only ones (the old were overwritten): refused,
    the version becomes inaccessible with the reason, and the data plane answers why."""
    v3, customer = three_versions["v3"], three_versions["b"]
    v3.refresh_from_db()

    with enable_iam_authentication():
        v3 = _replace(environment, v3, customer, "AKIAIOSFODNN7BOGUS01", "x" * 40, alice, django_capture_on_commit_callbacks)
        with pytest.raises(records.KeyUnavailable) as refused:
            records.record_get(environment=environment, record_key="b00001")

    assert v3.status == Status.INACCESSIBLE
    assert (v3.inaccessible_reason, v3.restore_status) == ("invalid_credentials", Status.ACTIVE)
    assert refused.value.reason == "invalid_credentials"
    assert environment.key_registrations.count() == 3


def test_it_restores_an_inaccessible_version_to_its_status_when_new_credentials_work(
    environment, alice, three_versions, django_capture_on_commit_callbacks
):
    v2, customer = three_versions["v2"], three_versions["a"]
    v2.refresh_from_db()
    assert v2.status == Status.DECRYPT_ONLY
    KeyRegistration.objects.filter(pk=v2.pk).update(
        status=Status.INACCESSIBLE, restore_status=Status.DECRYPT_ONLY, inaccessible_reason="invalid_credentials"
    )
    v2.refresh_from_db()
    new_key = customer.iam().create_access_key(UserName=customer.user_name)["AccessKey"]

    with enable_iam_authentication():
        v2 = _replace(environment, v2, customer, new_key["AccessKeyId"], new_key["SecretAccessKey"], alice,
                      django_capture_on_commit_callbacks)
        assert records.record_get(environment=environment, record_key="a00001").body["tag"] == "v2"

    assert v2.status == Status.DECRYPT_ONLY and v2.inaccessible_reason == ""
    assert environment.key_registrations.get(version=3).status == Status.ACTIVE
