"""Sign-in protection: lockout after repeated failures (django-axes), password validators,
and the optional TOTP second factor (django-otp) with an organization's "require
two-factor authentication" policy (environments/two_factor.py, portal/middleware.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from binascii import unhexlify
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from environments.two_factor import PENDING_KEY_SESSION_KEY
from keys import tasks
from tests.conftest import PASSWORD
from tests.test_url_matrix import ROUTES, world  # noqa: F401  (world is a fixture)

pytestmark = pytest.mark.django_db


def sign_in(client: Client, username: str, password: str = PASSWORD, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


# ---------------------------------------------------------------------------
# Lockout
# ---------------------------------------------------------------------------


def test_it_locks_a_username_out_after_the_failure_limit_even_with_the_right_password(client, alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, "alice", "wrong").status_code == 200
    locked = sign_in(client, "alice", "wrong")

    assert locked.status_code == 429
    page = locked.content.decode()
    assert "Too many sign-in attempts" in page
    assert f"after {settings.AXES_FAILURE_LIMIT} failed attempts" in page
    assert "Try again in 15 minutes" in page
    assert "<script" not in page
    again = sign_in(client, "alice")
    assert again.status_code == 429
    assert "_auth_user_id" not in client.session


def test_it_locks_the_username_from_another_address_too(client, alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "alice", "wrong", REMOTE_ADDR="198.51.100.7")
    assert sign_in(Client(), "alice", REMOTE_ADDR="203.0.113.9").status_code == 429


def test_it_locks_an_address_that_sprays_many_usernames(client, alice, bob, settings):
    for i in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, f"nobody{i}", "wrong", REMOTE_ADDR="198.51.100.8")
    assert sign_in(client, "bob", REMOTE_ADDR="198.51.100.8").status_code == 429
    assert sign_in(Client(), "bob", REMOTE_ADDR="203.0.113.10").status_code == 302


def test_it_counts_failures_by_the_address_the_trusted_proxy_saw(client, bob, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.TRUSTED_PROXY_ADDRESSES = ["10.0.0.2"]
    for i in range(settings.AXES_FAILURE_LIMIT):
        # The client writes whatever it likes on the left; the proxy appends the real address.
        sign_in(client, f"nobody{i}", "wrong", HTTP_X_FORWARDED_FOR=f"10.9.9.{i}, 198.51.100.20", REMOTE_ADDR="10.0.0.2")
    assert sign_in(Client(), "bob", HTTP_X_FORWARDED_FOR="198.51.100.20", REMOTE_ADDR="10.0.0.2").status_code == 429
    assert sign_in(Client(), "bob", HTTP_X_FORWARDED_FOR="198.51.100.21", REMOTE_ADDR="10.0.0.2").status_code == 302


def test_it_counts_failures_by_the_real_address_of_a_client_that_forges_x_forwarded_for(client, bob, settings):
    """GIVEN a client that reaches the app server directly, not from the front proxy
    WHEN it sprays usernames, each time claiming another address in X-Forwarded-For
    THEN its own address is locked out all the same, and other clients are not."""
    settings.TRUSTED_PROXY_COUNT = 1
    settings.TRUSTED_PROXY_ADDRESSES = ["10.0.0.2"]
    for i in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, f"nobody{i}", "wrong", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}", REMOTE_ADDR="203.0.113.66")
    assert sign_in(Client(), "bob", HTTP_X_FORWARDED_FOR="198.51.100.30", REMOTE_ADDR="203.0.113.66").status_code == 429
    assert sign_in(Client(), "bob", HTTP_X_FORWARDED_FOR="198.51.100.0", REMOTE_ADDR="10.0.0.2").status_code == 302


@pytest.mark.parametrize(
    "count, forwarded, expected",
    [(0, "1.2.3.4", "10.0.0.2"), (1, "6.6.6.6, 1.2.3.4", "1.2.3.4"), (2, "6.6.6.6, 1.2.3.4, 10.0.0.1", "1.2.3.4"),
     (2, "1.2.3.4", "10.0.0.2"), (1, "", "10.0.0.2")],
)
def test_it_takes_the_client_address_from_the_trusted_end_of_x_forwarded_for(rf, settings, count, forwarded, expected):
    from portal.middleware import client_ip

    settings.TRUSTED_PROXY_COUNT = count
    settings.TRUSTED_PROXY_ADDRESSES = ["10.0.0.2"]
    assert client_ip(rf.get("/", HTTP_X_FORWARDED_FOR=forwarded, REMOTE_ADDR="10.0.0.2")) == expected


@pytest.mark.parametrize(
    "trusted, remote, expected",
    [
        (["172.30.0.10"], "172.30.0.10", "1.2.3.4"),  # the front proxy
        (["172.30.0.10"], "172.30.0.11", "172.30.0.11"),  # its neighbour, talking to gunicorn directly
        (["127.0.0.1", "::1"], "::1", "1.2.3.4"),
        (["127.0.0.1", "::1"], "10.0.0.2", "10.0.0.2"),
        (["10.0.0.0/8"], "10.20.30.40", "1.2.3.4"),
        (["10.0.0.0/8"], "11.0.0.1", "11.0.0.1"),
        (["*"], "203.0.113.9", "1.2.3.4"),  # gunicorn's "trust every peer"
        ([], "127.0.0.1", "127.0.0.1"),
        (["127.0.0.1"], "", ""),  # a Unix socket's peer has no address
    ],
)
def test_it_reads_x_forwarded_for_only_on_a_connection_from_the_front_proxy(rf, settings, trusted, remote, expected):
    from portal.middleware import client_ip

    settings.TRUSTED_PROXY_COUNT = 1
    settings.TRUSTED_PROXY_ADDRESSES = trusted
    assert client_ip(rf.get("/", HTTP_X_FORWARDED_FOR="6.6.6.6, 1.2.3.4", REMOTE_ADDR=remote)) == expected


def test_it_trusts_the_same_proxy_addresses_as_gunicorn_by_default(settings):
    """Unset, FORWARDED_ALLOW_IPS is loopback for both gunicorn (docker/gunicorn.conf.py) and
    the portal; the front-proxy test runs that way (tests/test_front_proxy.py)."""
    from gunicorn.config import ForwardedAllowIPS

    assert "FORWARDED_ALLOW_IPS" not in os.environ
    assert settings.TRUSTED_PROXY_ADDRESSES == ForwardedAllowIPS.default.split(",") == ["127.0.0.1", "::1"]


def test_it_refuses_to_start_with_a_proxy_address_that_is_not_an_address():
    env = os.environ | {"DEBUG": "true", "FORWARDED_ALLOW_IPS": "172.30.0.10,proxy.internal"}
    done = subprocess.run([sys.executable, "-c", "import portal.settings"], env=env, capture_output=True, text=True,
                          timeout=60)

    assert done.returncode != 0
    assert "ImproperlyConfigured: FORWARDED_ALLOW_IPS: 'proxy.internal' is not an IP address or network" in done.stderr


def test_it_lets_the_user_in_again_after_the_cool_off(client, alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "alice", "wrong")
    assert sign_in(client, "alice").status_code == 429
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))

    assert sign_in(client, "alice").status_code == 302


def test_it_resets_the_failure_count_after_a_successful_sign_in(client, alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "alice", "wrong")
    assert sign_in(client, "alice").status_code == 302
    client.post(reverse("logout"))
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, "alice", "wrong").status_code == 200
    assert sign_in(client, "alice").status_code == 302


def test_it_takes_the_limit_and_cool_off_from_settings(client, alice, settings):
    settings.AXES_FAILURE_LIMIT = 2
    settings.AXES_COOLOFF_TIME = timedelta(minutes=3)
    sign_in(client, "alice", "wrong")
    locked = sign_in(client, "alice", "wrong")
    assert locked.status_code == 429
    assert "Try again in 3 minutes" in locked.content.decode()


def test_it_locks_the_admin_sign_in_the_same_way(client, django_user_model, settings):
    django_user_model.objects.create_superuser("root", "root@example.org", PASSWORD)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("admin:login"), {"username": "root", "password": "wrong"})
    assert client.post(reverse("admin:login"), {"username": "root", "password": PASSWORD}).status_code == 429


# ---------------------------------------------------------------------------
# Password validators
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password, complaint",
    [
        ("short1!", "too short"),
        ("password123", "too common"),
        ("83920174650", "entirely numeric"),
        ("alice-example", "too similar"),
    ],
)
def test_it_refuses_weak_passwords(alice, password, complaint):
    with pytest.raises(ValidationError) as error:
        password_validation.validate_password(password, user=alice)
    assert complaint in " ".join(error.value.messages)


def test_it_accepts_a_long_uncommon_password(alice):
    password_validation.validate_password("violet staircase under nine moons", user=alice)


def test_it_applies_the_validators_on_the_password_change_page(client_for, alice):
    client = client_for(alice)
    weak = client.post(reverse("password_change"), {"old_password": PASSWORD, "new_password1": "password123",
                                                    "new_password2": "password123"})
    assert weak.status_code == 200
    assert "too common" in weak.content.decode()
    strong = "violet staircase under nine moons"
    done = client.post(reverse("password_change"), {"old_password": PASSWORD, "new_password1": strong,
                                                    "new_password2": strong})
    assert done.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(strong)


# ---------------------------------------------------------------------------
# TOTP set-up, verification, removal
# ---------------------------------------------------------------------------


def current_code(key_hex: str) -> str:
    return f"{totp(unhexlify(key_hex), digits=6):06d}"


def set_up_two_factor(client: Client) -> TOTPDevice:
    return set_up_two_factor_with_code(client)[0]


def set_up_two_factor_with_code(client: Client) -> tuple[TOTPDevice, str]:
    """Set up two-factor authentication; the device and the code that confirmed it."""
    client.get(reverse("two_factor"))
    key = client.session[PENDING_KEY_SESSION_KEY]
    code = current_code(key)
    response = client.post(reverse("two_factor"), {"code": code})
    assert response.status_code == 302, response.content.decode()[:2000]
    return TOTPDevice.objects.get(key=key), code


def test_it_shows_the_otpauth_uri_and_the_secret_as_text_and_stores_nothing_yet(client_for, alice):
    client = client_for(alice)
    response = client.get(reverse("two_factor"))

    page = response.content.decode()
    key = client.session[PENDING_KEY_SESSION_KEY]
    from base64 import b32encode

    secret = b32encode(unhexlify(key)).decode()
    assert "otpauth://totp/BYOK%20Portal%3Aalice?secret=" + secret in page
    assert " ".join(secret[i:i + 4] for i in range(0, len(secret), 4)) in page
    assert f'src="{reverse("two_factor_qr")}"' in page
    assert "<script" not in page
    assert not TOTPDevice.objects.exists()
    qr = client.get(reverse("two_factor_qr"))
    assert qr["Content-Type"] == "image/svg+xml" and qr.content.lstrip().startswith(b"<?xml")
    assert "no-store" in qr["Cache-Control"]


def test_it_turns_two_factor_on_with_a_code_and_verifies_the_session(client_for, alice):
    client = client_for(alice)
    device = set_up_two_factor(client)

    assert device.confirmed and device.user == alice
    assert client.get(reverse("home")).status_code == 200
    page = client.get(reverse("two_factor")).content.decode()
    assert "This session is verified" in page
    assert device.key not in page
    assert client.get(reverse("two_factor_qr")).status_code == 404


def test_it_refuses_a_wrong_set_up_code(client_for, alice):
    client = client_for(alice)
    client.get(reverse("two_factor"))
    response = client.post(reverse("two_factor"), {"code": "000000"})
    assert response.status_code == 200
    assert "That code is not valid" in response.content.decode()
    assert not TOTPDevice.objects.exists()


def test_it_asks_for_a_code_after_a_password_sign_in_once_set_up(client_for, alice):
    device = set_up_two_factor(client_for(alice))
    client = Client()
    assert sign_in(client, "alice").status_code == 302

    for url in (reverse("home"), reverse("admin:index"), reverse("password_change")):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("two_factor_verify")), url
    assert client.get(reverse("two_factor_verify")).status_code == 200

    TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1)  # the set-up code is spent: allow a fresh one
    verified = client.post(reverse("two_factor_verify") + "?next=/", {"code": current_code(device.key), "next": "/"})
    assert verified.status_code == 302 and verified["Location"] == "/"
    assert client.get(reverse("home")).status_code == 200


def test_it_refuses_a_wrong_or_replayed_code(client_for, alice):
    # The code the set-up used (a code computed again here could be the next 30 s step's,
    # never used, and valid: the window may have turned meanwhile).
    _, spent = set_up_two_factor_with_code(client_for(alice))
    client = Client()
    sign_in(client, "alice")

    assert "That code is not valid" in client.post(reverse("two_factor_verify"), {"code": "123456x"}).content.decode()
    assert "That code is not valid" in client.post(reverse("two_factor_verify"), {"code": spent}).content.decode()
    assert client.get(reverse("home")).status_code == 302


def test_it_sends_a_verified_user_only_to_the_same_site(client_for, alice):
    device = set_up_two_factor(client_for(alice))
    TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1)
    client = Client()
    sign_in(client, "alice")
    response = client.post(reverse("two_factor_verify"), {"code": current_code(device.key), "next": "https://evil.example/"})
    assert response["Location"] == reverse("home")


def test_it_removes_two_factor_only_with_a_valid_code(client_for, alice):
    client = client_for(alice)
    device = set_up_two_factor(client)
    client.post(reverse("two_factor_remove"), {"code": "000000"})
    assert TOTPDevice.objects.filter(pk=device.pk).exists()
    # A fresh code, and no throttling delay after the wrong one (django-otp backs off).
    TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1, throttling_failure_count=0, throttling_failure_timestamp=None)

    client.post(reverse("two_factor_remove"), {"code": current_code(device.key)})

    assert not TOTPDevice.objects.filter(user=alice).exists()


def test_it_hides_the_totp_secret_from_support_staff_in_the_admin(client_for, alice, client, django_user_model):
    device = set_up_two_factor(client_for(alice))
    root = django_user_model.objects.create_superuser("root", "root@example.org", PASSWORD)
    staff = Client()
    staff.force_login(root)
    page = staff.get(reverse("admin:otp_totp_totpdevice_change", args=[device.pk])).content.decode()
    assert "alice" in page and device.key not in page


# ---------------------------------------------------------------------------
# The organization's policy
# ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_validation_jobs(monkeypatch):
    monkeypatch.setattr(tasks.validate_registration, "delay", lambda *args: None)


@pytest.fixture
def required(org_a):
    org_a.require_two_factor = True
    org_a.save()
    return org_a


def test_it_sends_an_admin_without_two_factor_to_set_it_up_before_a_change(client_for, carol, environment, required):
    client = client_for(carol)
    new_key = reverse("api_key_new", args=[environment.public_id])

    for response in (client.get(new_key), client.post(new_key, {"name": "x"})):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("two_factor") + "?")
        assert "organization=Alpha+Corp" in response["Location"]
    assert not environment.api_keys.exists()
    assert client.get(reverse("environment_detail", args=[environment.public_id])).status_code == 200
    page = client.get(response["Location"]).content.decode()
    assert "Alpha Corp requires two-factor authentication" in page


def test_it_lets_the_admin_change_once_verified(client_for, carol, environment, required):
    client = client_for(carol)
    set_up_two_factor(client)
    response = client.post(reverse("api_key_new", args=[environment.public_id]), {"name": "after 2fa", "form_token": str(uuid.uuid4())})
    assert response.status_code == 200
    assert environment.api_keys.filter(name="after 2fa").exists()


def test_it_leaves_viewers_and_outsiders_to_the_views_answers(client_for, bob, charlie, environment, required):
    new_key = reverse("api_key_new", args=[environment.public_id])
    assert client_for(bob).post(new_key, {"name": "x"}).status_code == 403
    assert client_for(charlie).post(new_key, {"name": "x"}).status_code == 404


def test_it_does_not_apply_another_organizations_policy(client_for, charlie, environment_b, required):
    response = client_for(charlie).post(reverse("api_key_new", args=[environment_b.public_id]), {"name": "b", "form_token": str(uuid.uuid4())})
    assert response.status_code == 200


def test_it_guards_creating_an_environment_in_a_protected_organization(client_for, carol, org_a, required):
    response = client_for(carol).post(reverse("environment_new"), {"organization": org_a.pk, "name": "guarded"})
    assert response.status_code == 302 and response["Location"].startswith(reverse("two_factor"))
    assert not org_a.environments.filter(name="guarded").exists()


ENVIRONMENT_CHANGE_ROUTES = [
    route for route in ROUTES if route.route.startswith("environments/<uuid:environment_id>/")
]


@pytest.mark.parametrize("route", ENVIRONMENT_CHANGE_ROUTES, ids=lambda route: route.key)
def test_it_guards_every_change_of_a_protected_organizations_environments(client_for, carol, required, route, world):
    """Every POST (and every /new/ page) under /environments/<id>/ — today's views and any
    added later — is behind the policy, without a decorator in the view."""
    client = client_for(carol)
    before_api_keys = world.environment.api_keys.count()
    path = world.path(route)

    response = client.post(path, {"name": "x", "record_key": "k", "body": "{}"})

    assert response.status_code == 302 and response["Location"].startswith(reverse("two_factor")), route.key
    assert world.environment.api_keys.count() == before_api_keys
    if path.endswith("/new/"):
        assert client.get(path)["Location"].startswith(reverse("two_factor"))


def test_it_lets_only_owners_open_the_organization_settings(client_for, alice, carol, bob, charlie, org_a):
    url = reverse("organization_settings", args=[org_a.pk])
    assert client_for(alice).get(url).status_code == 200
    assert client_for(carol).get(url).status_code == 403
    assert client_for(bob).get(url).status_code == 403
    assert client_for(charlie).get(url).status_code == 404


def test_it_requires_the_owner_to_use_two_factor_before_requiring_it(client_for, alice, bob, org_a):
    client = client_for(alice)
    url = reverse("organization_settings", args=[org_a.pk])

    refused = client.post(url, {"require_two_factor": "on"})
    assert refused.status_code == 200
    assert "Set up two-factor authentication for yourself" in refused.content.decode()
    org_a.refresh_from_db()
    assert not org_a.require_two_factor

    set_up_two_factor(client)
    assert client.post(url, {"require_two_factor": "on"}).status_code == 302
    org_a.refresh_from_db()
    assert org_a.require_two_factor
    page = client.get(url).content.decode()
    assert "Set up</span>" in page and "Not set up</span>" in page  # alice has a device; bob not yet


def test_it_needs_a_verified_session_to_turn_the_policy_off(client_for, alice, org_a, required):
    response = client_for(alice).post(reverse("organization_settings", args=[org_a.pk]), {})
    assert response.status_code == 302 and response["Location"].startswith(reverse("two_factor"))
    org_a.refresh_from_db()
    assert org_a.require_two_factor


def test_it_keeps_the_device_of_a_user_whose_organization_requires_it(client_for, carol, required):
    client = client_for(carol)
    device = set_up_two_factor(client)
    TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1)
    client.post(reverse("two_factor_remove"), {"code": current_code(device.key)})
    assert TOTPDevice.objects.filter(pk=device.pk).exists()


def test_it_leaves_the_data_plane_api_to_its_api_keys(client_for, carol, environment, required):
    from keys.services import api_keys

    _, api_key = api_keys.api_key_create(environment=environment, name="app", actor=carol)
    response = Client().put(
        f"/api/v1/environments/{environment.public_id}/records/r1", '{"body": 1}',
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )
    assert response.status_code == 200


@pytest.mark.parametrize("length", [256, 300, 5000])
def test_it_answers_a_sign_in_with_an_over_long_username_as_a_wrong_password_not_a_500(client, alice, length):
    client.raise_request_exception = True
    response = sign_in(client, "a" * length, "wrong")
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert AccessAttempt.objects.get().username == "a" * 255


def test_it_locks_out_an_over_long_username_like_any_other(client, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "b" * 400, "wrong")
    assert sign_in(client, "b" * 400, "wrong").status_code == 429


def test_the_admin_sign_in_refuses_an_over_long_username_without_a_500(client):
    client.raise_request_exception = True
    response = client.post(reverse("admin:login"), {"username": "c" * 1000, "password": "x"})
    assert response.status_code == 200


def _two_factor_events(user) -> list[tuple[str, dict, dict]]:
    from keys.models import AuditEvent

    prefix = "two_factor_"
    return [
        (e.action, e.before, e.after)
        for e in AuditEvent.objects.filter(actor=user, action__startswith=prefix).order_by("id")
    ]


def test_it_audits_adding_and_removing_a_two_factor_device(client_for, alice):
    """GIVEN alice sets up two-factor authentication, sets it up again on a new phone, then
    removes it THEN each change is an audit event naming her, and a refused removal is not."""
    client = client_for(alice)
    device = set_up_two_factor(client)
    assert [a for a, _, _ in _two_factor_events(alice)] == ["two_factor_device_added"]

    client.post(reverse("two_factor_remove"), {"code": "000000"})
    assert len(_two_factor_events(alice)) == 1
    TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1, throttling_failure_count=0, throttling_failure_timestamp=None)
    client.post(reverse("two_factor_remove"), {"code": current_code(device.key)})

    events = _two_factor_events(alice)
    assert [a for a, _, _ in events] == ["two_factor_device_added", "two_factor_device_removed"]
    assert events[0][2] == {"replaced_a_device": False}


def test_it_audits_the_organizations_two_factor_policy(client_for, alice, org_a):
    client = client_for(alice)
    url = reverse("organization_settings", args=[org_a.pk])
    client.post(url, {"require_two_factor": "on"})  # refused: alice has no verified session
    assert not [e for e in _two_factor_events(alice) if e[0] == "two_factor_policy_changed"]

    set_up_two_factor(client)
    client.post(url, {"require_two_factor": "on"})
    client.post(url, {})

    changes = [(b, a) for action, b, a in _two_factor_events(alice) if action == "two_factor_policy_changed"]
    assert changes == [
        ({"organization": org_a.pk, "require_two_factor": False}, {"organization": org_a.pk, "require_two_factor": True}),
        ({"organization": org_a.pk, "require_two_factor": True}, {"organization": org_a.pk, "require_two_factor": False}),
    ]
