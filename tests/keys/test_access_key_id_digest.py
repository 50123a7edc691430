"""Support finds a key version by its access key ID (issue 13, item 8): Django admin search by
the whole ID (through the keyed digest) or its last four characters. The digest is keyed from
the sealing keys with rotation (each digest names its sealing key, lookups try every
configured key, ``reseal_secrets`` re-keys), never from SECRET_KEY; migration 0008 re-keys the
digests made the old way."""

from __future__ import annotations

import importlib
import io
import logging
from unittest import mock

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse
from django.utils.crypto import salted_hmac

from keys import crypto
from keys.models import KeyRegistration
from keys.services import registrations, sealing

from .test_registration_views import ACCESS_KEY_ID, ARN, MOTO_BLOB, SECRET_ACCESS_KEY
from .test_sealing_rows import K1, K2, OTHER_ACCESS_KEY_ID, OTHER_SECRET

pytestmark = pytest.mark.django_db

WRONG_ACCESS_KEY_ID = "AKIAJ7EXAMPLEWRONG00"
migration_0008 = importlib.import_module("keys.migrations.0008_access_key_id_digest_from_sealing_keys")


@pytest.fixture(autouse=True)
def no_validation():
    with mock.patch("keys.tasks.validate_registration.delay"):
        yield


@pytest.fixture
def support(django_user_model):
    user = django_user_model.objects.create_user("sam", "sam@example.org", "x", is_staff=True)
    user.groups.add(Group.objects.get(name="support"))
    return user


def register(environment, actor, access_key_id: str = ACCESS_KEY_ID, secret: str = SECRET_ACCESS_KEY) -> KeyRegistration:
    registration = registrations.registration_create(
        environment=environment, actor=actor, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=MOTO_BLOB, encryption_context={}, access_key_id=access_key_id, secret_access_key=secret,
    )
    return KeyRegistration.objects.get(pk=registration.pk)


def search(client, term: str) -> tuple[set[int], str]:
    """The primary keys of the key versions the admin changelist lists for ``term``, and its HTML."""
    response = client.get(reverse("admin:keys_keyregistration_changelist"), {"q": term})
    assert response.status_code == 200
    return {r.pk for r in response.context["cl"].result_list}, response.content.decode()


@pytest.fixture
def two_versions(environment, alice):
    return register(environment, alice), register(environment, alice, OTHER_ACCESS_KEY_ID, OTHER_SECRET)


def test_it_finds_a_key_version_by_its_whole_access_key_id_showing_no_secret(client, support, two_versions):
    mine, other = two_versions
    client.force_login(support)

    found, html = search(client, ACCESS_KEY_ID)

    assert found == {mine.pk}
    assert "\u2022" * 16 + "MPLE" in html
    for secret in (ACCESS_KEY_ID, SECRET_ACCESS_KEY, mine.sealed_access_key_id, mine.sealed_secret_access_key,
                   mine.access_key_id_digest.split("$")[1]):
        assert secret not in html
    # Pasted in lower case or with spaces around it, the same.
    assert search(client, f"  {ACCESS_KEY_ID.lower()} ")[0] == {mine.pk}


def test_it_finds_a_key_version_by_the_last_four_characters(client, support, two_versions):
    mine, other = two_versions
    client.force_login(support)

    assert search(client, "MPLE")[0] == {mine.pk, other.pk}  # both IDs end in MPLE
    assert search(client, OTHER_ACCESS_KEY_ID[-4:])[0] == {mine.pk, other.pk}
    assert search(client, "nowhere")[0] == set()


def test_it_finds_nothing_for_a_wrong_access_key_id(client, support, two_versions):
    client.force_login(support)

    assert search(client, WRONG_ACCESS_KEY_ID)[0] == set()
    assert search(client, ACCESS_KEY_ID[:-1] + "X")[0] == set()


def test_the_digest_names_the_first_sealing_key_and_is_not_keyed_by_secret_key(environment, alice):
    registration = register(environment, alice)

    assert registration.access_key_id_digest.startswith("test1$")
    assert ACCESS_KEY_ID not in registration.access_key_id_digest
    assert registration.access_key_id_digest.split("$")[1] != salted_hmac(
        "keys.access_key_id", ACCESS_KEY_ID, algorithm="sha256"
    ).hexdigest()
    with override_settings(SECRET_KEY="another-secret-key-" + "x" * 40):
        assert sealing.access_key_id_digest(ACCESS_KEY_ID) == registration.access_key_id_digest


def test_rotating_secret_key_keeps_duplicate_detection_on(environment, alice):
    register(environment, alice)

    with override_settings(SECRET_KEY="a-rotated-secret-key-" + "y" * 40):
        with pytest.raises(registrations.DuplicateAccessKey):
            register(environment, alice)
        assert registrations.access_key_in_use(environment=environment, access_key_id=ACCESS_KEY_ID)


def test_after_a_sealing_key_rotation_duplicates_are_caught_and_search_works_until_and_after_reseal(
    client, support, environment, alice
):
    """GIVEN a version registered under K1 WHEN the operator configures SEALING_KEYS=[K2, K1]
    THEN the same access key is still refused and admin search still finds the version;
    AND after reseal_secrets its digest names K2, and with K1 removed both still hold."""
    registration = register(environment, alice)
    client.force_login(support)

    with override_settings(SEALING_KEYS=[K2, K1]):
        with pytest.raises(registrations.DuplicateAccessKey):
            register(environment, alice)
        assert search(client, ACCESS_KEY_ID)[0] == {registration.pk}
        newer = register(environment, alice, OTHER_ACCESS_KEY_ID, OTHER_SECRET)
        assert crypto.lookup_digest_key_id(newer.access_key_id_digest) == "k2"

        out = io.StringIO()
        call_command("reseal_secrets", stdout=out)
        assert "re-keyed 1 access key ID digest(s)" in out.getvalue()

        rekeyed = KeyRegistration.objects.get(pk=registration.pk)
        assert crypto.lookup_digest_key_id(rekeyed.access_key_id_digest) == "k2"
        assert rekeyed.access_key_id_digest == sealing.access_key_id_digest(ACCESS_KEY_ID)

    with override_settings(SEALING_KEYS=[K2]):
        with pytest.raises(registrations.DuplicateAccessKey):
            register(environment, alice)
        assert search(client, ACCESS_KEY_ID)[0] == {registration.pk}
        assert search(client, OTHER_ACCESS_KEY_ID)[0] == {newer.pk}


def test_the_migration_re_keys_a_digest_made_the_old_way_without_leaking_the_access_key_id(
    environment, alice, caplog, capsys
):
    """GIVEN a version whose digest was made with SECRET_KEY (before migration 0008)
    WHEN the migration runs forward THEN its digest is the sealing-key digest; backward, the
    SECRET_KEY digest again; and the access key ID was printed or logged nowhere."""
    registration = register(environment, alice)
    old_digest = salted_hmac("keys.access_key_id", ACCESS_KEY_ID, algorithm="sha256").hexdigest()
    KeyRegistration.objects.filter(pk=registration.pk).update(access_key_id_digest=old_digest)
    managed = environment.key_registrations.get(version=1)  # no access key ID: left alone
    caplog.set_level(logging.DEBUG)

    migration_0008.rekey_forward(django_apps, None)

    rekeyed = KeyRegistration.objects.get(pk=registration.pk)
    assert rekeyed.access_key_id_digest == sealing.access_key_id_digest(ACCESS_KEY_ID)
    assert KeyRegistration.objects.get(pk=managed.pk).access_key_id_digest == ""
    assert registrations.access_key_in_use(environment=environment, access_key_id=ACCESS_KEY_ID)

    migration_0008.rekey_forward(django_apps, None)  # a second run changes nothing
    assert KeyRegistration.objects.get(pk=registration.pk).access_key_id_digest == rekeyed.access_key_id_digest

    migration_0008.rekey_backward(django_apps, None)
    assert KeyRegistration.objects.get(pk=registration.pk).access_key_id_digest == old_digest

    printed = capsys.readouterr()
    assert ACCESS_KEY_ID not in printed.out + printed.err + caplog.text
