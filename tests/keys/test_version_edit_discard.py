"""Fixing or discarding a key version that never served (issue 13, item 1), the
confirmation steps (item 2), and the status, guide, copy and wording items (3–6) as far as
a page rendered by the test client shows them. The browser journeys are in
tests/browser/test_fix_or_discard.py."""

from __future__ import annotations

import base64

import pytest
import uuid
from django.urls import reverse

from keys import tasks
from keys.services import lifecycle
from keys.models import AuditEvent, KeyRegistration, ValidationRun
from keys.services.registrations import (
    DuplicateAccessKey,
    NotEditable,
    TransitionError,
    access_key_in_use,
    registration_create,
    registration_transition,
    registration_update,
)
from keys.services.sealing import registration_credentials

pytestmark = pytest.mark.django_db

Status = KeyRegistration.Status
ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_ARN = "arn:aws:kms:eu-west-1:111122223333:key/9999abcd-12ab-34cd-56ef-1234567890ab"
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
NEW_ACCESS_KEY_ID = "AKIAIOSFODNN7NEWKEY1"
NEW_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYNEWSECRET"
BLOB = b"\x01\x02\x03\x00" + b"blob" * 40


@pytest.fixture(autouse=True)
def queued(monkeypatch) -> list[tuple]:
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.validate_registration, "delay", lambda *args: calls.append(args))
    return calls


def _register(environment, actor, *, access_key_id: str = ACCESS_KEY_ID, context=None) -> KeyRegistration:
    return registration_create(
        environment=environment, actor=actor, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=BLOB, encryption_context=context or {}, access_key_id=access_key_id, secret_access_key=SECRET,
    )


def _with_status(registration: KeyRegistration, status: str, **fields) -> KeyRegistration:
    if status == Status.ACTIVE:  # one active version per environment
        registration.environment.key_registrations.filter(status=Status.ACTIVE).update(status=Status.DECRYPT_ONLY)
    KeyRegistration.objects.filter(pk=registration.pk).update(status=status, **fields)
    registration.refresh_from_db()
    return registration


def _url(name: str, registration: KeyRegistration) -> str:
    return reverse(name, args=[registration.environment.public_id, registration.public_id])


def _page(client, environment) -> str:
    response = client.get(reverse("environment_detail", args=[environment.public_id]))
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def failed(environment, alice) -> KeyRegistration:
    return _with_status(_register(environment, alice), Status.FAILED)


def _edit_form(**overrides) -> dict:
    return {"encrypted_data_key": "", "access_key_id": "", "secret_access_key": "", "kms_key_arn": ARN,
            "region": "eu-west-1", "encryption_context": "env=prod", **overrides}


# Editing: the service


def test_it_edits_a_failed_version_in_place_and_queues_its_validation(
    failed, alice, queued, django_capture_on_commit_callbacks
):
    queued.clear()

    with django_capture_on_commit_callbacks(execute=True):
        edited = registration_update(
            registration=failed, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
            encryption_context={"env": "prod"},
        )

    assert (edited.status, edited.encryption_context, edited.version) == (Status.PENDING_VALIDATION, {"env": "prod"}, 2)
    assert bytes(edited.encrypted_data_key) == BLOB  # kept
    assert registration_credentials(registration=edited).access_key_id == ACCESS_KEY_ID  # kept
    assert queued == [(edited.pk, "registration")]
    event = AuditEvent.objects.get(action=AuditEvent.Action.REGISTRATION_EDITED)
    assert event.before == {"encryption_context": {}} and event.after == {"encryption_context": {"env": "prod"}}
    assert SECRET not in str(event.before) + str(event.after) + event.message


def test_it_replaces_the_credentials_and_blob_only_when_given(failed, alice):
    new_blob = b"\x01\x02\x03\x00" + b"newb" * 40

    edited = registration_update(
        registration=failed, actor=alice, kms_key_arn=OTHER_ARN, region="eu-west-1", account_id="111122223333",
        encryption_context={}, encrypted_data_key=new_blob, access_key_id=NEW_ACCESS_KEY_ID, secret_access_key=NEW_SECRET,
    )

    credentials = registration_credentials(registration=edited)
    assert (credentials.access_key_id, credentials.secret_access_key) == (NEW_ACCESS_KEY_ID, NEW_SECRET)
    assert (bytes(edited.encrypted_data_key), edited.kms_key_arn, edited.access_key_id_last4) == (new_blob, OTHER_ARN, "KEY1")


@pytest.mark.parametrize("status", [Status.ACTIVE, Status.DECRYPT_ONLY, Status.VALIDATING, Status.INACCESSIBLE, Status.RETIRED])
def test_it_refuses_to_edit_a_version_that_served_or_is_being_validated(environment, alice, status):
    registration = _with_status(_register(environment, alice), status)

    with pytest.raises(NotEditable):
        registration_update(
            registration=registration, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
            encryption_context={"env": "prod"},
        )
    registration.refresh_from_db()
    assert registration.encryption_context == {}


def test_it_refuses_to_edit_a_valid_version_that_was_once_activated(environment, alice):
    from keys.clock import now

    registration = _with_status(_register(environment, alice), Status.VALID, activated_at=now())

    assert not registration.is_editable
    with pytest.raises(NotEditable):
        registration_update(registration=registration, actor=alice, kms_key_arn=ARN, region="eu-west-1",
                            account_id="111122223333", encryption_context={})


def test_it_refuses_an_access_key_of_another_live_version_when_editing(environment, alice, failed):
    _register(environment, alice, access_key_id=NEW_ACCESS_KEY_ID)

    with pytest.raises(DuplicateAccessKey):
        registration_update(
            registration=failed, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
            encryption_context={}, access_key_id=NEW_ACCESS_KEY_ID, secret_access_key=NEW_SECRET,
        )


# Discarding: the service


@pytest.mark.parametrize("status", [Status.PENDING_VALIDATION, Status.FAILED, Status.VALID])
def test_it_discards_a_version_that_never_served_destroying_its_material(environment, alice, status):
    registration = _with_status(_register(environment, alice), status)

    discarded = lifecycle.registration_discard(registration=registration, actor=alice)

    assert discarded.status == Status.DISCARDED
    assert (discarded.sealed_access_key_id, discarded.sealed_secret_access_key) == ("", "")
    assert bytes(discarded.encrypted_data_key) == b""
    destroyed = AuditEvent.objects.get(action=AuditEvent.Action.MATERIAL_DESTROYED, registration=discarded)
    assert destroyed.after == {"sealed_access_key_id": "destroyed", "sealed_secret_access_key": "destroyed",
                               "encrypted_data_key": "destroyed"}
    assert AuditEvent.objects.filter(action=AuditEvent.Action.STATUS_CHANGED, registration=discarded,
                                     after__status=Status.DISCARDED, actor=alice).exists()


@pytest.mark.parametrize("status", [Status.ACTIVE, Status.DECRYPT_ONLY, Status.VALIDATING, Status.INACCESSIBLE])
def test_it_refuses_to_discard_a_version_in_service_or_being_validated(environment, alice, status):
    registration = _with_status(_register(environment, alice), status)

    with pytest.raises(lifecycle.LifecycleRefused):
        lifecycle.registration_discard(registration=registration, actor=alice)
    registration.refresh_from_db()
    assert registration.status == status and registration.sealed_secret_access_key


def test_it_frees_the_access_key_of_a_discarded_version(environment, alice, failed):
    """The duplicate rule counts only live versions."""
    assert access_key_in_use(environment=environment, access_key_id=ACCESS_KEY_ID)
    with pytest.raises(DuplicateAccessKey):
        _register(environment, alice)

    lifecycle.registration_discard(registration=failed, actor=alice)

    assert not access_key_in_use(environment=environment, access_key_id=ACCESS_KEY_ID)
    again = _register(environment, alice)
    assert again.version == 3


def test_it_never_moves_a_discarded_version_anywhere(environment, alice, failed):
    discarded = lifecycle.registration_discard(registration=failed, actor=alice)

    for status in Status.values:
        assert not discarded.can_move_to(status)
    with pytest.raises(TransitionError):
        registration_transition(registration=discarded, to=Status.PENDING_VALIDATION)


# The pages: edit


def test_it_offers_edit_and_discard_on_a_failed_version_and_shows_its_context(client_for, alice, environment):
    registration = _with_status(_register(environment, alice, context={"env": "prod"}), Status.FAILED)

    html = _page(client_for(alice), environment)

    assert f'href="{_url("registration_edit", registration)}"' in html
    assert f'href="{_url("registration_discard", registration)}"' in html
    assert "<code data-context-pair>env=prod</code>" in html
    assert "Replace credentials" not in html  # the wrong fix for a version that never served


def test_it_shows_none_for_a_version_without_encryption_context(client_for, alice, failed):
    assert "data-context-none>none</span>" in _page(client_for(alice), failed.environment)


@pytest.mark.parametrize("status", [Status.ACTIVE, Status.DECRYPT_ONLY])
def test_it_offers_no_edit_or_discard_for_a_version_in_service(client_for, alice, environment, status):
    registration = _with_status(_register(environment, alice), status)

    html = _page(client_for(alice), environment)

    assert _url("registration_edit", registration) not in html
    assert _url("registration_discard", registration) not in html


def test_it_prefills_the_edit_form_without_any_secret(client_for, alice, environment):
    registration = _with_status(_register(environment, alice, context={"env": "prod"}), Status.FAILED)

    response = client_for(alice).get(_url("registration_edit", registration))

    html = response.content.decode()
    assert response.status_code == 200
    assert f'value="{ARN}"' in html and 'value="eu-west-1"' in html
    assert "{&quot;env&quot;: &quot;prod&quot;}" in html
    assert SECRET not in html and ACCESS_KEY_ID not in html
    assert base64.b64encode(BLOB).decode() not in html
    assert "no-store" in response["Cache-Control"]


def test_it_saves_an_edit_and_validates_again(client_for, alice, failed, queued, django_capture_on_commit_callbacks):
    queued.clear()

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(_url("registration_edit", failed), _edit_form())

    assert response.status_code == 302
    failed.refresh_from_db()
    assert (failed.status, failed.encryption_context) == (Status.PENDING_VALIDATION, {"env": "prod"})
    assert queued == [(failed.pk, "registration")]


def test_it_asks_for_the_secret_with_a_new_access_key_id(client_for, alice, failed):
    response = client_for(alice).post(_url("registration_edit", failed), _edit_form(access_key_id=NEW_ACCESS_KEY_ID))

    assert response.status_code == 200
    assert "Enter the secret access key of the new access key ID." in response.content.decode()
    failed.refresh_from_db()
    assert failed.status == Status.FAILED and failed.encryption_context == {}


def test_it_sends_an_edit_of_a_version_in_service_back_with_a_message(client_for, alice, environment):
    registration = _with_status(_register(environment, alice), Status.DECRYPT_ONLY)

    response = client_for(alice).post(_url("registration_edit", registration), _edit_form(), follow=True)

    assert "only a version that never served and is not being validated can be edited" in response.content.decode()
    registration.refresh_from_db()
    assert registration.encryption_context == {}


def test_it_refuses_the_edit_page_to_a_viewer_and_an_outsider(client_for, bob, charlie, failed):
    assert client_for(bob).post(_url("registration_edit", failed), _edit_form()).status_code == 403
    assert client_for(charlie).get(_url("registration_edit", failed)).status_code == 404
    failed.refresh_from_db()
    assert failed.status == Status.FAILED


# The pages: confirmations


def test_it_confirms_a_discard_before_doing_it(client_for, alice, failed):
    client = client_for(alice)

    page = client.get(_url("registration_discard", failed)).content.decode()

    assert "Discard key version 2?" in page
    assert "Destroy the sealed IAM credentials (••••MPLE) and the encrypted data key of key version 2." in page
    assert "Free its access key" in page
    failed.refresh_from_db()
    assert failed.status == Status.FAILED

    client.post(_url("registration_discard", failed))
    failed.refresh_from_db()
    assert failed.status == Status.DISCARDED


@pytest.mark.parametrize("name", ["registration_retire", "registration_activate", "registration_discard"])
def test_every_version_confirmation_is_a_get_page_with_a_post_form_and_no_script(client_for, alice, failed, name):
    response = client_for(alice).get(_url(name, failed))

    html = response.content.decode()
    assert response.status_code == 200
    assert f'<form method="post" action="{_url(name, failed)}">' in html
    assert "Keep it as it is" in html and "<script>" not in html


def test_it_confirms_revoking_an_api_key(client_for, alice, environment):
    from keys.services import api_keys

    api_key, _ = api_keys.api_key_create(environment=environment, name="billing", actor=alice)
    url = reverse("api_key_revoke", args=[environment.public_id, api_key.prefix])

    page = client_for(alice).get(url).content.decode()

    assert "Revoke API key “billing”?" in page
    assert f"Refuse every request that sends byok_{api_key.prefix}_… from now on (401)" in page
    api_key.refresh_from_db()
    assert api_key.is_active
    html = _page(client_for(alice), environment)
    assert f'href="{url}"' in html  # the page links to the confirmation, no one-click form


def test_it_confirms_cancelling_a_reencryption(client_for, alice, environment):
    page = client_for(alice).get(reverse("reencryption_cancel", args=[environment.public_id])).content.decode()

    assert "Cancel the re-encryption?" in page
    assert "Stop moving records after the batch in progress." in page


# One status model


def test_it_shows_why_kms_refused_a_version_the_data_plane_made_inaccessible(client_for, alice, environment):
    """GIVEN version 2 passed validation, was activated, then the data plane got NotFound
    THEN its status says why, with the remedy validation would give, and the passed
    checks panel says it is superseded; the environment list names the version too."""
    registration = _register(environment, alice)
    environment.key_registrations.filter(version=1).update(status=Status.DECRYPT_ONLY)
    _with_status(registration, Status.INACCESSIBLE, restore_status=Status.ACTIVE, inaccessible_reason="not_found")
    ValidationRun.objects.create(registration=registration, trigger="registration", outcome="passed",
                                 checks=[{"name": "decrypt.call", "label": "Decrypt", "status": "pass",
                                          "aws_error_code": None, "cause": "ok", "remedy": "", "transient": False}])
    client = client_for(alice)

    html = _page(client, environment)

    assert 'data-kms-problem="not_found"' in html
    assert f"KMS has no key {ARN} in region eu-west-1 that these credentials can see." in html
    assert "Check the key ARN and the region" in html
    assert "since then KMS refused access" in html
    home = client.get(reverse("home")).content.decode()
    assert "No active key" not in home
    assert "Inaccessible" in home and 'data-kms-problem="not_found"' in home


def test_it_does_not_offer_validate_again_while_a_validation_is_queued(client_for, alice, environment):
    registration = _register(environment, alice)  # pending, its first job queued

    html = _page(client_for(alice), environment)

    assert 'data-busy="true"' in html
    assert _url("registration_validate", registration) not in html


def test_the_page_follows_the_validation_an_edit_queued_before_its_job_starts(
    client_for, alice, failed, queued, django_capture_on_commit_callbacks
):
    """GIVEN a version whose validation failed WHEN the owner saves an edit and the page loads
    before a worker took the queued job THEN the page polls the version (data-busy), so the
    result appears without a reload; the job fills in the run the edit queued (one run)."""
    ValidationRun.objects.create(registration=failed, trigger="registration", outcome="failed")
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(_url("registration_edit", failed), _edit_form())
    assert queued == [(failed.pk, "registration")]  # queued, not run yet

    html = _page(client, failed.environment)

    assert f'id="registration-{failed.public_id}"' in html
    group = html[html.index(f'id="registration-{failed.public_id}"'):]
    assert 'data-busy="true"' in group[: group.index(">")], group[:400]
    run = failed.validation_runs.latest("started_at")
    assert (run.outcome, run.trigger, run.queued_at is not None) == ("running", "registration", True)


def test_it_marks_the_validation_banner_for_the_page_to_drop_when_it_ends(client_for, alice, failed):
    client = client_for(alice)
    client.post(_url("registration_edit", failed), _edit_form())

    html = _page(client, failed.environment)

    assert '<li class="msg success">Key version 2 saved.</li>' in html  # stays
    assert ('<li class="msg info" data-validation-banner="2">Validation of key version 2 against KMS has started.</li>'
            in html)


def test_it_shows_a_platform_side_network_error_as_could_not_check(client_for, alice, failed):
    ValidationRun.objects.create(registration=failed, trigger="registration", outcome="unverified", checks=[
        {"name": "decrypt.call", "label": "Decrypt succeeds", "status": "fail", "aws_error_code": None,
         "cause": "The platform could not reach KMS", "remedy": "Nothing to change", "transient": True},
        {"name": "describe_key.state", "label": "Key state", "status": "fail", "aws_error_code": "DisabledException",
         "cause": "disabled", "remedy": "enable", "transient": False},
    ])

    html = _page(client_for(alice), failed.environment)

    assert '<span class="status s-unverified">Could not check</span>' in html
    assert '<span class="status s-fail">Failed</span>' in html


# Setup guide


def test_it_renders_no_policy_for_an_alias_and_says_how_to_find_the_key_arn(client_for, alice, environment):
    url = reverse("registration_guide", args=[environment.public_id])

    guide = client_for(alice).get(url, {"kms_key_arn": "alias/byok-demo"}).json()

    assert (guide["cli_command"], guide["iam_policy"], guide["arn_ok"]) == ("", "", False)
    assert "aws kms describe-key --key-id alias/byok-demo --query KeyMetadata.Arn --output text" in guide["hint"]


def test_it_shell_quotes_the_alias_in_the_describe_key_hint(client_for, alice, environment):
    url = reverse("registration_guide", args=[environment.public_id])

    guide = client_for(alice).get(url, {"kms_key_arn": "alias/x;rm$(id)"}).json()

    assert "--key-id 'alias/x;rm$(id)' --query" in guide["hint"]


def test_it_renders_no_policy_for_an_alias_on_the_registration_page_either(client_for, alice, environment):
    response = client_for(alice).post(reverse("registration_new", args=[environment.public_id]),
                                      {"kms_key_arn": "alias/byok-demo"})

    html = response.content.decode()
    assert '"Resource": "alias/byok-demo"' not in html and "&quot;Resource&quot;: &quot;alias/byok-demo" not in html
    assert "aws kms describe-key --key-id alias/" in html


def test_it_renders_the_policy_for_a_valid_key_arn(client_for, alice, environment):
    guide = client_for(alice).get(reverse("registration_guide", args=[environment.public_id]), {"kms_key_arn": ARN}).json()

    assert f'"Resource": "{ARN}"' in guide["iam_policy"] and guide["hint"] == ""


# Copying


def test_it_has_a_copy_button_for_the_environment_id(client_for, alice, environment):
    html = _page(client_for(alice), environment)

    assert f'<code id="environment-id">{environment.public_id}</code>' in html
    assert 'data-copy-target="environment-id"' in html
    assert '<script src="/static/js/copy.js" defer></script>' in html


def test_it_shows_the_new_api_key_in_monospace_with_export_lines_first(client_for, alice, environment):
    response = client_for(alice).post(
        reverse("api_key_new", args=[environment.public_id]), {"name": "billing", "form_token": str(uuid.uuid4())}
    )

    html = response.content.decode()
    assert 'class="mono"' in html
    curl = html[html.index('<pre id="curl-example">'):]
    assert curl.startswith("<pre id=\"curl-example\">export BYOK_API_KEY='byok_")
    assert f"export BYOK_ENVIRONMENT_ID={environment.public_id}" in curl
    assert 'data-copy-target="curl-example"' in html and 'data-copy-target="new-api-key"' in html


# Words


def test_it_writes_the_audit_trail_in_words(client_for, alice, environment):
    from keys.services.validation import registration_activate

    registration = _register(environment, alice)
    registration_transition(registration=registration, to=Status.VALIDATING, actor_label="job: validation")
    registration_transition(registration=registration, to=Status.VALID, actor_label="job: validation")
    registration_activate(registration=registration, actor=alice)

    html = _page(client_for(alice), environment)

    assert "Validation of version 2 started" in html
    assert "Validation passed: version 2 is valid and can be activated" in html
    assert "Activated: version 2 encrypts new records" in html
    assert "Version 1 is now decrypt-only" in html
    assert "Version 2 activated; version 1 is decrypt-only." in html
    assert "Pending validation → Validating" in html
    assert "pending_validation" not in html.split('id="audit"')[1].replace('data-audit-action="', "")
    assert "decrypt_only →" not in html and "→ decrypt_only" not in html


def test_it_writes_a_reencryption_jobs_status_changes_in_words(client_for, alice, environment, monkeypatch):
    """A re-encryption job's audit events name its statuses by their labels, not raw values."""
    from keys import queue
    from keys.services import reencryption
    from tests.factories import keys, new_managed_version, put_records

    put_records(environment, keys(3))
    new_managed_version(environment, alice)
    monkeypatch.setattr(queue, "enqueue_reencryption", lambda *args, **kwargs: None)
    reencryption.reencryption_start(environment=environment, actor=alice)

    audit = _page(client_for(alice), environment).split('id="audit"')[1]

    assert "— → Queued" in audit
    assert "→ queued" not in audit


def test_it_says_a_role_mode_discard_destroys_only_the_encrypted_data_key(client_for, alice, failed):
    KeyRegistration.objects.filter(pk=failed.pk).update(access_mode=KeyRegistration.AccessMode.ROLE)

    page = client_for(alice).get(_url("registration_discard", failed)).content.decode()

    assert "Destroy the encrypted data key of key version 2. This cannot be undone." in page
    assert "Free its access key" not in page


def test_it_says_after_a_role_mode_discard_that_only_its_encrypted_data_key_went(client_for, alice, environment):
    """GIVEN a role-mode version that failed validation WHEN it is discarded THEN the message
    speaks of its encrypted data key and of the role staying in AWS, not of IAM credentials
    or an access key it never had."""
    role = _with_status(registration_create(
        environment=environment, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=BLOB, encryption_context={}, role_arn="arn:aws:iam::111122223333:role/byok-portal-access",
    ), Status.FAILED)

    response = client_for(alice).post(_url("registration_discard", role), follow=True)

    page = response.content.decode()
    assert "Key version 2 discarded: its encrypted data key was destroyed. Your IAM role stays in AWS as it is." in page
    assert "IAM credentials" not in page.split('class="messages"')[1].split("</ul>")[0]
    assert "access key can be registered again" not in page
    role.refresh_from_db()
    assert role.status == Status.DISCARDED


def test_it_says_after_an_access_key_discard_that_its_credentials_went_and_the_access_key_is_free(
    client_for, alice, failed
):
    response = client_for(alice).post(_url("registration_discard", failed), follow=True)

    assert ("Key version 2 discarded: its IAM credentials and encrypted data key were destroyed, and its access "
            "key can be registered again.") in response.content.decode()
