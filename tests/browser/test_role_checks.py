"""The checks list of a role-mode key version for each STS failure, in headless Chromium
(issue 14, "Done when": the checks list for each failure case, as screenshots).

Each case validates a role-mode version (``registration_validate``, the worker's service)
with the platform's STS client stubbed by botocore's Stubber, answering with the error code,
HTTP status and message STS documents for that failure
(https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html#API_AssumeRole_Errors,
CommonErrors.html); moto cannot play these (its AssumeRole refuses nothing unless its IAM
simulation is on, and then only by trust policy). The version's row and its checks list are
saved as test-output/screenshots/role-check-<case>.png, and the visible cause and remedy
are asserted.

AWS answers a missing role, a trust policy that does not name the platform principal and
an external ID missing from or different in the trust policy with the same AccessDenied
(on purpose: it would tell a caller which roles exist), so one case covers the three and
the page must say how to check each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from botocore.stub import Stubber
from playwright.sync_api import expect

from keys import kms, parsers, sts
from keys.kms import KmsCredentials
from keys.models import KeyRegistration
from keys.services.registrations import registration_create
from keys.services.sealing import role_session_name
from keys.services.validation import registration_validate
from tests.aws import isolate_aws_environment
from tests.browser.conftest import SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

Status = KeyRegistration.Status
REGION = "eu-west-1"
ACCOUNT = "111122223333"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/team/byok-portal-access"
PLATFORM = "arn:aws:iam::999988887777:role/byok-platform"
BLOB = b"\x01\x02\x03\x00" + b"opaque-kms-ciphertext" * 8
DENIED = f"User: {PLATFORM} is not authorized to perform: sts:AssumeRole on resource: {ROLE_ARN}"
SECRET = "CanaryStsSecret/0123456789abcdefDoNotLeak"
TOKEN = "CanaryStsSessionToken+FwoGZXIvYXdzEDoNotLeak"
TEMPORARY = KmsCredentials("ASIACANARY0000000001", SECRET, version="sts", session_token=TOKEN)


@dataclass(frozen=True)
class Case:
    """One STS failure: what STS answers, and what the page must say."""

    name: str
    code: str
    http_status: int
    message: str
    result: str  # the Result cell: "Failed" (the customer must act) or "Could not check"
    version_status: str  # the version's status after the run
    note: str  # under the status: why it could not verify (transient failures), or ""
    causes: tuple[str, ...]
    remedies: tuple[str, ...]


CASES = [
    Case("access-denied", "AccessDenied", 403, DENIED, "Failed", "Failed", "",
         causes=("does not say which", "the role does not exist", "does not name the platform principal",
                 "external ID is missing"),
         remedies=("aws iam get-role --role-name byok-portal-access --query Role.Arn",
                   f'"AWS": "{PLATFORM}"', '"sts:ExternalId": "{external_id}"',
                   "update-assume-role-policy --role-name byok-portal-access --policy-document '{{\"Version\"")),
    Case("duration-too-long", "ValidationError", 400,
         "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.", "Failed", "Failed", "",
         causes=("3600-second session", "maximum session duration"),
         remedies=("aws iam update-role --role-name byok-portal-access --max-session-duration 3600",)),
    Case("region-disabled", "RegionDisabledException", 403,
         f"STS is not activated in this region for account:{ACCOUNT}.", "Failed", "Failed", "",
         causes=(f"STS is not activated in {REGION}",),
         remedies=(f"In account {ACCOUNT}", "Security Token Service (STS)", f"activate {REGION}")),
    Case("expired-token", "ExpiredTokenException", 400, "The security token included in the request is expired",
         "Could not check", "Pending validation", "could not verify: STS refused the platform's own AWS credentials",
         causes=("platform's own AWS credentials", "platform's side, not in your AWS account"),
         remedies=("Nothing to change on your side", "operators")),
    Case("invalid-client-token", "InvalidClientTokenId", 403, "The security token included in the request is invalid.",
         "Could not check", "Pending validation", "could not verify: STS refused the platform's own AWS credentials",
         causes=("InvalidClientTokenId", "platform's side, not in your AWS account"),
         remedies=("Nothing to change on your side",)),
    Case("throttled", "Throttling", 400, "Rate exceeded", "Could not check", "Pending validation",
         "could not verify: STS throttled the AssumeRole request",
         causes=("STS throttled",), remedies=("Nothing to change on your side", "Validate again")),
]


@pytest.fixture(autouse=True)
def role_mode(settings, monkeypatch):
    isolate_aws_environment(monkeypatch, REGION)
    settings.PLATFORM_AWS_PRINCIPAL_ARN = PLATFORM
    settings.AWS_STS_ENDPOINT_URL = None
    settings.AWS_KMS_ENDPOINT_URL = None
    settings.STS_SESSION_DURATION_SECONDS = 3600
    settings.VALIDATION_CHECK_EXCESS_PRIVILEGE = False
    monkeypatch.setattr("keys.tasks.validate_registration.delay", lambda *args, **kwargs: None)
    sts.clear_clients()
    kms.clear_clients()
    sts.role_sessions.clear()
    yield
    sts.clear_clients()
    kms.clear_clients()
    sts.role_sessions.clear()


def _role_version(environment, alice) -> KeyRegistration:
    return registration_create(
        environment=environment, actor=alice, kms_key_arn=KEY_ARN, region=REGION, account_id=ACCOUNT,
        encrypted_data_key=BLOB, encryption_context=parsers.environment_encryption_context(environment.public_id),
        role_arn=ROLE_ARN,
    )


def _assume_role_params(registration: KeyRegistration) -> dict:
    return {"RoleArn": ROLE_ARN, "ExternalId": registration.environment.aws_external_id,
            "RoleSessionName": role_session_name(registration), "DurationSeconds": 3600}


def _screenshot_checks(page, live_server, environment, name: str):
    """Open the environment page and save version 2's row and checks list as role-check-<name>.png."""
    page.goto(f"{live_server.url}/environments/{environment.public_id}/")
    version = page.locator("tbody[data-version='2']")
    version.scroll_into_view_if_needed()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    version.screenshot(path=str(SCREENSHOTS / f"role-check-{name}.png"))
    return version


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_it_shows_the_cause_and_remedy_of_each_assume_role_failure_in_the_checks_list(
    page, live_server, sign_in, alice, environment, case
):
    """GIVEN a role-mode key version WHEN its validation's AssumeRole gets STS's answer for
    ``case`` THEN the checks list shows the AssumeRole check failed (or "Could not check",
    for the platform's own problems and throttling) with its AWS error code, the cause and
    the remedy, and every KMS check after it as not checked."""
    registration = _role_version(environment, alice)
    with Stubber(sts.client(region=REGION)) as stub:
        # A Stubber answer short-circuits the HTTP layer, so the client's retries do not apply.
        stub.add_client_error("assume_role", case.code, case.message, http_status_code=case.http_status,
                              expected_params=_assume_role_params(registration))
        registration_validate(registration_id=registration.pk, trigger="manual")
        stub.assert_no_pending_responses()
    sign_in(alice)

    version = _screenshot_checks(page, live_server, environment, case.name)

    expect(version.locator("[data-status-cell] .status")).to_have_text(case.version_status)
    if case.note:
        expect(version.locator("[data-unverified-note]")).to_contain_text(case.note)
    else:
        expect(version.locator("[data-unverified-note]")).to_have_count(0)
    check = version.locator("tr[data-check='sts.assume_role']")
    expect(check.locator("td").nth(1)).to_contain_text(case.result)
    expect(check.locator("td").nth(1)).to_contain_text(case.code)
    for text in case.causes:
        expect(check.locator("td").nth(2)).to_contain_text(text)
    for text in case.remedies:
        expect(check.locator("td").nth(3)).to_contain_text(text.format(external_id=environment.aws_external_id))
    for name in ("describe_key.call", "decrypt.call"):
        expect(version.locator(f"tr[data-check='{name}'] td").nth(1)).to_have_text("Not checked")


def test_it_says_the_roles_permissions_policy_when_kms_refuses_the_assumed_role(
    page, live_server, sign_in, alice, environment
):
    """GIVEN a role the platform can assume WHEN KMS refuses DescribeKey and Decrypt to its
    temporary credentials (the permissions policy detached or not covering the key) THEN
    AssumeRole passed and the KMS checks failed, pointing at the role's permissions policy."""
    registration = _role_version(environment, alice)
    # The KMS client signed with the role's temporary credentials, stubbed too.
    with Stubber(sts.client(region=REGION)) as sts_stub, \
            Stubber(kms.client(region=REGION, credentials=TEMPORARY)) as kms_stub:
        sts_stub.add_response("assume_role", {
            "Credentials": {"AccessKeyId": TEMPORARY.access_key_id, "SecretAccessKey": SECRET, "SessionToken": TOKEN,
                            "Expiration": datetime.now(UTC) + timedelta(hours=1)},
            "AssumedRoleUser": {"AssumedRoleId": "AROAEXAMPLE:portal-env",
                                "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/byok-portal-access/portal-env"},
        }, _assume_role_params(registration))
        kms_stub.add_client_error("describe_key", "AccessDeniedException",
                                  f"User: arn:aws:sts::{ACCOUNT}:assumed-role/byok-portal-access/portal-env is not "
                                  "authorized to perform: kms:DescribeKey", http_status_code=400)
        kms_stub.add_client_error("decrypt", "AccessDeniedException",
                                  f"User: arn:aws:sts::{ACCOUNT}:assumed-role/byok-portal-access/portal-env is not "
                                  "authorized to perform: kms:Decrypt", http_status_code=400)
        registration_validate(registration_id=registration.pk, trigger="manual")
    sign_in(alice)

    version = _screenshot_checks(page, live_server, environment, "kms-denied-to-the-role")

    expect(version.locator("[data-status-cell] .status")).to_have_text("Failed")
    expect(version.locator("tr[data-check='sts.assume_role'] td").nth(1)).to_have_text("Passed")
    for name in ("describe_key.call", "decrypt.call"):
        row = version.locator(f"tr[data-check='{name}']")
        expect(row.locator("td").nth(1)).to_contain_text("Failed")
        expect(row.locator("td").nth(3)).to_contain_text("permissions policy of the role")
    assert SECRET not in page.content() and TOKEN not in page.content()


def test_it_says_sts_refused_the_role_when_a_version_in_service_loses_it(page, live_server, sign_in, alice, environment):
    """GIVEN an active role-mode version WHEN the periodic re-validation's AssumeRole is
    refused (the trust policy changed) THEN the version is inaccessible and its status says
    that STS refused to let the platform assume the role, with the same cause and remedy as
    the check (not "KMS refused Decrypt")."""
    registration = _role_version(environment, alice)
    environment.key_registrations.filter(version=1).update(status=Status.DECRYPT_ONLY)
    KeyRegistration.objects.filter(pk=registration.pk).update(status=Status.ACTIVE)
    with Stubber(sts.client(region=REGION)) as stub:
        stub.add_client_error("assume_role", "AccessDenied", DENIED, http_status_code=403,
                              expected_params=_assume_role_params(registration))
        registration_validate(registration_id=registration.pk, trigger="periodic")
    sign_in(alice)

    version = _screenshot_checks(page, live_server, environment, "access-denied-while-active")

    expect(version.locator("[data-status-cell] .status")).to_have_text("Inaccessible")
    problem = version.locator("[data-status-cell] [data-kms-problem='role_access_denied']")
    expect(problem).to_contain_text("STS refused to let the platform assume the role: AWS refused sts:AssumeRole")
    expect(problem).to_contain_text("aws iam get-role --role-name byok-portal-access")
    expect(problem).not_to_contain_text("KMS refused")
    expect(page.get_by_text("STS refused the role: version 2 stopped serving (role access denied)")).to_be_visible()
