"""Role mode end to end (issue 14 item 7), against real processes (see ``conftest.py``):

1. the platform's own principal: an IAM user in the emulator allowed ``sts:AssumeRole``,
   whose access key the portal and the worker get from their environment (the standard
   AWS credential chain), as ``PLATFORM_AWS_PRINCIPAL_ARN``;
2. ``manage.py customer_demo --role ENVIRONMENT_ID`` plays the customer: a KMS key, an
   encrypted data key bound to the environment, a role trusting the platform principal
   with the environment's external ID, its permissions policy;
3. an owner in headless Chromium registers the role (no access key), the worker validates
   it (AssumeRole, then DescribeKey and Decrypt with the temporary credentials), Valid,
   activate, an API key;
4. an application writes and reads records over plain HTTP;
5. revocation, twice: (a) the permissions policy deleted from the role, (b) the role's
   trust policy changed to another external ID. Each time reads answer 503
   ``key_unavailable`` within the bound the environment page states (which includes the
   STS session lifetime), and are served again once the customer restores the policy.

Screenshots of the browser steps go to test-output/e2e-role/.

What the emulator checks, and what stands in for what it does not. Every call below is
made with moto's IAM simulation on (``/moto-api/reset-auth``), from before the
registration: moto then checks each request's credentials and the caller's identity
policies by action, and for ``sts:AssumeRole`` on an existing role also the trust policy:
its ``Principal`` must be the caller's ARN and a ``StringEquals`` ``sts:ExternalId``
condition must match the ``ExternalId`` sent (a request sending none would pass moto; the
portal always sends one). Without the simulation moto's AssumeRole hands out credentials
for any role ARN, even one that does not exist. So:

* "permissions detached" is real here: moto evaluates the role's policies on every KMS
  call made with its temporary credentials, as AWS does;
* "trust policy changed" is real for the portal's next AssumeRole (the re-validation
  assumes the role afresh); what moto cannot show is AWS keeping an already issued
  session valid until it expires. That is why the published bound adds the session
  lifetime (``STS_SESSION_DURATION_SECONDS``, 900 s here: AWS's minimum); the test holds
  the portal to that bound and reports the time it took;
* moto scopes no IAM policy to a resource (a KMS call is checked against ``"*"``) and
  ignores the ``kms:EncryptionContext:`` condition, so the role's permissions policy is
  put again with ``"Resource": "*"`` (the condition kept, unchecked): the key ARN scoping
  and the context condition of the generated policy are pinned by tests/keys
  (test_role_mode.py) and, for AWS's refusals, by Stubber tests (test_diagnosis_role.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from playwright.sync_api import Page, expect

from environments.models import Environment
from keys.models import KeyRegistration
from tests.e2e.conftest import (
    DATA_KEY_CACHE_TTL_SECONDS,
    REVALIDATION_INTERVAL_SECONDS,
    ROOT,
    SCREENSHOTS,
    AwsCli,
    Stack,
    moto_iam_enforced,
    running_stack,
)
from tests.e2e.test_seed_flow import (
    VALIDATION_SECONDS,
    Api,
    activate,
    ada,  # noqa: F401 - the owner fixture
    assert_all_identical,
    create_api_key,
    create_environment,
    customer_admin,
    seconds_until_served,
    seconds_until_unavailable,
    sign_in,
)

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.worker]

ROLE_SCREENSHOTS = SCREENSHOTS.parent / "e2e-role"
PLATFORM_USER = "byok-platform"
# AssumeRole's minimum DurationSeconds: the shortest session lifetime AWS allows.
STS_SESSION_SECONDS = 900
RECORDS = 20
# How long a revocation may take to show here before the test stops waiting: the part of
# the bound that does not depend on the session (TTL + re-validation interval), with room
# for a validation run on a loaded machine. The assertion is against the page's bound.
REVOCATION_WAIT_SECONDS = DATA_KEY_CACHE_TTL_SECONDS + REVALIDATION_INTERVAL_SECONDS + 20
POLICY_NAME = "byok-portal-kms"  # what customer_demo --role (and the setup guide) name the permissions policy


def platform_principal(moto_url: str) -> dict[str, str]:
    """The platform's side, before the portal starts: its IAM user, allowed sts:AssumeRole
    (on any role; the customer's trust policy decides), and the variables that hand the
    portal and the worker its access key through the standard credential chain."""
    aws = AwsCli(moto_url)
    arn = aws("iam", "create-user", "--user-name", PLATFORM_USER)["User"]["Arn"]
    aws("iam", "put-user-policy", "--user-name", PLATFORM_USER, "--policy-name", "assume-customer-roles",
        "--policy-document", json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}))
    key = aws("iam", "create-access-key", "--user-name", PLATFORM_USER)["AccessKey"]
    return {
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        "PLATFORM_AWS_PRINCIPAL_ARN": arn,
        "AWS_STS_ENDPOINT_URL": moto_url,
        "STS_SESSION_DURATION_SECONDS": str(STS_SESSION_SECONDS),
    }


@pytest.fixture
def role_stack(transactional_db, broker_url, tmp_path):
    """GIVEN the product as real processes (``running_stack``) whose platform principal is
    an IAM user of the emulator."""
    with running_stack(broker_url, tmp_path, platform=platform_principal) as running:
        yield running


def customer_demo_role(stack: Stack, environment_id: str) -> dict[str, str]:
    """``manage.py customer_demo --role ENVIRONMENT_ID --json`` against the emulator, with the
    portal's settings: the items to paste, in the registration form's words."""
    done = subprocess.run(
        [sys.executable, "manage.py", "customer_demo", "--role", environment_id, "--json"],
        cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def permissions_policy_any_resource(context: dict[str, str]) -> str:
    """The generated permissions policy with ``"Resource": "*"`` (moto checks KMS calls
    against "*": module docstring)."""
    condition = {f"kms:EncryptionContext:{k}": v for k, v in context.items()}
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "*"},
        {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*", "Condition": {"StringEquals": condition}},
    ]})


def register_role(page: Page, items: dict[str, str], external_id: str, shot) -> None:
    page.get_by_role("link", name="Register a BYOK key").click()
    page.get_by_label("IAM role (recommended)").check()
    for label in ("Encrypted Data Key", "Role ARN", "KMS Key ARN", "Region code"):
        page.get_by_label(label, exact=True).fill(items[label])
    page.get_by_label("Encryption context").fill(items["Encryption context"])
    expect(page.get_by_label("Secret Access Key")).to_be_hidden()
    # The guide's trust policy carries this environment's external ID.
    expect(page.locator("#guide-trust-policy")).to_contain_text(external_id)
    shot("role-registration")
    page.get_by_role("button", name="Register key").click()
    expect(page.get_by_text("Key version 2 registered")).to_be_visible()


def watch_role_validation_pass(page: Page, shot) -> None:
    """The worker validates version 2: AssumeRole then the KMS checks, no failure."""
    expect(page.locator("#version-2 [data-status-cell] .status")).to_have_text(
        "Valid", timeout=VALIDATION_SECONDS * 1000)
    panel = page.locator("tbody[data-version='2'] [data-validation-panel]")
    expect(panel.locator("[data-run-outcome]").first).to_have_text("Passed")
    expect(panel.locator("table.checks")).to_contain_text("AssumeRole")
    statuses = {s.strip() for s in panel.locator("table.checks tbody tr td:nth-child(2)").all_inner_texts()}
    assert statuses <= {"Passed", "Not checked"} and "Passed" in statuses, statuses
    shot("role-validation-passed")


@pytest.mark.usefixtures("ada")
def test_it_runs_the_role_flow_from_customer_demo_to_a_revocation_and_back(role_stack, browser_thread, capsys):
    """GIVEN the product running as real processes with a platform principal, and an owner
    WHEN the customer plays ``customer_demo --role``, the owner registers the role and an
    application uses the records API, then the customer detaches the role's permissions and
    later changes its trust policy, restoring each
    THEN each revocation turns reads into 503 key_unavailable within the bound the page
    states (cache TTL + re-validation interval + session lifetime), and reads are served
    again after each restore."""
    timings: dict[str, float] = {}

    browser_thread.run(lambda page, shot: role_flow(role_stack, page, shot, timings), screenshots=ROLE_SCREENSHOTS)

    with capsys.disabled():
        print("\n  e2e role flow timings:", ", ".join(f"{k}: {v}" for k, v in timings.items()))


def role_flow(stack: Stack, page: Page, shot, timings: dict[str, float]) -> None:
    clock = time.monotonic()

    def lap(step: str) -> None:
        nonlocal clock
        timings[step] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()

    # 1-2. The owner creates an environment; the customer plays customer_demo --role for it.
    sign_in(page, stack)
    environment_id = create_environment(page, "production")
    items = customer_demo_role(stack, environment_id)
    registration_external_id = Environment.objects.get(public_id=environment_id).aws_external_id
    role_arn = items["Role ARN"]
    role_name = role_arn.rsplit("/", 1)[1]
    context = json.loads(items["Encryption context"])
    assert context == {"portal:environment": environment_id}
    assert "Access Key" not in items and "Secret Access Key" not in items
    # From here on moto checks credentials, identity policies and the trust policy.
    aws = customer_admin(AwsCli(stack.moto_url))
    moto_iam_enforced(stack.moto_url)
    aws("iam", "put-role-policy", "--role-name", role_name, "--policy-name", POLICY_NAME,
        "--policy-document", permissions_policy_any_resource(context))
    trust = aws("iam", "get-role", "--role-name", role_name)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] == registration_external_id
    lap("1-2 customer_demo --role")

    # 3. Register the role, watch the worker validate it, activate, an API key.
    register_role(page, items, registration_external_id, shot)
    watch_role_validation_pass(page, shot)
    activate(page, 2)
    api_key = create_api_key(page, shot)
    registration = KeyRegistration.objects.get(environment__public_id=environment_id, version=2)
    assert (registration.access_mode, registration.role_arn, registration.sealed_secret_access_key) == (
        "role", role_arn, "")
    lap("3 browser: register, validate, activate, API key")

    # 4. Records over the API.
    api = Api(stack, environment_id, api_key)
    bodies = {f"member:{i:02d}": {"n": i, "name": f"Member {i}", "plan": ["basic", "plus"][i % 2]}
              for i in range(RECORDS)}
    for record_key, body in bodies.items():
        assert api.put(record_key, body)["key_version"] == 2
    assert_all_identical(api, bodies, version=2)
    lap("4 HTTP: writes and reads")

    # 5. The bound the page states includes the session lifetime.
    page.goto(f"{stack.portal_url}/environments/{environment_id}/")
    bound = int(page.locator("#revocation-bound").get_attribute("data-bound-seconds"))
    assert bound == DATA_KEY_CACHE_TTL_SECONDS + REVALIDATION_INTERVAL_SECONDS + STS_SESSION_SECONDS
    expect(page.locator("#revocation-bound")).to_contain_text(f"within {bound} seconds")
    probe = "member:07"
    assert api.get(probe)[0] == 200

    # 5a. Permissions detached from the role, then put back.
    started = time.monotonic()
    aws("iam", "delete-role-policy", "--role-name", role_name, "--policy-name", POLICY_NAME)
    elapsed, refused = seconds_until_unavailable(api, probe, started=started, limit=REVOCATION_WAIT_SECONDS)
    # KMS refuses the role's temporary credentials.
    assert (refused["error"]["code"], refused["error"]["reason"]) == ("key_unavailable", "access_denied"), refused
    assert elapsed <= bound, f"reads stopped {elapsed:.1f} s after the revocation; the page promises {bound} s"
    timings["5a permissions detached → 503 (s)"] = round(elapsed, 1)
    page.reload()
    expect(page.locator("#version-2 [data-status-cell] .status")).to_have_text("Inaccessible")
    shot("revoked-permissions-detached")

    started = time.monotonic()
    aws("iam", "put-role-policy", "--role-name", role_name, "--policy-name", POLICY_NAME,
        "--policy-document", permissions_policy_any_resource(context))
    timings["5a permissions back → 200 (s)"] = round(seconds_until_served(api, probe, started=started), 1)
    assert_all_identical(api, bodies, version=2)
    page.reload()
    expect(page.locator("#version-2 [data-status-cell] .status")).to_have_text("Active")
    shot("restored-permissions")

    # 5b. The trust policy changed to another external ID, then restored.
    other = json.dumps({**trust, "Statement": [{**trust["Statement"][0], "Condition": {
        "StringEquals": {"sts:ExternalId": "not-this-environment"}}}]})
    started = time.monotonic()
    aws("iam", "update-assume-role-policy", "--role-name", role_name, "--policy-document", other)
    elapsed, refused = seconds_until_unavailable(api, probe, started=started, limit=REVOCATION_WAIT_SECONDS)
    # The re-validation assumes the role afresh: STS refuses it.
    assert (refused["error"]["code"], refused["error"]["reason"]) == ("key_unavailable", "role_access_denied"), refused
    assert elapsed <= bound, f"reads stopped {elapsed:.1f} s after the revocation; the page promises {bound} s"
    timings["5b trust changed → 503 (s)"] = round(elapsed, 1)
    page.reload()
    expect(page.locator("#version-2 [data-status-cell] .status")).to_have_text("Inaccessible")
    expect(page.locator("#version-2 [data-kms-problem='role_access_denied']")).to_contain_text(
        "STS refused to let the platform assume the role")
    expect(page.locator("tbody[data-version='2'] [data-validation-panel] table.checks")).to_contain_text(
        "external ID")
    shot("revoked-trust-policy-changed")

    started = time.monotonic()
    aws("iam", "update-assume-role-policy", "--role-name", role_name, "--policy-document", json.dumps(trust))
    timings["5b trust restored → 200 (s)"] = round(seconds_until_served(api, probe, started=started), 1)
    assert_all_identical(api, bodies, version=2)
    page.reload()
    expect(page.locator("#version-2 [data-status-cell] .status")).to_have_text("Active")
    shot("restored-trust-policy")
    lap("5 revocation and restore, twice")

    # Neither the platform's secret nor the API key in what the processes wrote.
    logs = stack.logs()
    for secret in (stack.env["AWS_SECRET_ACCESS_KEY"], api_key):
        assert secret not in logs
