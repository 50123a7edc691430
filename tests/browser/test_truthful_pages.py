"""Issue 13, items 3–5 in headless Chromium: one status for a version KMS refused, a setup
guide that renders no policy for an alias, copy buttons (static JS, strict CSP) and the API
key page's monospace key and export lines, the revocation drill's commands."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from keys.models import KeyRegistration
from keys.services.registrations import registration_create
from tests.browser.conftest import copy_with

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

Status = KeyRegistration.Status
ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture(autouse=True)
def no_validation_jobs(monkeypatch):
    monkeypatch.setattr("keys.tasks.validate_registration.delay", lambda *args, **kwargs: None)


@pytest.fixture
def violations(page):
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text) if "Content Security Policy" in message.text else None)
    return seen


def _byok(environment, alice, **fields) -> KeyRegistration:
    registration = registration_create(
        environment=environment, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 40, encryption_context={},
        access_key_id="AKIAIOSFODNN7EXAMPLE", secret_access_key=SECRET,
    )
    if fields.get("status") == Status.INACCESSIBLE or fields.get("status") == Status.ACTIVE:
        environment.key_registrations.filter(version=1).update(status=Status.DECRYPT_ONLY)
    KeyRegistration.objects.filter(pk=registration.pk).update(**fields)
    registration.refresh_from_db()
    return registration


def test_it_renders_no_policy_for_an_alias_and_says_how_to_find_the_key_arn(
    page, live_server, sign_in, shot, alice, environment, violations
):
    sign_in(alice)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/keys/new/")
    page.get_by_label("KMS Key ARN").fill("alias/byok-demo")

    hint = page.locator("#guide-hint")
    expect(hint).to_be_visible()
    expect(hint).to_contain_text("aws kms describe-key --key-id alias/byok-demo --query KeyMetadata.Arn --output text")
    expect(page.locator("#guide-policy")).to_be_hidden()
    expect(page.locator("#guide-cli")).to_be_hidden()
    assert "alias/byok-demo" not in page.locator("#guide-policy").text_content()
    shot("1-alias")

    page.get_by_label("KMS Key ARN").fill(ARN)
    expect(page.locator("#guide-policy")).to_contain_text(f'"Resource": "{ARN}"')
    expect(hint).to_be_hidden()
    shot("2-key-arn")
    assert not violations, violations


def test_it_copies_the_environment_id_and_shows_the_api_key_ready_to_paste(
    page, live_server, sign_in, shot, alice, environment, violations
):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    sign_in(alice)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/")
    assert copy_with(page, "Copy the environment ID") == str(environment.public_id)
    shot("1-environment-id-copied")

    page.get_by_label("New API key name").fill("billing")
    page.get_by_role("button", name="Create API key").click()
    key_field = page.locator("#new-api-key")
    api_key = key_field.input_value()
    assert "monospace" in key_field.evaluate("e => getComputedStyle(e).fontFamily")
    curl = page.locator("#curl-example").text_content()
    assert curl.startswith(f"export BYOK_API_KEY='{api_key}'\nexport BYOK_ENVIRONMENT_ID={environment.public_id}\ncurl ")
    assert copy_with(page, "Copy the API key") == api_key
    assert copy_with(page, "Copy the curl example") == curl
    shot("2-api-key-created")

    page.get_by_role("link", name="Done").click()
    page.get_by_role("link", name="Revoke API key billing").click()
    expect(page.get_by_role("heading", name="Revoke API key “billing”?")).to_be_visible()
    shot("3-confirm-revoke")
    assert environment.api_keys.get().revoked_at is None  # nothing done before confirming
    page.get_by_role("button", name="Revoke API key").click()
    expect(page.get_by_text("API key “billing” revoked")).to_be_visible()
    assert environment.api_keys.get().revoked_at is not None
    assert not violations, violations


def test_it_says_why_kms_refused_a_version_the_same_way_everywhere(
    page, live_server, sign_in, shot, alice, environment, violations
):
    """GIVEN version 2 passed validation and was active until the data plane got NotFound
    THEN the environment list, the versions table and the lifecycle card all say
    Inaccessible with KMS's cause, the versions table gives the remedy validation would
    give, and the passed checks are marked as superseded."""
    from keys.models import ValidationRun

    registration = _byok(environment, alice, status=Status.INACCESSIBLE, restore_status=Status.ACTIVE,
                         inaccessible_reason="not_found")
    ValidationRun.objects.create(registration=registration, trigger="registration", outcome="passed", checks=[
        {"name": "decrypt.call", "label": "Decrypt of the encrypted data key succeeds", "status": "pass",
         "aws_error_code": None, "cause": "KMS decrypted it.", "remedy": "", "transient": False}])
    sign_in(alice)

    page.goto(f"{live_server.url}/")
    row = page.get_by_role("row", name="production")
    expect(row).to_contain_text("v2")
    expect(row).to_contain_text("Inaccessible")
    expect(row).to_contain_text("KMS has no key")
    expect(row).not_to_contain_text("No active key")
    shot("1-environment-list")

    page.goto(f"{live_server.url}/environments/{environment.public_id}/")
    version = page.locator("tbody[data-version='2']")
    expect(version.locator("[data-kms-problem='not_found']")).to_contain_text(f"KMS has no key {ARN} in region eu-west-1")
    expect(version.locator("[data-kms-problem='not_found']")).to_contain_text("To fix: Check the key ARN and the region")
    expect(version.locator("[data-superseded]")).to_contain_text("since then KMS refused access")
    expect(page.locator("[data-lifecycle-version='2'] [data-kms-problem='not_found']")).to_contain_text("KMS has no key")
    shot("2-environment-page")
    assert not violations, violations


def test_it_gives_the_revocation_drill_commands_with_the_known_values(
    page, live_server, sign_in, shot, alice, environment, violations
):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    _byok(environment, alice, status=Status.ACTIVE)
    sign_in(alice)

    page.goto(f"{live_server.url}/environments/{environment.public_id}/revocation-drill/")

    expect(page.locator("#drill-disable")).to_have_text(f"aws kms disable-key --key-id {ARN} --region eu-west-1")
    expect(page.locator("#drill-enable")).to_have_text(f"aws kms enable-key --key-id {ARN} --region eu-west-1")
    expect(page.locator("#drill-find-key")).to_contain_text("ends_with(AccessKeyId, 'MPLE')")
    assert "&lt;" not in page.content() and "<portal IAM user>" not in page.locator("main").inner_text()
    assert copy_with(page, "Copy the disable-key command") == f"aws kms disable-key --key-id {ARN} --region eu-west-1"
    shot("1-drill-commands")
    assert not violations, violations
