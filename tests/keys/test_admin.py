"""Django admin for support staff: look at registrations, validation runs and audit events;
change nothing; never see a secret."""

from __future__ import annotations

import re
from unittest import mock

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission
from django.urls import reverse

from keys import crypto
from keys.services import registrations
from keys.models import AuditEvent, KeyRegistration, ValidationRun

from .test_registration_views import (
    ACCESS_KEY_ID,
    ARN,
    MOTO_BLOB,
    MOTO_BLOB_B64,
    SECRET_ACCESS_KEY,
)

pytestmark = pytest.mark.django_db

SUPPORT_MODELS = {
    "environments": {"organization", "membership", "environment"},
    "keys": {"keyregistration", "validationrun", "auditevent", "apikey"},
}


@pytest.fixture
def support(django_user_model):
    user = django_user_model.objects.create_user("sam", "sam@example.org", "x", is_staff=True)
    user.groups.add(Group.objects.get(name="support"))
    return user


@pytest.fixture
def registration(environment, alice):
    with mock.patch("keys.tasks.validate_registration.delay"):
        registration = registrations.registration_create(
            environment=environment, actor=alice, kms_key_arn=ARN, region="eu-west-1",
            account_id="111122223333", encrypted_data_key=MOTO_BLOB, encryption_context={"app": "billing"},
            access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY,
        )
    ValidationRun.objects.create(
        registration=registration, trigger="registration", outcome="failed", failure_reason="access_denied",
        checks=[{"name": "decrypt.call", "label": "Decrypt", "status": "fail", "cause": "AccessDenied",
                 "remedy": "Attach the policy of the setup guide."}],
    )
    return KeyRegistration.objects.get(pk=registration.pk)


def pages(registration) -> dict[str, str]:
    run = registration.validation_runs.get()
    event = AuditEvent.objects.filter(registration=registration).first()
    return {
        "registrations": reverse("admin:keys_keyregistration_changelist"),
        "registration": reverse("admin:keys_keyregistration_change", args=[registration.pk]),
        "registration history": reverse("admin:keys_keyregistration_history", args=[registration.pk]),
        "validation runs": reverse("admin:keys_validationrun_changelist"),
        "validation run": reverse("admin:keys_validationrun_change", args=[run.pk]),
        "audit events": reverse("admin:keys_auditevent_changelist"),
        "audit event": reverse("admin:keys_auditevent_change", args=[event.pk]),
    }


def assert_no_secret(html: str, registration: KeyRegistration, where: str) -> None:
    for secret in (
        SECRET_ACCESS_KEY,
        ACCESS_KEY_ID,
        registration.sealed_secret_access_key,
        registration.sealed_access_key_id,
        registration.sealed_secret_access_key.split("$")[-1],
        MOTO_BLOB_B64,
        MOTO_BLOB.hex(),
    ):
        assert secret not in html, where


def test_it_creates_a_support_group_with_view_permissions_only():
    group = Group.objects.get(name="support")

    perms = {(p.content_type.app_label, p.codename) for p in group.permissions.select_related("content_type")}

    assert perms == {(app, f"view_{model}") for app, models in SUPPORT_MODELS.items() for model in models}


def test_it_shows_support_every_changelist_and_change_page(client, support, registration):
    client.force_login(support)

    for name, url in pages(registration).items():
        response = client.get(url)
        assert response.status_code == 200, name
        assert_no_secret(response.content.decode(), registration, name)


def test_it_shows_secrets_only_as_set_or_unreadable(client, support, registration):
    client.force_login(support)
    html = client.get(reverse("admin:keys_keyregistration_change", args=[registration.pk])).content.decode()

    readonly = dict(re.findall(r'<label>([^<]+):</label>\s*<div class="readonly">(.*?)</div>', html, re.S))
    assert readonly["Access key ID"] == "set"
    assert readonly["Secret access key"] == "set"
    assert readonly["Platform-managed data key"] == "not set"
    assert readonly["Encrypted data key"] == f"96 bytes, fingerprint {crypto.fingerprint(MOTO_BLOB)}"
    assert readonly["Masked access key id"].endswith("MPLE")
    assert readonly["KMS key ARN"] == ARN


def test_it_has_no_input_for_any_field_even_for_a_superuser(client, admin_user, registration):
    client.force_login(admin_user)
    html = client.get(reverse("admin:keys_keyregistration_change", args=[registration.pk])).content.decode()

    form = re.search(r'<form[^>]*id="keyregistration_form".*?</form>', html, re.S).group(0)
    inputs = set(re.findall(r'<(?:input|textarea|select)[^>]*name="([^"]+)"', form))
    assert inputs <= {"csrfmiddlewaretoken"} | {n for n in inputs if n.startswith("validation_runs-")}
    assert 'name="_save"' not in html
    assert "deletelink" not in html


def test_it_refuses_support_any_add_change_or_delete(client, support, registration):
    client.force_login(support)
    run = registration.validation_runs.get()
    event = AuditEvent.objects.filter(registration=registration).first()
    for model, obj in (("keyregistration", registration), ("validationrun", run), ("auditevent", event)):
        assert client.get(reverse(f"admin:keys_{model}_add")).status_code == 403, model
        assert client.post(reverse(f"admin:keys_{model}_add"), {}).status_code == 403, model
        assert client.post(reverse(f"admin:keys_{model}_change", args=[obj.pk]), {"status": "active"}).status_code == 403
        assert client.get(reverse(f"admin:keys_{model}_delete", args=[obj.pk])).status_code == 403, model
        assert client.post(reverse(f"admin:keys_{model}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403
    registration.refresh_from_db()
    assert registration.status == KeyRegistration.Status.PENDING_VALIDATION
    assert AuditEvent.objects.filter(pk=event.pk).exists()
    assert not LogEntry.objects.exists()


def test_it_refuses_even_a_superuser_to_edit_or_delete(client, admin_user, registration):
    client.force_login(admin_user)
    changelist = client.get(reverse("admin:keys_keyregistration_changelist")).content.decode()
    assert reverse("admin:keys_keyregistration_add") not in changelist
    assert "delete_selected" not in changelist
    response = client.post(
        reverse("admin:keys_keyregistration_change", args=[registration.pk]), {"status": "active", "region": "us-east-1"}
    )
    assert response.status_code == 403
    registration.refresh_from_db()
    assert (registration.status, registration.region) == ("pending_validation", "eu-west-1")


def test_it_lets_support_queue_a_validation_after_commit(client, support, registration, django_capture_on_commit_callbacks):
    client.force_login(support)
    with mock.patch("keys.tasks.validate_registration.delay") as delay:
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                reverse("admin:keys_keyregistration_changelist"),
                {"action": "run_validation", "_selected_action": [registration.pk]},
                follow=True,
            )
    assert response.status_code == 200
    assert "Validation queued for 1 BYOK key version(s)." in response.content.decode()
    delay.assert_called_once()
    assert delay.call_args.args[0] == registration.pk
    assert_no_secret(response.content.decode(), registration, "after the action")
    for entry in LogEntry.objects.all():
        assert_no_secret(f"{entry.object_repr} {entry.change_message}", registration, "LogEntry")


def test_it_shows_the_validation_run_checks(client, support, registration):
    client.force_login(support)
    run = registration.validation_runs.get()
    html = client.get(reverse("admin:keys_validationrun_change", args=[run.pk])).content.decode()

    assert "Decrypt" in html and "AccessDenied" in html and "Attach the policy of the setup guide." in html


def test_it_keeps_audit_events_append_only(registration):
    event = AuditEvent.objects.filter(registration=registration).first()
    event.message = "rewritten"
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    with pytest.raises(ValueError, match="append-only"):
        event.delete()
    assert AuditEvent.objects.get(pk=event.pk).message != "rewritten"


def test_it_keeps_members_and_staff_without_the_group_out(client, alice, django_user_model, registration):
    url = reverse("admin:keys_keyregistration_changelist")
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 302 and reverse("admin:login") in response["Location"]

    staff = django_user_model.objects.create_user("stan", "stan@example.org", "x", is_staff=True)
    client.force_login(staff)
    assert client.get(url).status_code == 403
    assert client.get(reverse("admin:keys_keyregistration_change", args=[registration.pk])).status_code == 403


def test_it_gives_support_no_permission_beyond_viewing(support):
    perms = support.get_all_permissions()
    assert perms
    assert all(p.split(".")[1].startswith("view_") for p in perms)
    assert not Permission.objects.filter(group__name="support").exclude(codename__startswith="view_").exists()


def test_it_runs_the_admin_validation_action_through_the_validation_service(
    client, support, registration, django_capture_on_commit_callbacks
):
    """GIVEN a failed BYOK version WHEN support re-runs validation from the admin THEN the
    version is back to pending validation, a queued validation run exists and an audit
    event names the support user, exactly as "Validate again" on the portal page."""
    KeyRegistration.objects.filter(pk=registration.pk).update(status=KeyRegistration.Status.FAILED)
    runs_before = registration.validation_runs.count()
    client.force_login(support)
    with mock.patch("keys.tasks.validate_registration.delay"):
        with django_capture_on_commit_callbacks(execute=True):
            client.post(
                reverse("admin:keys_keyregistration_changelist"),
                {"action": "run_validation", "_selected_action": [registration.pk]},
            )
    registration.refresh_from_db()
    assert registration.status == KeyRegistration.Status.PENDING_VALIDATION
    assert registration.validation_runs.count() == runs_before + 1
    assert registration.validation_runs.first().trigger == "manual"
    actions = list(AuditEvent.objects.filter(registration=registration, actor=support).values_list("action", flat=True))
    assert AuditEvent.Action.VALIDATION_RUN in actions
    assert len(actions) == 2  # failed → pending validation, and the validation request


def test_it_reports_a_version_the_admin_action_cannot_validate(client, support, registration):
    KeyRegistration.objects.filter(pk=registration.pk).update(status=KeyRegistration.Status.VALIDATING)
    client.force_login(support)
    with mock.patch("keys.tasks.validate_registration.delay") as delay:
        response = client.post(
            reverse("admin:keys_keyregistration_changelist"),
            {"action": "run_validation", "_selected_action": [registration.pk]},
            follow=True,
        )
    html = response.content.decode()
    assert "Validation queued for 0 BYOK key version(s)." in html
    assert "cannot be validated now" in html
    delay.assert_not_called()


# ---------------------------------------------------------------------------
# Role mode (issue 14): access mode, role ARN, the environment's external ID
# ---------------------------------------------------------------------------

ROLE_ARN = "arn:aws:iam::111122223333:role/team/byok-portal-access"


@pytest.fixture
def role_registration(environment, alice):
    with mock.patch("keys.tasks.validate_registration.delay"):
        registration = registrations.registration_create(
            environment=environment, actor=alice, kms_key_arn=ARN, region="eu-west-1",
            account_id="111122223333", encrypted_data_key=MOTO_BLOB, encryption_context={}, role_arn=ROLE_ARN,
        )
    return KeyRegistration.objects.get(pk=registration.pk)


def _readonly(html: str) -> dict[str, str]:
    return dict(re.findall(r'<label>([^<]+):</label>\s*<div class="readonly">(.*?)</div>', html, re.S))


def test_it_shows_support_the_access_mode_role_arn_and_external_id_of_a_role_version(
    client, support, role_registration, environment
):
    client.force_login(support)

    html = client.get(reverse("admin:keys_keyregistration_change", args=[role_registration.pk])).content.decode()

    readonly = _readonly(html)
    assert readonly["Access mode"] == "IAM role (recommended)"
    assert readonly["Role ARN"] == ROLE_ARN
    assert readonly["External ID of the environment"] == environment.aws_external_id
    assert (readonly["Access key ID"], readonly["Secret access key"]) == ("not set", "not set")


def test_it_lists_and_filters_key_versions_by_access_mode(client, support, registration, role_registration):
    client.force_login(support)
    changelist = reverse("admin:keys_keyregistration_changelist")

    everything = client.get(changelist).content.decode()
    roles_only = client.get(changelist + "?access_mode__exact=role").content.decode()

    assert "IAM role (recommended)" in everything and "IAM user access key" in everything
    change = reverse("admin:keys_keyregistration_change", args=[role_registration.pk])
    assert change in roles_only
    assert reverse("admin:keys_keyregistration_change", args=[registration.pk]) not in roles_only


def test_it_has_no_input_for_the_role_fields_even_for_a_superuser(client, admin_user, role_registration, environment):
    client.force_login(admin_user)
    registration_url = reverse("admin:keys_keyregistration_change", args=[role_registration.pk])
    environment_url = reverse("admin:environments_environment_change", args=[environment.pk])
    external_id = environment.aws_external_id

    registration_html = client.get(registration_url).content.decode()
    environment_html = client.get(environment_url).content.decode()
    client.post(environment_url, {"name": environment.name, "organization": environment.organization_id,
                                  "aws_external_id": "attacker-chosen-id"})

    assert not re.search(r'name="(access_mode|role_arn|external_id)"', registration_html)
    assert _readonly(environment_html)["External ID"] == external_id
    assert 'name="aws_external_id"' not in environment_html
    environment.refresh_from_db()
    assert environment.aws_external_id == external_id
