"""The whole seed flow, end to end, against real processes (see ``conftest.py``):

1. the customer's side in AWS with the real AWS CLI against the emulator;
2. an admin in headless Chromium: sign in, create an environment, register the five
   items, watch validation pass without a reload, activate, create an API key;
3. an application over plain HTTP: write 100 records, read them back, find them in one call;
4. rotation to a second BYOK key in the browser, re-encryption by the worker;
5. revocation in the emulator (moto's IAM simulation on): reads answer 503
   ``key_unavailable`` within the bound the environment page states, and are served
   again once access is restored (policy attached again; a new access key through
   "Replace credentials").

Screenshots of every browser step go to test-output/e2e/.

Note on the IAM policy: moto's IAM simulation checks KMS calls against the resource "*",
so a policy scoped to the key ARN (what AWS needs, and what the setup guide shows) would
deny everything there (docs/architecture.md, "Testing KMS honestly"). The customer's policy here
allows kms:Decrypt and kms:DescribeKey on "*"; the validation still proves that nothing
else is allowed (its excess-privilege check passes under the simulation).
"""

from __future__ import annotations

import http.client
import json
import re
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from playwright.sync_api import Page, expect

from environments.models import Membership, Organization
from keys.models import KeyRegistration, Record
from tests.e2e.conftest import REGION, AwsCli, Stack, moto_iam_enforced
from tests.support import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.worker]

USERNAME, PASSWORD = "ada", "e2e correct horse battery staple"
RECORDS = 100
VALIDATION_SECONDS = 30
REENCRYPTION_SECONDS = 60
RESTORE_SECONDS = 30
FIVE_ITEMS = ("Encrypted Data Key", "Access Key", "Secret Access Key", "KMS Key ARN", "Region code")


# ---------------------------------------------------------------------------
# 1. The customer's side, with the AWS CLI
# ---------------------------------------------------------------------------


@dataclass
class CustomerKey:
    """What one run of the seed document's AWS steps produced."""

    kms_key_arn: str
    encrypted_data_key: str  # base64, as the CLI prints CiphertextBlob
    user_name: str
    policy_arn: str
    access_key_id: str
    secret_access_key: str

    def items(self) -> dict[str, str]:
        """The five items, in the registration form's words."""
        return dict(zip(FIVE_ITEMS, (self.encrypted_data_key, self.access_key_id, self.secret_access_key,
                                     self.kms_key_arn, REGION), strict=True))


def _policy_document() -> str:
    # Resource "*": see the module docstring (moto's IAM simulation).
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": "*"},
    ]})


def customer_admin(aws: AwsCli) -> AwsCli:
    """The customer's own administrator (allowed everything), created before moto's IAM
    simulation is switched on: every later CLI call is made with its credentials."""
    aws("iam", "create-user", "--user-name", "customer-admin")
    aws("iam", "put-user-policy", "--user-name", "customer-admin", "--policy-name", "admin", "--policy-document",
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = aws("iam", "create-access-key", "--user-name", "customer-admin")["AccessKey"]
    return aws.as_user((key["AccessKeyId"], key["SecretAccessKey"]))


def customer_sets_up_a_key(aws: AwsCli, name: str) -> CustomerKey:
    """The seed document's steps: a symmetric KMS key, an encrypted data key
    (generate-data-key-without-plaintext --key-spec AES_256), a policy allowing
    kms:Decrypt + kms:DescribeKey, an IAM user with that policy, its access key."""
    metadata = aws("kms", "create-key", "--description", f"BYOK {name}", "--key-spec", "SYMMETRIC_DEFAULT",
                   "--key-usage", "ENCRYPT_DECRYPT")["KeyMetadata"]
    arn = metadata["Arn"]
    blob = aws("kms", "generate-data-key-without-plaintext", "--key-id", arn, "--key-spec", "AES_256")["CiphertextBlob"]
    policy_arn = aws("iam", "create-policy", "--policy-name", f"byok-portal-{name}",
                     "--policy-document", _policy_document())["Policy"]["Arn"]
    user = f"byok-portal-{name}"
    aws("iam", "create-user", "--user-name", user)
    aws("iam", "attach-user-policy", "--user-name", user, "--policy-arn", policy_arn)
    access_key = aws("iam", "create-access-key", "--user-name", user)["AccessKey"]
    return CustomerKey(arn, blob, user, policy_arn, access_key["AccessKeyId"], access_key["SecretAccessKey"])


# ---------------------------------------------------------------------------
# 2. The admin, in the browser
# ---------------------------------------------------------------------------


def sign_in(page: Page, stack: Stack) -> None:
    page.goto(f"{stack.portal_url}/accounts/login/")
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{stack.portal_url}/")
    expect(page.get_by_role("heading", name="Your environments")).to_be_visible()


def create_environment(page: Page, name: str) -> str:
    """Create an environment through "New environment"; its id (from the page's URL)."""
    page.locator("a.button", has_text="New environment").click()
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create environment").click()
    expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
    match = re.search(r"/environments/([0-9a-f-]{36})/", page.url)
    assert match, page.url
    return match.group(1)


def register(page: Page, key: CustomerKey, shot, label: str) -> None:
    page.get_by_role("link", name="Register a BYOK key").click()
    for item, value in key.items().items():
        page.get_by_label(item, exact=True).fill(value)
    # The setup guide follows the ARN typed.
    expect(page.locator("#guide-cli")).to_contain_text(key.kms_key_arn)
    shot(f"{label}-five-items")
    page.get_by_role("button", name="Register key").click()
    expect(page.get_by_text(re.compile(r"Key version \d+ registered"))).to_be_visible()


def watch_validation_pass(page: Page, version: int, shot, label: str) -> None:
    """The version's status goes to Valid on the same document (the page polls), with
    every check passing."""
    page.evaluate("window.__sameDocument = 'yes'")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    status = page.locator(f"#version-{version} [data-status-cell] .status")
    expect(status).to_have_text("Valid", timeout=VALIDATION_SECONDS * 1000)
    panel = page.locator(f"tbody[data-version='{version}'] [data-validation-panel]")
    expect(panel.locator("[data-run-outcome]").first).to_have_text("Passed")
    results = panel.locator("table.checks tbody tr td:nth-child(2)").all_inner_texts()
    statuses = [r.strip() for r in results]
    # moto's Decrypt does not report the encryption algorithm: that one check is not checked.
    assert statuses.count("Not checked") == 1 and set(statuses) == {"Passed", "Not checked"}, results
    assert page.evaluate("window.__sameDocument") == "yes" and navigations == [], navigations
    shot(f"{label}-validation-passed")


def activate(page: Page, version: int) -> None:
    page.get_by_role("link", name=f"Activate version {version}…").first.click()
    expect(page.get_by_role("heading", name=f"Activate key version {version}?")).to_be_visible()
    page.get_by_role("button", name=f"Activate version {version}").click()
    expect(page.get_by_text(f"Key version {version} is now active")).to_be_visible()
    expect(page.locator(f"#version-{version} [data-status-cell] .status")).to_have_text("Active")


def create_api_key(page: Page, shot) -> str:
    page.get_by_label("New API key name").fill("e2e application")
    page.get_by_role("button", name="Create API key").click()
    expect(page.get_by_role("heading", name=re.compile("API key .* created"))).to_be_visible()
    api_key = page.locator("input[data-api-key]").input_value()
    assert api_key.startswith("byok_"), api_key
    shot("api-key-created")
    page.get_by_role("link", name="Done").click()
    return api_key


# ---------------------------------------------------------------------------
# 3. The application, over plain HTTP
# ---------------------------------------------------------------------------


class Api:
    """A plain HTTP client of the data-plane API (http.client, one request per connection)."""

    def __init__(self, stack: Stack, environment_id: str, api_key: str) -> None:
        url = urlsplit(stack.portal_url)
        self.host, self.port = url.hostname, url.port
        self.base = f"/api/v1/environments/{environment_id}/records"
        self.api_key = api_key

    def request(self, method: str, path: str, payload=None) -> tuple[int, dict]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=15)
        try:
            body = json.dumps(payload).encode() if payload is not None else None
            headers = {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}
            connection.request(method, f"{self.base}{path}", body=body, headers=headers)
            response = connection.getresponse()
            text = response.read()
            return response.status, (json.loads(text) if text else {})
        finally:
            connection.close()

    def put(self, record_key: str, body) -> dict:
        status, answer = self.request("PUT", f"/{record_key}", {"body": body})
        assert status == 200, (status, answer)
        return answer

    def get(self, record_key: str) -> tuple[int, dict]:
        return self.request("GET", f"/{record_key}")

    def find(self, record_keys: list[str]) -> dict:
        status, answer = self.request("POST", "/find", {"record_keys": record_keys})
        assert status == 200, (status, answer)
        return answer


def record_bodies() -> dict[str, object]:
    return {
        f"patient:{i:03d}": {
            "n": i, "name": f"Patient {i}", "notes": "Ünïcødé ✓ — “quoted” \\ backslash",
            "tags": ["a", "b"][: i % 3], "nested": {"score": i / 7, "flag": i % 2 == 0, "none": None},
        }
        for i in range(RECORDS)
    }


def assert_all_identical(api: Api, bodies: dict[str, object], version: int) -> None:
    """Every record reads back identical, under ``version``: one by one, and in one find call."""
    for record_key, body in bodies.items():
        status, answer = api.get(record_key)
        assert status == 200, (record_key, status, answer)
        assert (answer["record_key"], answer["body"], answer["key_version"]) == (record_key, body, version)
    found = api.find(list(bodies))
    assert found["errors"] == []
    assert {r["record_key"]: r["body"] for r in found["records"]} == bodies
    assert {r["key_version"] for r in found["records"]} == {version}


# ---------------------------------------------------------------------------
# 5. Revocation
# ---------------------------------------------------------------------------


def seconds_until_unavailable(api: Api, record_key: str, *, started: float, limit: float) -> tuple[float, dict]:
    """Read ``record_key`` until it answers 503 key_unavailable; seconds since ``started``."""
    def refused():
        status, answer = api.get(record_key)
        if status == 503:
            return answer
        assert status == 200, (status, answer)
        return None

    answer = wait_for(refused, timeout=limit, what="reads to answer 503 key_unavailable", interval=0.1)
    return time.monotonic() - started, answer


def seconds_until_served(api: Api, record_key: str, *, started: float) -> float:
    wait_for(lambda: api.get(record_key)[0] == 200, timeout=RESTORE_SECONDS, what="reads to be served again",
             interval=0.2)
    return time.monotonic() - started


# ---------------------------------------------------------------------------
# The flow
# ---------------------------------------------------------------------------


@pytest.fixture
def ada(transactional_db):
    # The runserver subprocess has the production hashers only: hash with PBKDF2 here.
    user = get_user_model().objects.create_user(USERNAME, "ada@example.org")
    user.password = make_password(PASSWORD, hasher="pbkdf2_sha256")
    user.save(update_fields=["password"])
    organization = Organization.objects.create(name="Acme Health")
    Membership.objects.create(user=user, organization=organization, role=Membership.Role.OWNER)
    return user


def test_it_runs_the_seed_flow_from_the_customers_aws_cli_to_a_revocation(stack, ada, browser_thread, capsys):
    """GIVEN the product running as real processes, an owner "ada" and the customer's AWS
    WHEN the customer and ada follow the seed document from the first AWS CLI command to a
    rotation and a revocation
    THEN every step works as docs/architecture.md ("The write path", "Registration and validation") says, within the bound the portal publishes."""
    timings: dict[str, float] = {}

    calls = browser_thread.run(lambda page, shot: seed_flow(stack, page, shot, timings))

    with capsys.disabled():
        print("\n  e2e seed flow timings:", ", ".join(f"{k}: {v}" for k, v in timings.items()),
              f"\n  aws CLI calls: {calls}")


def seed_flow(stack: Stack, page: Page, shot, timings: dict[str, float]) -> int:
    """The five steps (module docstring); fills ``timings``; returns the number of AWS CLI calls."""
    clock = time.monotonic()

    def lap(step: str) -> None:
        nonlocal clock
        timings[step] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()

    # 1. The customer's side in AWS, with the AWS CLI; moto's IAM simulation on from here.
    aws = customer_admin(AwsCli(stack.moto_url))
    moto_iam_enforced(stack.moto_url)
    first = customer_sets_up_a_key(aws, "first")
    assert first.access_key_id.startswith("AKIA") and len(first.secret_access_key) == 40
    lap("1 customer's AWS CLI steps")

    # 2. The admin registers the five items, watches validation, activates, creates an API key.
    sign_in(page, stack)
    shot("signed-in")
    environment_id = create_environment(page, "production")
    shot("environment-created")
    register(page, first, shot, "first-key")
    shot("first-key-registered")
    watch_validation_pass(page, 2, shot, "first-key")
    activate(page, 2)
    expect(page.locator("#version-1 [data-status-cell] .status")).to_have_text("Decrypt-only")
    shot("first-key-active")
    api_key = create_api_key(page, shot)
    lap("2 browser: register, validate, activate, API key")

    # 3. An application writes 100 records, reads them back, finds them in one call.
    api = Api(stack, environment_id, api_key)
    bodies = record_bodies()
    for record_key, body in bodies.items():
        assert api.put(record_key, body)["key_version"] == 2
    assert_all_identical(api, bodies, version=2)
    lap("3 HTTP: 100 writes, 100 reads, 1 find")

    # 4. Rotation: a second BYOK key, activated, records re-encrypted by the worker.
    second = customer_sets_up_a_key(aws, "second")
    page.goto(f"{stack.portal_url}/environments/{environment_id}/")
    register(page, second, shot, "second-key")
    watch_validation_pass(page, 3, shot, "second-key")
    activate(page, 3)
    expect(page.locator("#version-2 [data-status-cell] .status")).to_have_text("Decrypt-only")
    lifecycle = page.locator("#key-lifecycle")
    expect(lifecycle.locator("[data-records-version='2'] [data-count]")).to_have_text(str(RECORDS))
    shot("second-key-active")
    lifecycle.get_by_role("button", name="Start re-encryption").click()
    expect(page.get_by_text("Re-encryption to version 3 started")).to_be_visible()
    expect(page.locator("#key-lifecycle [data-job-status]")).to_have_attribute(
        "data-job-status", "done", timeout=REENCRYPTION_SECONDS * 1000)
    expect(lifecycle.locator("[data-records-version='2'] [data-count]")).to_have_text("0")
    expect(lifecycle.locator("[data-records-version='3'] [data-count]")).to_have_text(str(RECORDS))
    shot("reencryption-done")
    assert_all_identical(api, bodies, version=3)
    assert not Record.objects.exclude(registration__version=3).exists()
    lap("4 rotation + re-encryption")

    # 5. Revocation, as the page states it.
    page.goto(f"{stack.portal_url}/environments/{environment_id}/")
    bound = int(page.locator("#revocation-bound").get_attribute("data-bound-seconds"))
    expect(page.locator("#revocation-bound")).to_contain_text(f"within {bound} seconds")
    assert bound == 8  # DATA_KEY_CACHE_TTL_SECONDS 5 + REVALIDATION_INTERVAL_SECONDS 3
    probe = "patient:042"
    assert api.get(probe)[0] == 200  # the data key of v3 is in the server's cache now

    # 5a. The customer removes the policy from the portal's IAM user, then attaches it again.
    started = time.monotonic()
    aws("iam", "detach-user-policy", "--user-name", second.user_name, "--policy-arn", second.policy_arn)
    elapsed, refused = seconds_until_unavailable(api, probe, started=started, limit=bound + 10)
    assert refused["error"]["code"] == "key_unavailable", refused
    assert refused["error"]["reason"] == "access_denied", refused
    assert elapsed <= bound, f"reads stopped {elapsed:.1f} s after the revocation; the page promises {bound} s"
    timings["5a revoked → 503 (s)"] = round(elapsed, 1)
    page.reload()
    expect(page.locator("#version-3 [data-status-cell] .status")).to_have_text("Inaccessible")
    shot("revoked-policy-detached")

    started = time.monotonic()
    aws("iam", "attach-user-policy", "--user-name", second.user_name, "--policy-arn", second.policy_arn)
    timings["5a restored → 200 (s)"] = round(seconds_until_served(api, probe, started=started), 1)
    assert_all_identical(api, bodies, version=3)
    page.reload()
    expect(page.locator("#version-3 [data-status-cell] .status")).to_have_text("Active")
    shot("restored-policy-attached")

    # 5b. The customer deletes the access key; the admin enters a new one ("Replace credentials").
    started = time.monotonic()
    aws("iam", "delete-access-key", "--user-name", second.user_name, "--access-key-id", second.access_key_id)
    elapsed, refused = seconds_until_unavailable(api, probe, started=started, limit=bound + 10)
    assert refused["error"]["code"] == "key_unavailable", refused
    assert elapsed <= bound, f"reads stopped {elapsed:.1f} s after the revocation; the page promises {bound} s"
    timings["5b key deleted → 503 (s)"] = round(elapsed, 1)
    new_key = aws("iam", "create-access-key", "--user-name", second.user_name)["AccessKey"]
    page.reload()
    expect(page.locator("#version-3 [data-status-cell] .status")).to_have_text("Inaccessible")
    page.locator("#key-lifecycle tr[data-lifecycle-version='3']").get_by_role("link", name="Replace credentials").click()
    page.get_by_label("Access Key", exact=True).fill(new_key["AccessKeyId"])
    page.get_by_label("Secret Access Key", exact=True).fill(new_key["SecretAccessKey"])
    shot("replace-credentials")
    started = time.monotonic()
    page.get_by_role("button", name="Replace credentials").click()
    expect(page.get_by_text("IAM credentials of key version 3 replaced")).to_be_visible()
    timings["5b replaced → 200 (s)"] = round(seconds_until_served(api, probe, started=started), 1)
    assert_all_identical(api, bodies, version=3)
    # Reloaded: the page follows a validation live only once the worker has started it,
    # and the one queued by the replacement may not have started when the page loaded.
    page.reload()
    expect(page.locator("#version-3 [data-status-cell] .status")).to_have_text("Active")
    shot("restored-new-access-key")
    lap("5 revocation and restore, twice")

    # No secret in what the processes wrote.
    logs = stack.logs()
    for secret in (first.secret_access_key, second.secret_access_key, new_key["SecretAccessKey"], api_key):
        assert secret not in logs
    assert KeyRegistration.objects.get(version=3).status == KeyRegistration.Status.ACTIVE
    return len(aws.calls)
