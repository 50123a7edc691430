"""Sealing at the row level: IAM credentials sealed by keys.services, bound to their row and
field, re-sealed by ``manage.py reseal_secrets``, and "unreadable" (never passed on) once
the sealing key that sealed them is no longer configured."""

from __future__ import annotations

import base64
import io
from unittest import mock

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from keys import crypto
from keys.services import registrations, sealing
from keys.models import AuditEvent, KeyRegistration, ValidationRun
from keys.services.sealing import CredentialsUnreadable, registration_credentials

from .test_registration_views import ACCESS_KEY_ID, ARN, MOTO_BLOB, SECRET_ACCESS_KEY

pytestmark = pytest.mark.django_db

K1 = "test1:dGVzdC1zZWFsaW5nLWtleS0wMDAwMDAwMDAwMDAwMDA="  # the test run's SEALING_KEYS
K2 = "k2:" + base64.b64encode(bytes(range(32))).decode()
OTHER_ACCESS_KEY_ID = "AKIAI44QH8DHBEXAMPLE"
OTHER_SECRET = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"


@pytest.fixture(autouse=True)
def no_validation():
    with mock.patch("keys.tasks.validate_registration.delay") as delay:
        yield delay


def register(environment, actor, access_key_id: str = ACCESS_KEY_ID, secret: str = SECRET_ACCESS_KEY) -> KeyRegistration:
    return registrations.registration_create(
        environment=environment,
        actor=actor,
        kms_key_arn=ARN,
        region="eu-west-1",
        account_id="111122223333",
        encrypted_data_key=MOTO_BLOB,
        encryption_context={},
        access_key_id=access_key_id,
        secret_access_key=secret,
    )


def reload(registration: KeyRegistration) -> KeyRegistration:
    return KeyRegistration.objects.get(pk=registration.pk)


def reseal() -> str:
    out = io.StringIO()
    call_command("reseal_secrets", stdout=out)
    return out.getvalue()


def test_it_round_trips_the_credentials_through_the_services(environment, alice):
    registration = reload(register(environment, alice))

    credentials = registration_credentials(registration=registration)

    assert credentials.access_key_id == ACCESS_KEY_ID
    assert credentials.secret_access_key == SECRET_ACCESS_KEY
    assert SECRET_ACCESS_KEY not in repr(credentials)
    assert sealing.credentials_state(registration=registration) == "set"


def test_it_stores_only_sealed_values_naming_the_first_sealing_key(environment, alice):
    registration = reload(register(environment, alice))

    for field, plaintext in (("sealed_access_key_id", ACCESS_KEY_ID), ("sealed_secret_access_key", SECRET_ACCESS_KEY)):
        value = getattr(registration, field)
        assert value.startswith("sealed$1$test1$")
        assert plaintext not in value
    assert registration.access_key_id_last4 == "MPLE"
    assert ACCESS_KEY_ID not in registration.access_key_id_digest


def test_it_seals_the_same_secret_differently_in_two_rows(environment, environment_b, alice, charlie):
    first = reload(register(environment, alice))
    second = reload(register(environment_b, charlie))

    assert first.sealed_secret_access_key != second.sealed_secret_access_key
    assert registration_credentials(registration=second).secret_access_key == SECRET_ACCESS_KEY


def test_it_refuses_sealed_values_swapped_between_two_rows(environment, alice):
    first = reload(register(environment, alice))
    second = reload(register(environment, alice, OTHER_ACCESS_KEY_ID, OTHER_SECRET))
    KeyRegistration.objects.filter(pk=first.pk).update(
        sealed_access_key_id=second.sealed_access_key_id, sealed_secret_access_key=second.sealed_secret_access_key
    )
    KeyRegistration.objects.filter(pk=second.pk).update(
        sealed_access_key_id=first.sealed_access_key_id, sealed_secret_access_key=first.sealed_secret_access_key
    )

    for registration in (reload(first), reload(second)):
        with pytest.raises(CredentialsUnreadable) as error:
            registration_credentials(registration=registration)
        assert "enter them again" in str(error.value)
        # The page's state reads only the sealed header (no unsealing on render): a swap
        # that keeps a configured sealing key id is caught where the value is opened.
        assert sealing.credentials_state(registration=registration) == "set"


def test_it_refuses_sealed_values_swapped_between_two_fields(environment, alice):
    registration = reload(register(environment, alice))
    KeyRegistration.objects.filter(pk=registration.pk).update(
        sealed_access_key_id=registration.sealed_secret_access_key,
        sealed_secret_access_key=registration.sealed_access_key_id,
    )

    with pytest.raises(CredentialsUnreadable):
        registration_credentials(registration=reload(registration))


def test_it_refuses_a_tampered_sealed_value(environment, alice):
    registration = reload(register(environment, alice))
    value = registration.sealed_secret_access_key
    tampered = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    KeyRegistration.objects.filter(pk=registration.pk).update(sealed_secret_access_key=tampered)

    with pytest.raises(CredentialsUnreadable):
        registration_credentials(registration=reload(registration))


def test_it_re_seals_every_value_under_the_first_sealing_key(environment, alice):
    """GIVEN credentials sealed under K1 (and version 1's platform-managed data key)
    WHEN the operator configures SEALING_KEYS=[K2, K1] and runs reseal_secrets
    THEN every value is sealed under K2, the command prints the count, each change is
    audited, and a second run changes nothing."""
    registration = register(environment, alice)
    managed = environment.key_registrations.get(version=1)
    before = reload(registration).sealed_secret_access_key

    with override_settings(SEALING_KEYS=[K2, K1]):
        # Every configured key unseals; the first one seals new values.
        assert registration_credentials(registration=reload(registration)).secret_access_key == SECRET_ACCESS_KEY
        newer = reload(register(environment, alice, OTHER_ACCESS_KEY_ID, OTHER_SECRET))
        assert crypto.sealed_key_id(newer.sealed_secret_access_key) == "k2"
        output = reseal()
        registration = reload(registration)
        for field in ("sealed_access_key_id", "sealed_secret_access_key"):
            assert crypto.sealed_key_id(getattr(registration, field)) == "k2"
        assert crypto.sealed_key_id(reload(managed).sealed_data_key) == "k2"
        assert registration.sealed_secret_access_key != before
        credentials = registration_credentials(registration=registration)
        assert (credentials.access_key_id, credentials.secret_access_key) == (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        again = reseal()

    assert output.strip() == "Re-sealed 3 value(s) and re-keyed 1 access key ID digest(s) under sealing key k2."
    assert again.strip() == "Re-sealed 0 value(s) and re-keyed 0 access key ID digest(s) under sealing key k2."
    events = AuditEvent.objects.filter(action=AuditEvent.Action.SEALING_KEY_ROTATED, registration=registration)
    assert [(e.before, e.after, e.actor_label) for e in events] == [
        (
            {"sealing_key_ids": {"access_key_id_digest": "test1", "sealed_access_key_id": "test1", "sealed_secret_access_key": "test1"}},
            {"sealing_key_ids": {"access_key_id_digest": "k2", "sealed_access_key_id": "k2", "sealed_secret_access_key": "k2"}},
            "command: reseal_secrets",
        )
    ]
    # K1 can be removed now.
    with override_settings(SEALING_KEYS=[K2]):
        assert registration_credentials(registration=reload(registration)).secret_access_key == SECRET_ACCESS_KEY


def test_it_leaves_values_it_cannot_open_to_be_entered_again(environment, alice):
    registration = register(environment, alice)
    before = reload(registration).sealed_secret_access_key

    with override_settings(SEALING_KEYS=[K2]):
        output = reseal()

    assert output.strip() == "Re-sealed 0 value(s) and re-keyed 0 access key ID digest(s) under sealing key k2."
    assert reload(registration).sealed_secret_access_key == before


def test_it_does_not_overwrite_credentials_replaced_while_re_sealing(environment, alice):
    """GIVEN reseal_secrets has read a row's K1 values
    WHEN the admin replaces the credentials before the re-sealed values are written
    THEN the new credentials stay (compare-and-set), and are not counted as re-sealed."""
    registration = register(environment, alice)
    real_reseal = crypto.reseal
    replaced = []

    def reseal_then_replace(*args, **kwargs):
        result = real_reseal(*args, **kwargs)
        if not replaced:
            replaced.append(True)
            registrations.registration_replace_credentials(
                registration=reload(registration), actor=alice,
                access_key_id=OTHER_ACCESS_KEY_ID, secret_access_key=OTHER_SECRET,
            )
        return result

    with override_settings(SEALING_KEYS=[K2, K1]), mock.patch("keys.services.sealing.crypto.reseal", reseal_then_replace):
        sealing.reseal_all()
        credentials = registration_credentials(registration=reload(registration))

    assert (credentials.access_key_id, credentials.secret_access_key) == (OTHER_ACCESS_KEY_ID, OTHER_SECRET)


# --- A sealing key that is no longer configured ---------------------------------------


def test_it_says_credentials_unreadable_without_passing_the_sealed_value_on(environment, alice):
    registration = reload(register(environment, alice))

    with override_settings(SEALING_KEYS=[K2]):
        with pytest.raises(CredentialsUnreadable) as error:
            registration_credentials(registration=registration)
        assert sealing.credentials_state(registration=registration) == "unreadable"
        assert sealing.sealed_state(registration=registration, field="sealed_secret_access_key") == "unreadable"

    message = str(error.value)
    assert "cannot be read" in message and "enter them again" in message
    assert registration.sealed_secret_access_key not in message
    assert isinstance(error.value.__cause__, crypto.SealingKeyUnavailable)
    assert error.value.__cause__.key_id == "test1"


def test_it_shows_unreadable_credentials_on_the_environment_page(client_for, alice, environment):
    register(environment, alice)
    url = reverse("environment_detail", args=[environment.public_id])
    assert 'data-credentials="unreadable"' not in client_for(alice).get(url).content.decode()

    with override_settings(SEALING_KEYS=[K2]):
        html = client_for(alice).get(url).content.decode()

    assert html.count('data-credentials="unreadable"') == 1
    assert "Credentials unreadable: enter them again" in html


def test_it_shows_unreadable_credentials_in_the_admin(client, admin_user, environment, alice):
    registration = register(environment, alice)
    client.force_login(admin_user)
    url = reverse("admin:keys_keyregistration_change", args=[registration.pk])

    with override_settings(SEALING_KEYS=[K2]):
        html = client.get(url).content.decode()

    assert html.count('<div class="readonly">unreadable</div>') == 2  # access key ID and secret
    assert registration.sealed_secret_access_key not in html


def test_it_fails_validation_saying_the_credentials_are_unreadable(environment, alice):
    """GIVEN a BYOK version whose credentials were sealed under K1
    WHEN K1 is no longer configured and the validation job runs
    THEN the run fails with "credentials unreadable" and a remedy, KMS is never called,
    and the key version is failed."""
    from keys.services.validation import registration_validate

    registration = register(environment, alice)

    with override_settings(SEALING_KEYS=[K2]), mock.patch("keys.diagnosis.diagnose") as diagnose:
        run = registration_validate(registration_id=registration.pk, trigger=ValidationRun.Trigger.REGISTRATION)

    diagnose.assert_not_called()
    assert run.outcome == ValidationRun.Outcome.FAILED
    assert run.failure_reason == "credentials_unreadable"
    [check] = run.checks
    assert check["status"] == "fail"
    assert "enter them again" in check["cause"]
    assert "Replace credentials" in check["remedy"]
    assert reload(registration).status == KeyRegistration.Status.FAILED


def test_the_function_that_unseals_credentials_keeps_its_frame_out_of_error_reports():
    """``registration_credentials`` holds the unsealed access key ID and secret in locals:
    Django's error reports must redact them (``@sensitive_variables``), and the decorator
    must sit on it, not on the helper above it."""
    from keys.services import sealing

    assert getattr(sealing.registration_credentials, "__wrapped__", None) is not None
    assert getattr(sealing.role_session_name, "__wrapped__", None) is None
