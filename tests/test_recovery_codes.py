"""Recovery codes for two-factor authentication (django-otp's static device): generated
from a verified session, shown once, each usable once, stored only as digests, audited;
with one an owner of a mandatory-2FA organization who lost the phone gets back in and
sets up a new phone."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from environments.two_factor import PENDING_KEY_SESSION_KEY
from keys.models import AuditEvent
from tests.test_security_signin import current_code, set_up_two_factor, sign_in

pytestmark = pytest.mark.django_db

CODE = re.compile(r"<code>([a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4}-[a-z2-9]{4})</code>")


def generate(client: Client) -> list[str]:
    response = client.post(reverse("two_factor_recovery_codes"))
    assert response.status_code == 200, response.status_code
    assert "no-store" in response["Cache-Control"]
    return CODE.findall(response.content.decode())


def password_only_session(username: str = "alice") -> Client:
    client = Client()
    assert sign_in(client, username).status_code == 302
    return client


def test_it_shows_ten_distinct_codes_once_and_stores_only_their_digests(client_for, alice):
    client = client_for(alice)
    set_up_two_factor(client)

    codes = generate(client)

    assert len(codes) == len(set(codes)) == 10
    stored = list(StaticToken.objects.filter(device__user=alice).values_list("token", flat=True))
    assert len(stored) == 10
    for code in codes:
        assert code not in stored and code.replace("-", "") not in stored
    page = client.get(reverse("two_factor")).content.decode()
    assert "You have <strong>10</strong> unused recovery codes" in page
    assert not CODE.findall(page)  # never shown again
    event = AuditEvent.objects.get(action=AuditEvent.Action.RECOVERY_CODES_GENERATED)
    assert event.actor == alice and event.after == {"recovery_codes_left": 10}
    for code in codes:
        assert code not in str(event.before) + str(event.after) + event.message


def test_a_recovery_code_verifies_a_session_once_and_its_use_is_audited(client_for, alice):
    setup = client_for(alice)
    set_up_two_factor(setup)
    code = generate(setup)[3]

    client = password_only_session()
    assert client.get(reverse("home"))["Location"].startswith(reverse("two_factor_verify"))
    # Typed in capitals with spaces instead of dashes: still the same code.
    response = client.post(reverse("two_factor_verify"), {"code": code.upper().replace("-", " "), "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get(reverse("home")).status_code == 200
    assert StaticToken.objects.filter(device__user=alice).count() == 9
    event = AuditEvent.objects.get(action=AuditEvent.Action.RECOVERY_CODE_USED)
    assert event.actor == alice and event.after == {"recovery_codes_left": 9}
    assert code not in event.message

    again = password_only_session()
    refused = again.post(reverse("two_factor_verify"), {"code": code})
    assert refused.status_code == 200
    assert "That recovery code is not valid, or it was used already." in refused.content.decode()
    assert again.get(reverse("home")).status_code == 302


def test_generating_again_voids_the_earlier_codes(client_for, alice):
    client = client_for(alice)
    set_up_two_factor(client)
    old = generate(client)
    new = generate(client)
    assert not set(old) & set(new)
    refused = password_only_session().post(reverse("two_factor_verify"), {"code": old[0]})
    assert "That recovery code is not valid" in refused.content.decode()
    assert AuditEvent.objects.filter(action=AuditEvent.Action.RECOVERY_CODES_GENERATED).first().before == {
        "recovery_codes_left": 10
    }


def test_it_refuses_to_generate_codes_without_an_app_or_from_an_unverified_session(client_for, alice):
    client = client_for(alice)
    refused = client.post(reverse("two_factor_recovery_codes"))
    assert refused.status_code == 302 and refused["Location"] == reverse("two_factor")
    set_up_two_factor(client)
    # Password only: the middleware sends an unverified session to enter a code first.
    unverified = password_only_session().post(reverse("two_factor_recovery_codes"))
    assert unverified["Location"].startswith(reverse("two_factor_verify"))
    assert not StaticToken.objects.exists()


def test_a_wrong_recovery_code_is_refused(client_for, alice):
    setup = client_for(alice)
    set_up_two_factor(setup)
    generate(setup)
    client = password_only_session()
    refused = client.post(reverse("two_factor_verify"), {"code": "aaaa-bbbb-cccc-dddd"})
    assert "That recovery code is not valid" in refused.content.decode()
    assert StaticToken.objects.count() == 10


def test_removing_two_factor_removes_the_recovery_codes(client_for, alice):
    client = client_for(alice)
    device = set_up_two_factor(client)
    generate(client)
    TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1)
    client.post(reverse("two_factor_remove"), {"code": current_code(device.key)})
    assert not StaticDevice.objects.filter(user=alice).exists()


def test_an_owner_who_lost_the_phone_gets_back_in_and_sets_up_a_new_one(client_for, alice, org_a):
    """GIVEN alice's organization requires 2FA and alice saved her recovery codes
    WHEN she lost her phone, signs in with a recovery code and sets up a new phone
    THEN the new app's codes work, the old app's do not, and she can change things."""
    setup = client_for(alice)
    old_device = set_up_two_factor(setup)
    codes = generate(setup)
    org_a.require_two_factor = True
    org_a.save()

    client = password_only_session()
    client.post(reverse("two_factor_verify"), {"code": codes[0]})
    page = client.get(reverse("two_factor") + "?replace=1").content.decode()
    assert "Set up your new phone" in page
    assert client.get(reverse("two_factor_qr")).status_code == 200
    new_key = client.session[PENDING_KEY_SESSION_KEY]
    response = client.post(reverse("two_factor") + "?replace=1", {"code": current_code(new_key)})
    assert response.status_code == 302

    assert list(TOTPDevice.objects.filter(user=alice).values_list("key", flat=True)) == [new_key]
    assert not TOTPDevice.objects.filter(pk=old_device.pk).exists()
    assert client.get(reverse("environment_new")).status_code == 200


def test_an_unverified_session_cannot_replace_the_app(client_for, alice):
    device = set_up_two_factor(client_for(alice))
    client = password_only_session()
    page = client.get(reverse("two_factor") + "?replace=1").content.decode()
    assert "Set up your new phone" not in page and "totp-secret" not in page
    assert PENDING_KEY_SESSION_KEY not in client.session
    assert client.get(reverse("two_factor_qr")).status_code == 404
    # Even a pending key planted in the session is not accepted from an unverified session.
    session = client.session
    session[PENDING_KEY_SESSION_KEY] = "3132333435363738393031323334353637383930"
    session.save()
    client.post(reverse("two_factor") + "?replace=1", {"code": current_code("3132333435363738393031323334353637383930")})
    assert list(TOTPDevice.objects.filter(user=alice).values_list("pk", flat=True)) == [device.pk]
