"""Validation pages and actions (keys/validation_views.py) and the support admin's
"Re-run validation" action. Each view is tried by the owner (alice), an admin (carol), a
viewer (bob), an outsider (charlie), and with the wrong HTTP method.

The job itself is replaced by a recorder: what it does is tested in
test_registration_validate.py; here, what the pages show and queue."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from keys import tasks
from keys.models import AuditEvent, KeyRegistration, ValidationRun
from keys.services.registrations import registration_create

Status = KeyRegistration.Status
ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

CHECKS = [
    {"name": "describe_key.call", "label": "DescribeKey succeeds with these credentials", "status": "pass",
     "aws_error_code": None, "cause": "KMS described the key to these credentials.", "remedy": ""},
    {"name": "describe_key.state", "label": "Key state is Enabled", "status": "fail",
     "aws_error_code": None, "cause": "The KMS key is disabled: KMS refuses to decrypt with it.",
     "remedy": "Enable the key in the KMS console (Key actions → Enable)."},
    {"name": "decrypt.call", "label": "Decrypt of the encrypted data key succeeds", "status": "fail",
     "aws_error_code": "DisabledException", "cause": "The KMS key is disabled.", "remedy": "Enable the key."},
]


@pytest.fixture(autouse=True)
def queued(monkeypatch) -> list[tuple]:
    """Record the validation jobs queued (after commit) instead of calling KMS."""
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.validate_registration, "delay", lambda *args: calls.append(args))
    return calls


def _register(environment, actor, *, access_key_id: str = "AKIAIOSFODNN7EXAMPLE") -> KeyRegistration:
    return registration_create(
        environment=environment, actor=actor, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 40, encryption_context={},
        access_key_id=access_key_id, secret_access_key=SECRET,
    )


@pytest.fixture
def registration(environment, alice) -> KeyRegistration:
    return _register(environment, alice)


def _with_status(registration: KeyRegistration, status: str) -> KeyRegistration:
    KeyRegistration.objects.filter(pk=registration.pk).update(status=status)
    registration.refresh_from_db()
    return registration


def _url(name: str, registration: KeyRegistration) -> str:
    return reverse(name, args=[registration.environment.public_id, registration.public_id])


def _page(client, environment) -> str:
    response = client.get(reverse("environment_detail", args=[environment.public_id]))
    assert response.status_code == 200
    return response.content.decode()


# Status endpoint


def test_it_answers_the_live_status_of_a_pending_registration(client_for, alice, registration):
    response = client_for(alice).get(_url("registration_status", registration))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    data = response.json()
    assert (data["version"], data["status"], data["status_display"], data["busy"]) == (
        2, "pending_validation", "Pending validation", True
    )
    assert 'data-status="pending_validation"' in data["status_html"]
    assert "validation queued" in data["status_html"]


def test_it_answers_the_checks_with_causes_and_remedies_once_the_run_finished(client_for, alice, registration):
    _with_status(registration, Status.FAILED)
    ValidationRun.objects.create(registration=registration, trigger="registration", outcome="failed",
                                 failure_reason="disabled", checks=CHECKS)

    data = client_for(alice).get(_url("registration_status", registration)).json()

    assert data["busy"] is False
    assert data["status_display"] == "Failed"
    panel = data["panel_html"]
    assert "Key state is Enabled" in panel
    assert "The KMS key is disabled: KMS refuses to decrypt with it." in panel
    assert "Enable the key in the KMS console" in panel
    assert "DisabledException" in panel
    assert "Validation history" in panel
    assert "Validate again" in panel and "csrfmiddlewaretoken" in panel
    assert "Activate" not in panel


def test_it_keeps_polling_while_a_run_is_running(client_for, alice, registration):
    _with_status(registration, Status.VALID)
    ValidationRun.objects.create(registration=registration, trigger="manual")

    data = client_for(alice).get(_url("registration_status", registration)).json()

    assert data["busy"] is True


def test_it_stops_polling_when_the_last_attempt_could_not_verify(client_for, alice, registration):
    ValidationRun.objects.create(registration=registration, trigger="registration", outcome="unverified",
                                 failure_reason="throttled", checks=CHECKS[:1])

    data = client_for(alice).get(_url("registration_status", registration)).json()

    assert (data["status"], data["busy"]) == ("pending_validation", False)
    assert "could not verify" in data["status_html"]
    assert "Could not verify" in data["panel_html"]


def test_it_shows_the_status_to_a_viewer_without_buttons(client_for, bob, registration):
    _with_status(registration, Status.VALID)

    response = client_for(bob).get(_url("registration_status", registration))

    assert response.status_code == 200
    assert "<form" not in response.json()["panel_html"]


def test_it_hides_the_status_from_an_outsider(client_for, charlie, registration):
    assert client_for(charlie).get(_url("registration_status", registration)).status_code == 404


def test_it_answers_404_for_a_registration_of_another_environment(client_for, alice, registration, environment):
    from environments.services import environment_create

    staging = environment_create(organization=environment.organization, name="staging", actor=alice)
    url = reverse("registration_status", args=[staging.public_id, registration.public_id])

    client = client_for(alice)
    assert client.get(url).status_code == 404
    for name in ("registration_validate", "registration_activate"):
        assert client.post(reverse(name, args=[staging.public_id, registration.public_id])).status_code == 404


def test_it_answers_404_for_an_unknown_registration(client_for, alice, environment):
    url = reverse("registration_status", args=[environment.public_id, "00000000-0000-0000-0000-000000000000"])
    assert client_for(alice).get(url).status_code == 404


def test_it_refuses_other_methods_on_the_status_endpoint(client_for, alice, registration):
    assert client_for(alice).post(_url("registration_status", registration)).status_code == 405


def test_it_sends_anonymous_visitors_to_sign_in(client, registration):
    for name in ("registration_status", "registration_validate", "registration_activate"):
        response = client.post(_url(name, registration)) if name != "registration_status" else client.get(_url(name, registration))
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# Validate again


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_it_queues_a_validation_when_an_owner_or_admin_validates_again(
    request, who, client_for, registration, queued, django_capture_on_commit_callbacks
):
    user = request.getfixturevalue(who)
    _with_status(registration, Status.FAILED)

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(user).post(_url("registration_validate", registration))

    assert response.status_code == 302
    assert response["Location"].endswith(f"/environments/{registration.environment.public_id}/#version-2")
    assert queued == [(registration.pk, "manual")]
    registration.refresh_from_db()
    assert registration.status == Status.PENDING_VALIDATION
    assert registration.validation_runs.get().outcome == "running"
    assert AuditEvent.objects.filter(registration=registration, actor=user, action="status_changed").exists()


@pytest.mark.parametrize("status", [Status.PENDING_VALIDATION, Status.VALID, Status.ACTIVE, Status.DECRYPT_ONLY, Status.INACCESSIBLE])
def test_it_validates_again_in_every_status_but_validating_and_retired(
    status, client_for, alice, environment, registration, queued, django_capture_on_commit_callbacks
):
    if status == Status.ACTIVE:
        _with_status(environment.key_registrations.get(version=1), Status.DECRYPT_ONLY)
    _with_status(registration, status)

    with django_capture_on_commit_callbacks(execute=True):
        client_for(alice).post(_url("registration_validate", registration))

    assert queued == [(registration.pk, "manual")]
    registration.refresh_from_db()
    assert registration.status == status


def test_it_refuses_to_validate_again_while_validating(client_for, alice, registration, queued, django_capture_on_commit_callbacks):
    _with_status(registration, Status.VALIDATING)

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(_url("registration_validate", registration), follow=True)

    assert queued == []
    assert "cannot be validated now" in response.content.decode()


def test_it_refuses_to_validate_a_platform_managed_version(client_for, alice, environment, queued):
    managed = environment.key_registrations.get(version=1)

    response = client_for(alice).post(_url("registration_validate", managed), follow=True)

    assert response.status_code == 200
    assert queued == []
    assert not ValidationRun.objects.exists()


def test_it_forbids_a_viewer_to_validate_again(client_for, bob, registration, queued):
    _with_status(registration, Status.FAILED)

    response = client_for(bob).post(_url("registration_validate", registration))

    assert response.status_code == 403
    assert queued == []
    registration.refresh_from_db()
    assert registration.status == Status.FAILED


def test_it_hides_validate_again_from_an_outsider(client_for, charlie, registration, queued):
    assert client_for(charlie).post(_url("registration_validate", registration)).status_code == 404
    assert queued == []


def test_it_refuses_get_on_validate_again(client_for, alice, registration, queued):
    assert client_for(alice).get(_url("registration_validate", registration)).status_code == 405
    assert queued == []


def test_it_checks_the_csrf_token_of_validate_again(alice, registration, queued):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    assert client.post(_url("registration_validate", registration)).status_code == 403
    assert queued == []


# Activate


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_it_activates_a_valid_registration_for_an_owner_or_admin(request, who, client_for, environment, registration):
    user = request.getfixturevalue(who)
    _with_status(registration, Status.VALID)

    response = client_for(user).post(_url("registration_activate", registration), follow=True)

    assert response.status_code == 200
    assert "is now active" in response.content.decode()
    registration.refresh_from_db()
    assert registration.status == Status.ACTIVE
    assert environment.key_registrations.get(version=1).status == Status.DECRYPT_ONLY


def test_it_refuses_to_activate_a_failed_registration(client_for, alice, environment, registration):
    _with_status(registration, Status.FAILED)

    response = client_for(alice).post(_url("registration_activate", registration), follow=True)

    assert "Only a valid key version can be activated" in response.content.decode()
    registration.refresh_from_db()
    assert registration.status == Status.FAILED
    assert environment.key_registrations.get(version=1).status == Status.ACTIVE


def test_it_forbids_a_viewer_to_activate(client_for, bob, environment, registration):
    _with_status(registration, Status.VALID)

    assert client_for(bob).post(_url("registration_activate", registration)).status_code == 403
    registration.refresh_from_db()
    assert registration.status == Status.VALID


def test_it_hides_activate_from_an_outsider(client_for, charlie, registration):
    _with_status(registration, Status.VALID)

    assert client_for(charlie).post(_url("registration_activate", registration)).status_code == 404
    registration.refresh_from_db()
    assert registration.status == Status.VALID


def test_it_asks_to_confirm_activation_on_get_and_changes_nothing(client_for, alice, registration):
    _with_status(registration, Status.VALID)

    response = client_for(alice).get(_url("registration_activate", registration))

    html = response.content.decode()
    assert response.status_code == 200
    assert "Activate key version 2?" in html
    assert "Make key version 2 active: every record written from now on is encrypted with it." in html
    assert "Make version 1 (active now) decrypt-only" in html
    assert f'<form method="post" action="{_url("registration_activate", registration)}">' in html
    assert "<script>" not in html
    registration.refresh_from_db()
    assert registration.status == Status.VALID


# The environment page


def test_it_shows_checks_history_and_buttons_on_the_environment_page(client_for, alice, registration):
    _with_status(registration, Status.VALID)
    ValidationRun.objects.create(registration=registration, trigger="registration", outcome="failed", checks=CHECKS)
    ValidationRun.objects.create(registration=registration, trigger="manual", outcome="passed",
                                 checks=[dict(c, status="pass", remedy="") for c in CHECKS])

    html = _page(client_for(alice), registration.environment)

    assert f'data-status-url="{_url("registration_status", registration)}"' in html
    assert 'data-busy="false"' in html
    assert "Checks of the latest validation" in html
    assert "Validation history (the latest 2 runs)" in html
    assert "Activate version 2" in html and "Validate again" in html
    assert '<script src="/static/js/status.js" defer></script>' in html
    assert "<script>" not in html  # no inline script: a strict CSP is coming


def test_it_marks_a_pending_registration_busy_for_the_poller(client_for, alice, registration):
    html = _page(client_for(alice), registration.environment)

    assert 'data-busy="true"' in html
    assert "Pending validation" in html


def test_it_shows_no_buttons_to_a_viewer(client_for, bob, registration):
    _with_status(registration, Status.VALID)

    html = _page(client_for(bob), registration.environment)

    # The buttons, not the words: the revocation card may explain what "Validate again" does.
    assert "Activate version" not in html and ">Validate again</button>" not in html
    assert 'action="' + _url("registration_validate", registration) + '"' not in html


def test_it_never_shows_a_secret_on_the_page_or_the_status_endpoint(client_for, alice, registration):
    client = client_for(alice)
    html = _page(client, registration.environment) + client.get(_url("registration_status", registration)).content.decode()

    assert SECRET not in html
    assert "AKIAIOSFODNN7EXAMPLE" not in html
    assert "MPLE" in html  # the masked access key ID: last four characters only


# Support admin


@pytest.fixture
def support(db):
    user = get_user_model().objects.create_user("sam", "sam@example.org", "pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=["view_keyregistration", "view_validationrun"]))
    return user


def test_it_reruns_validation_from_the_admin(client, support, environment, registration, queued, django_capture_on_commit_callbacks):
    managed = environment.key_registrations.get(version=1)
    active = _register(environment, None, access_key_id="AKIAIOSFODNN7EXAMPL2")
    _with_status(environment.key_registrations.get(version=1), Status.DECRYPT_ONLY)
    _with_status(active, Status.ACTIVE)
    client.force_login(support)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:keys_keyregistration_changelist"),
            {"action": "run_validation", "_selected_action": [registration.pk, active.pk, managed.pk]},
            follow=True,
        )

    assert response.status_code == 200
    assert "Validation queued for 2 BYOK key version(s)." in response.content.decode()
    assert sorted(queued) == sorted([(registration.pk, "manual"), (active.pk, "manual")])


def test_it_shows_validation_runs_read_only_in_the_admin(client, support, registration):
    run = ValidationRun.objects.create(registration=registration, trigger="registration", outcome="failed", checks=CHECKS)
    client.force_login(support)

    response = client.get(reverse("admin:keys_validationrun_change", args=[run.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Enable the key in the KMS console" in html
    assert 'name="_save"' not in html
    assert SECRET not in html
    assert client.post(reverse("admin:keys_validationrun_change", args=[run.pk]), {"outcome": "passed"}).status_code == 403
    run.refresh_from_db()
    assert run.outcome == "failed"


def test_it_does_not_leak_anything_in_the_json(client_for, alice, registration):
    data = json.loads(client_for(alice).get(_url("registration_status", registration)).content)
    assert SECRET not in json.dumps(data)


def test_it_words_a_history_of_one_run_without_most_recent(client_for, alice, registration):
    ValidationRun.objects.create(registration=registration, trigger="registration", outcome="failed", checks=CHECKS)
    html = _page(client_for(alice), registration.environment)
    assert "Validation history (the latest run)" in html
    assert "most recent" not in html
