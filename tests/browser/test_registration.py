"""An owner registers a BYOK key for an environment, in headless Chromium."""

import base64
import re

import pytest
from playwright.sync_api import expect

from keys.models import KeyRegistration

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
FIRST_ARN = f"arn:aws:kms:eu-west-1:111122223333:key/{KEY_ID}"
ARN = "arn:aws:kms:us-east-1:444455556666:key/mrk-1234abcd12ab34cd56ef1234567890ab"
# What moto returns for a 256-bit data key: the key ID in ASCII, then 60 opaque bytes.
BLOB_B64 = base64.b64encode(KEY_ID.encode() + bytes(range(100, 160))).decode()
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture(autouse=True)
def validation_stays_pending(monkeypatch):
    """live_server serves from a thread of this process: no validation job runs."""
    monkeypatch.setattr("keys.tasks.validate_registration.delay", lambda *args, **kwargs: None)


def test_it_registers_a_byok_key_and_lists_it_pending_validation(page, live_server, sign_in, shot, alice, environment):
    """GIVEN alice, owner of the environment "production"
    WHEN she opens the registration page, types a key ARN (the setup guide follows it),
    makes a mistake in the region, corrects it and registers
    THEN the page says what was wrong without keeping the secret, and the environment page
    lists the new key version as pending validation."""
    sign_in(alice)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/")
    page.get_by_role("link", name="Register a BYOK key").click()
    page.get_by_role("heading", name="Register a BYOK key for production").wait_for()
    shot("1-registration-page")

    cli, policy = page.locator("#guide-cli"), page.locator("#guide-policy")
    arn_field = page.get_by_label("KMS Key ARN")
    arn_field.fill(FIRST_ARN)
    expect(cli).to_contain_text(f"--key-id {FIRST_ARN}")
    expect(cli).to_contain_text("--region eu-west-1")
    expect(policy).to_contain_text(f'"Resource": "{FIRST_ARN}"')
    shot("2-guide-first-arn")

    arn_field.fill(ARN)
    expect(cli).to_contain_text(f"--key-id {ARN} --key-spec AES_256 --region us-east-1 --output json")
    expect(policy).to_contain_text(f'"Resource": "{ARN}"')
    expect(policy).not_to_contain_text(FIRST_ARN)
    page.get_by_label("Encryption context").fill("app=billing")
    expect(cli).to_contain_text("--encryption-context app=billing")
    page.get_by_label("Encryption context").fill("")
    expect(cli).not_to_contain_text("--encryption-context")
    shot("3-guide-second-arn")

    page.get_by_label("Encrypted Data Key").fill(BLOB_B64)
    page.get_by_label("Access Key", exact=True).fill(ACCESS_KEY_ID)
    page.get_by_label("Secret Access Key").fill(SECRET_ACCESS_KEY)
    page.get_by_label("Region code").fill("us-east-1a")
    page.get_by_role("button", name="Register key").click()
    expect(page.locator("#id_region_error")).to_have_text(
        "That is an Availability Zone; the region is us-east-1. Enter us-east-1."
    )
    expect(page.locator("#id_secret_access_key_error")).to_contain_text("enter the secret access key again")
    expect(page.get_by_label("Secret Access Key")).to_have_value("")
    expect(cli).to_contain_text(f"--key-id {ARN}")  # the guide kept the ARN typed
    assert SECRET_ACCESS_KEY not in page.content()
    assert not KeyRegistration.objects.filter(environment=environment, version=2).exists()
    shot("4-region-error")

    page.get_by_label("Region code").fill("us-east-1")
    page.get_by_label("Secret Access Key").fill(SECRET_ACCESS_KEY)
    page.get_by_role("button", name="Register key").click()
    page.wait_for_url(f"{live_server.url}/environments/{environment.public_id}/")
    expect(page.get_by_role("status")).to_contain_text("Key version 2 registered")
    row = page.locator("#version-2")
    expect(row).to_contain_text("Pending validation")
    expect(row).to_contain_text("BYOK (AWS KMS)")
    expect(row).to_contain_text(ARN)
    expect(row).to_contain_text("us-east-1")
    expect(row).to_contain_text("••••••••••••••••MPLE")
    expect(row).to_contain_text(re.compile(r"by alice"))
    shot("5-environment-page")

    registration = KeyRegistration.objects.get(environment=environment, version=2)
    assert registration.status == KeyRegistration.Status.PENDING_VALIDATION
    assert registration.kms_key_arn == ARN


def test_it_shows_credentials_sealed_under_a_removed_sealing_key_as_unreadable(
    page, live_server, sign_in, shot, alice, environment, settings
):
    """GIVEN a BYOK key version registered while the sealing key "test1" was configured
    WHEN the operator configures only a new sealing key
    THEN the environment page says its credentials are unreadable and must be entered again."""
    from keys.services import registrations

    registrations.registration_create(
        environment=environment, actor=alice, kms_key_arn=ARN, region="us-east-1", account_id="444455556666",
        encrypted_data_key=base64.b64decode(BLOB_B64), encryption_context={},
        access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY,
    )
    settings.SEALING_KEYS = ["k2:" + base64.b64encode(bytes(range(32))).decode()]
    sign_in(alice)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/")

    cell = page.locator("#version-2 [data-credentials=unreadable]")
    expect(cell).to_have_text("Credentials unreadable: enter them again")
    shot("1-unreadable")
