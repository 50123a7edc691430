"""An owner sets up role mode from the registration page alone, in headless Chromium (issue 14).

Screenshots under test-output/screenshots/: the generated trust and permissions policies,
and the field error for a refused role ARN. (Validation against the emulator is in
tests/keys/test_customer_demo.py and test_role_mode.py; moto's AssumeRole checks neither
the trust policy nor the external ID, so the refusals are Stubber tests.)"""

import base64
import json

import pytest
from playwright.sync_api import expect

from keys.models import KeyRegistration
from tests.browser.conftest import copy_with

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:eu-west-1:111122223333:key/{KEY_ID}"
BLOB_B64 = base64.b64encode(KEY_ID.encode() + bytes(range(100, 160))).decode()
PLATFORM = "arn:aws:iam::999988887777:role/byok-platform"
ROLE_ARN = "arn:aws:iam::111122223333:role/team/byok-portal-access"


@pytest.fixture(autouse=True)
def role_mode(settings, monkeypatch):
    settings.PLATFORM_AWS_PRINCIPAL_ARN = PLATFORM
    monkeypatch.setattr("keys.tasks.validate_registration.delay", lambda *args, **kwargs: None)


def test_it_sets_up_role_mode_from_the_page(page, live_server, sign_in, shot, alice, environment):
    """GIVEN alice, owner of "production" WHEN she picks "IAM role (recommended)", types the key ARN
    and the role ARN THEN the guide shows the trust policy (platform principal, external ID) and the
    bound permissions policy; a user ARN is refused; the role ARN registers with no access key."""
    sign_in(alice)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/keys/new/")
    page.get_by_label("IAM role (recommended)").check()
    expect(page.get_by_label("Secret Access Key")).to_be_hidden()
    expect(page.get_by_label("Role ARN")).to_be_visible()
    page.get_by_label("KMS Key ARN").fill(ARN)
    page.get_by_label("Role ARN").fill(ROLE_ARN)
    commands = page.locator("#guide-role-commands")
    expect(commands).to_contain_text("--role-name byok-portal-access --path /team/")
    trust = json.loads(page.locator("#guide-trust-policy").text_content())
    permissions = json.loads(page.locator("#guide-role-policy").text_content())
    assert trust["Statement"][0]["Principal"] == {"AWS": PLATFORM}
    assert trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] == environment.aws_external_id
    assert permissions["Statement"][1]["Resource"] == ARN
    assert permissions["Statement"][1]["Condition"]["StringEquals"] == {
        "kms:EncryptionContext:portal:environment": str(environment.public_id)
    }
    page.locator("#role-guide").scroll_into_view_if_needed()
    shot("1-role-guide-policies")

    page.get_by_label("Encrypted Data Key").fill(BLOB_B64)
    page.get_by_label("Region code").fill("eu-west-1")
    page.get_by_label("Role ARN").fill("arn:aws:iam::111122223333:user/byok")
    page.get_by_role("button", name="Register key").click()
    expect(page.locator("#id_role_arn_error")).to_contain_text("This is an IAM user ARN")
    shot("2-user-arn-refused")

    page.get_by_label("IAM role (recommended)").check()
    page.get_by_label("Encrypted Data Key").fill(BLOB_B64)
    page.get_by_label("Role ARN").fill(ROLE_ARN)
    page.get_by_role("button", name="Register key").click()
    # The exact environment page: a "**/environments/<id>/**" pattern already matched the
    # registration page, so the query below could run before the POST had been handled.
    page.wait_for_url(f"{live_server.url}/environments/{environment.public_id}/")
    expect(page.get_by_role("status")).to_contain_text("Key version 2 registered")
    registration = KeyRegistration.objects.get(environment=environment, version=2)
    assert (registration.access_mode, registration.role_arn, registration.sealed_secret_access_key) == (
        "role", ROLE_ARN, ""
    )
    shot("3-registered")


def test_it_shows_and_copies_the_external_id_on_the_environment_page(page, live_server, sign_in, shot, bob, environment):
    """GIVEN role mode enabled and bob, a viewer of "production" WHEN he opens the environment page
    THEN it shows the environment's external ID, what it is for (the trust policy's sts:ExternalId
    condition), and its copy button puts it on the clipboard under the strict CSP."""
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    violations = []
    page.on("console", lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None)
    sign_in(bob)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/")

    expect(page.locator("#external-id")).to_have_text(environment.aws_external_id)
    expect(page.locator("#external-id-help")).to_contain_text("sts:ExternalId")
    assert copy_with(page, "Copy the external ID") == environment.aws_external_id  # the button said "Copied"
    assert violations == []
    shot("1-external-id-copied")


def test_it_replaces_the_role_arn_of_a_version_in_service(page, live_server, sign_in, shot, alice, environment):
    """GIVEN a role-mode version in service WHEN alice follows "Replace role ARN", first with a
    user ARN (refused, nothing changed), then with another role THEN the version points at the
    new role, still in service, a validation was queued and the page says the role ARN was
    replaced (a message that outlives the banner about the validation)."""
    from keys.services.registrations import registration_create

    registration = registration_create(
        environment=environment, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=base64.b64decode(BLOB_B64), encryption_context={}, role_arn=ROLE_ARN,
    )
    KeyRegistration.objects.filter(pk=registration.pk).update(status=KeyRegistration.Status.DECRYPT_ONLY)
    new_role = "arn:aws:iam::111122223333:role/team/byok-portal-access-2"
    sign_in(alice)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/")
    expect(page.get_by_role("link", name="Replace credentials")).to_have_count(0)
    page.get_by_role("link", name="Replace role ARN").click()
    expect(page.get_by_role("heading", name="Replace the role ARN of key version 2")).to_be_visible()
    page.get_by_label("Role ARN").fill("arn:aws:iam::111122223333:user/byok")
    page.get_by_role("button", name="Replace role ARN").click()
    expect(page.locator("#id_role_arn_error")).to_contain_text("This is an IAM user ARN")
    registration.refresh_from_db()
    assert registration.role_arn == ROLE_ARN
    shot("1-user-arn-refused")

    page.get_by_label("Role ARN").fill(new_role)
    page.get_by_role("button", name="Replace role ARN").click()
    page.wait_for_url(f"**/environments/{environment.public_id}/#version-2")
    expect(page.locator("#key-lifecycle")).to_contain_text("Replace role ARN")
    expect(page.get_by_text("Role ARN of version 2 replaced")).to_be_visible()  # the audit trail
    # The news stays on the page; only the "validation has started" banner follows the
    # validation (run eagerly here, so it had ended before the page loaded).
    expect(page.locator(".messages .msg.success")).to_have_text("Role ARN of key version 2 replaced; nothing was re-encrypted.")
    expect(page.locator(".msg[data-validation-banner='2']")).to_have_count(0)
    registration.refresh_from_db()
    assert (registration.role_arn, registration.status) == (new_role, KeyRegistration.Status.DECRYPT_ONLY)
    shot("2-replaced")
