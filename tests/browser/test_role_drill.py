"""The revocation drill of a role-mode key version, in headless Chromium (issue 14 item 4):
the role's commands with the real values, copy buttons that copy them exactly, and the bound
with the session lifetime. Screenshot: test-output/screenshots/test_it_gives_the_role_mode_drill_*."""

import json
import shlex

import pytest
from playwright.sync_api import expect

from keys import parsers
from keys.models import KeyRegistration
from keys.services.registrations import registration_create
from tests.browser.conftest import copy_with

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

Status = KeyRegistration.Status
KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ROLE_ARN = "arn:aws:iam::111122223333:role/team/byok-portal-access"
PLATFORM = "arn:aws:iam::999988887777:role/byok-platform"


@pytest.fixture
def violations(page):
    """Every Content Security Policy violation Chromium reports on the page's console."""
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text) if "Content Security Policy" in message.text else None)
    return seen


def test_it_gives_the_role_mode_drill_commands_with_copy_buttons_and_the_session_in_the_bound(
    page, live_server, sign_in, shot, alice, environment, settings, violations
):
    """GIVEN the active key version of "production" reaches KMS through a role
    WHEN alice (owner) opens the revocation drill
    THEN it gives the commands that delete and put back the role's permissions policy and
    that deny and restore its trust, each copied exactly by its button, and a bound that
    adds the session lifetime (60 + 120 + 900 s)."""
    settings.PLATFORM_AWS_PRINCIPAL_ARN = PLATFORM
    settings.DATA_KEY_CACHE_TTL_SECONDS, settings.REVALIDATION_INTERVAL_SECONDS = 60, 120
    settings.STS_SESSION_DURATION_SECONDS = 900
    context = parsers.environment_encryption_context(environment.public_id)
    registration = registration_create(
        environment=environment, actor=alice, kms_key_arn=KEY_ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 40, encryption_context=context, role_arn=ROLE_ARN,
    )
    environment.key_registrations.filter(version=1).update(status=Status.DECRYPT_ONLY)
    KeyRegistration.objects.filter(pk=registration.pk).update(status=Status.ACTIVE)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    sign_in(alice)

    page.goto(f"{live_server.url}/environments/{environment.public_id}/revocation-drill/")

    # No worker here (eager mode): cache TTL + one more cache lifetime + the session lifetime.
    expect(page.get_by_text("stops decrypting your data within 1020 seconds (17 min)")).to_be_visible()
    expect(page.locator("[data-bound-parts]")).to_contain_text("a role session lasts 900 s")
    expect(page.locator("[data-bound-parts]")).to_contain_text("one cache lifetime (60 s) later")
    steps = page.locator("[data-drill-mode='role']")
    expect(steps).to_contain_text("Delete the role's permissions policy byok-portal-kms")
    delete = "aws iam delete-role-policy --role-name byok-portal-access --policy-name byok-portal-kms"
    expect(page.locator("#drill-delete-policy")).to_have_text(delete)
    shot("1-role-drill-commands")
    assert copy_with(page, "Copy the delete-role-policy command") == delete

    put = shlex.split(copy_with(page, "Copy the put-role-policy command"))
    assert put[:8] == ["aws", "iam", "put-role-policy", "--role-name", "byok-portal-access", "--policy-name",
                       "byok-portal-kms", "--policy-document"]
    assert json.loads(put[8]) == json.loads(parsers.iam_policy_json(kms_key_arn=KEY_ARN, encryption_context=context))

    distrust = shlex.split(copy_with(page, "Copy the command that makes the trust policy deny the platform"))
    assert distrust[:5] == ["aws", "iam", "update-assume-role-policy", "--role-name", "byok-portal-access"]
    assert json.loads(distrust[6])["Statement"][0] == {
        "Effect": "Deny", "Principal": {"AWS": PLATFORM}, "Action": "sts:AssumeRole"}
    trust = shlex.split(copy_with(page, "Copy the command that restores the trust policy"))
    assert json.loads(trust[6]) == json.loads(
        parsers.trust_policy_json(platform_principal_arn=PLATFORM, external_id=environment.aws_external_id))
    text = page.locator("main").inner_text()
    assert "PRINTED_ABOVE" not in text and "delete-access-key" not in text
    assert not violations, violations
