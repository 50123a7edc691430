"""No dead ends (issue 13): an admin fixes a failed key version in place, or discards it,
in headless Chromium against moto (in-process ``mock_aws``, which enforces the encryption
context). Validation jobs run in a background thread of this process as soon as they are
queued, like a worker would."""

from __future__ import annotations

import base64
import threading

import pytest
from django.db import connection
from moto import mock_aws
from playwright.sync_api import expect

from keys import kms, tasks
from keys.models import AuditEvent, KeyRegistration
from keys.services import validation
from tests.keys.moto_customer import register, set_up_customer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

Status = KeyRegistration.Status


@pytest.fixture
def aws(monkeypatch):
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    kms.clear_clients()
    with mock_aws():
        yield
    kms.clear_clients()


@pytest.fixture
def worker(monkeypatch):
    """Each queued validation runs at once in its own thread (the live server's request
    has committed: the job is queued on commit)."""
    threads: list[threading.Thread] = []

    def run(registration_id, trigger):
        try:
            validation.registration_validate(registration_id=registration_id, trigger=trigger)
        finally:
            connection.close()

    def delay(registration_id, trigger):
        thread = threading.Thread(target=run, args=(registration_id, trigger), daemon=True)
        threads.append(thread)
        thread.start()

    monkeypatch.setattr(tasks.validate_registration, "delay", delay)
    yield
    for thread in threads:
        thread.join(30)


@pytest.fixture
def violations(page):
    """Every Content Security Policy violation Chromium reports on the page's console."""
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text) if "Content Security Policy" in message.text else None)
    return seen


def _fill_five_items(page, customer, *, encryption_context: str = "") -> None:
    page.get_by_label("Encrypted Data Key").fill(base64.b64encode(customer.encrypted_data_key).decode())
    page.get_by_label("Access Key", exact=True).fill(customer.access_key_id)
    page.get_by_label("Secret Access Key").fill(customer.secret_access_key)
    page.get_by_label("KMS Key ARN").fill(customer.kms_key_arn)
    page.get_by_label("Region code").fill(customer.region)
    page.get_by_label("Encryption context").fill(encryption_context)


def test_it_fixes_a_forgotten_encryption_context_by_editing_the_version(
    page, live_server, sign_in, shot, alice, environment, aws, worker, violations
):
    """GIVEN the customer generated the encrypted data key with --encryption-context env=prod
    WHEN alice registers the five items but forgets the context
    THEN validation fails saying the context differs, the banner about the started
    validation goes, and "Validate again" is offered only once it is over;
    WHEN she edits version 2, enters the context (the secret is not asked again) and saves
    THEN it validates to Valid, shows the context, and after a confirmation step
    "Activate" makes it active and version 1 decrypt-only; the audit trail says so in words."""
    customer = set_up_customer(encryption_context={"env": "prod"})
    sign_in(alice)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/keys/new/")
    _fill_five_items(page, customer)
    shot("1-registration-without-context")
    page.get_by_role("button", name="Register key").click()
    page.wait_for_url(f"{live_server.url}/environments/{environment.public_id}/")

    version = page.locator("tbody[data-version='2']")
    status = version.locator("[data-status-cell] .status").first
    expect(status).to_have_text("Failed", timeout=30_000)
    panel = version.locator("[data-validation-panel]")
    expect(panel.locator("[data-check='decrypt.call']")).to_contain_text("the encryption context differs")
    expect(panel.locator("[data-check='decrypt.call']")).to_contain_text("Failed")
    expect(page.locator(".msg[data-validation-banner='2']")).to_have_count(0)  # the banner followed the state
    expect(version.locator("[data-context-none]")).to_have_text("none")
    expect(panel.get_by_role("button", name="Validate again")).to_be_visible()
    expect(page.get_by_role("link", name="Replace credentials")).to_have_count(0)  # the wrong fix
    # One status everywhere: the lifecycle card, rendered while validating, follows too.
    expect(page.locator("[data-lifecycle-version='2'] .status")).to_have_text("Failed")
    shot("2-failed-with-message")

    panel.get_by_role("link", name="Edit version 2").click()
    expect(page.get_by_role("heading", name="Edit key version 2")).to_be_visible()
    expect(page.locator("[data-last-failure]")).to_contain_text("the encryption context differs")
    expect(page.get_by_label("KMS Key ARN")).to_have_value(customer.kms_key_arn)
    expect(page.get_by_label("Secret Access Key")).to_have_value("")
    expect(page.locator("#guide-cli")).to_contain_text(f"--key-id {customer.kms_key_arn}")
    page.get_by_label("Encryption context").fill("env=prod")
    expect(page.locator("#guide-cli")).to_contain_text("--encryption-context env=prod")
    shot("3-edit-page")
    assert customer.secret_access_key not in page.content()
    page.get_by_role("button", name="Save and validate again").click()
    page.wait_for_url(f"{live_server.url}/environments/{environment.public_id}/#version-2")

    status = page.locator("tbody[data-version='2'] [data-status-cell] .status").first
    expect(status).to_have_text("Valid", timeout=30_000)
    expect(page.locator("tbody[data-version='2'] [data-context-pair]")).to_have_text("env=prod")
    expect(page.locator(".msg[data-validation-banner='2']")).to_have_count(0)
    expect(page.locator("[data-lifecycle-version='2'] .status")).to_have_text("Valid")
    shot("4-valid-after-edit")

    page.locator("tbody[data-version='2']").get_by_role("link", name="Activate version 2…").click()
    expect(page.get_by_role("heading", name="Activate key version 2?")).to_be_visible()
    expect(page.locator("[data-consequences]")).to_contain_text("Make version 1 (active now) decrypt-only")
    shot("5-confirm-activation")
    assert KeyRegistration.objects.get(environment=environment, version=2).status == Status.VALID
    page.get_by_role("button", name="Activate version 2").click()
    expect(page.get_by_text("Key version 2 is now active")).to_be_visible()
    expect(page.locator("tbody[data-version='2'] [data-status-cell] .status").first).to_have_text("Active")
    expect(page.locator("#version-1 .status")).to_have_text("Decrypt-only")
    audit = page.locator("#audit")
    expect(audit).to_contain_text("Version 2 edited")
    expect(audit).to_contain_text("Activated: version 2 encrypts new records")
    expect(audit).to_contain_text("Version 1 is now decrypt-only")
    expect(audit).not_to_contain_text("pending_validation")
    page.locator("#audit").scroll_into_view_if_needed()
    shot("6-active-and-audit")

    v2 = KeyRegistration.objects.get(environment=environment, version=2)
    assert (v2.status, v2.encryption_context) == (Status.ACTIVE, {"env": "prod"})
    assert not violations, violations


def test_it_discards_a_failed_version_after_confirming_and_frees_its_access_key(
    page, live_server, sign_in, shot, alice, environment, aws, worker, violations
):
    """GIVEN version 2 failed validation (registered without its encryption context)
    WHEN alice chooses "Discard version 2…"
    THEN a page says exactly what will be destroyed, and nothing is until she confirms;
    once confirmed, version 2 is Discarded with its material destroyed and audited, and the
    same access key can be registered again as version 3."""
    customer = set_up_customer(encryption_context={"env": "prod"})
    register(environment, alice, customer, encryption_context={})
    sign_in(alice)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/")
    version = page.locator("tbody[data-version='2']")
    expect(version.locator("[data-status-cell] .status").first).to_have_text("Failed", timeout=30_000)

    version.get_by_role("link", name="Discard version 2…").click()
    expect(page.get_by_role("heading", name="Discard key version 2?")).to_be_visible()
    consequences = page.locator("[data-consequences]")
    expect(consequences).to_contain_text(
        f"Destroy the sealed IAM credentials (••••{customer.access_key_id[-4:]}) and the encrypted data key of key version 2."
    )
    expect(consequences).to_contain_text("Free its access key")
    shot("1-confirm-discard")
    assert KeyRegistration.objects.get(environment=environment, version=2).sealed_secret_access_key

    page.get_by_role("link", name="Keep it as it is").click()
    expect(page.locator("tbody[data-version='2'] [data-status-cell] .status").first).to_have_text("Failed")
    page.locator("tbody[data-version='2']").get_by_role("link", name="Discard version 2…").click()
    page.get_by_role("button", name="Discard version 2").click()
    expect(page.get_by_text("Key version 2 discarded")).to_be_visible()
    version = page.locator("tbody[data-version='2']")
    expect(version.locator("[data-status-cell] .status").first).to_have_text("Discarded")
    expect(version.get_by_role("link", name="Edit version 2")).to_have_count(0)
    expect(page.locator("#audit")).to_contain_text("Version 2 discarded")
    expect(page.locator("#audit")).to_contain_text("Key material of version 2 destroyed")
    shot("2-discarded")
    v2 = KeyRegistration.objects.get(environment=environment, version=2)
    assert (v2.status, v2.sealed_access_key_id, v2.sealed_secret_access_key, bytes(v2.encrypted_data_key)) == (
        Status.DISCARDED, "", "", b""
    )
    assert AuditEvent.objects.filter(registration=v2, action=AuditEvent.Action.MATERIAL_DESTROYED, actor=alice).exists()

    page.goto(f"{live_server.url}/environments/{environment.public_id}/keys/new/")
    _fill_five_items(page, customer, encryption_context="env=prod")
    page.get_by_role("button", name="Register key").click()
    page.wait_for_url(f"{live_server.url}/environments/{environment.public_id}/")
    expect(page.get_by_role("status")).to_contain_text("Key version 3 registered")
    expect(page.locator("tbody[data-version='3'] [data-status-cell] .status").first).to_have_text("Valid", timeout=30_000)
    expect(page.locator("[data-lifecycle-version='3'] .status")).to_have_text("Valid")
    expect(page.locator("tbody[data-version='2'] details.validation-checks")).not_to_have_attribute("open", "")
    shot("3-same-access-key-registered-again")
    assert not violations, violations
