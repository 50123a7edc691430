"""Role-mode validation diagnosis (issue 14): AssumeRole first, then the KMS checks
with the temporary credentials.

moto's AssumeRole checks neither the external ID nor the trust policy (it hands
out credentials for any role ARN), so each STS refusal is stubbed with botocore's
Stubber, with the codes and HTTP statuses STS documents:
https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html#API_AssumeRole_Errors
"""

from __future__ import annotations

import json
import types
from datetime import datetime, timedelta, timezone

import boto3
import botocore.endpoint
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from keys import diagnosis, kms, parsers, sts
from keys.diagnosis import CHECKS, ROLE_CHECKS, Diagnosis, RoleAccess
from keys.kms import KmsCredentials
from tests.aws import isolate_aws_environment

REGION = "eu-west-1"
ACCOUNT = "111122223333"
ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
BLOB = b"\x01\x02\x03\x00" + b"opaque-kms-ciphertext" * 8
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/team/byok-portal-access"
EXTERNAL_ID = "portal-ext-6f1c0a9e2b7d4c3f8a5e"
PLATFORM = "arn:aws:iam::999988887777:role/byok-platform"
ROLE = RoleAccess(
    role_arn=ROLE_ARN, external_id=EXTERNAL_ID, session_name="portal-env-abc", platform_principal_arn=PLATFORM
)
SECRET = "CanaryStsSecret/0123456789abcdefDoNotLeak"
TOKEN = "CanaryStsSessionToken+FwoGZXIvYXdzEDoNotLeak"
TEMPORARY = KmsCredentials("ASIACANARY0000000001", SECRET, version="sts", session_token=TOKEN)
ROLE_CHECK_NAMES = [name for name, _label in ROLE_CHECKS]


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_aws_environment(monkeypatch, REGION)
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=lambda _seconds: None))


@pytest.fixture(autouse=True)
def fresh_clients():
    sts.clear_clients()
    kms.clear_clients()
    yield
    sts.clear_clients()
    kms.clear_clients()


@pytest.fixture
def sts_stub():
    with Stubber(sts.client(region=REGION)) as stub:
        yield stub
        stub.assert_no_pending_responses()


@pytest.fixture
def kms_stub():
    with Stubber(kms.client(region=REGION, credentials=TEMPORARY)) as stub:
        yield stub
        stub.assert_no_pending_responses()


def stub_assume_role(stub: Stubber) -> None:
    stub.add_response(
        "assume_role",
        {
            "Credentials": {
                "AccessKeyId": TEMPORARY.access_key_id,
                "SecretAccessKey": SECRET,
                "SessionToken": TOKEN,
                "Expiration": datetime.now(timezone.utc) + timedelta(hours=1),
            },
            "AssumedRoleUser": {"AssumedRoleId": "AROA:portal-env-abc", "Arn": "arn:aws:sts::1:assumed-role/x/y"},
        },
        {"RoleArn": ROLE_ARN, "ExternalId": EXTERNAL_ID, "RoleSessionName": "portal-env-abc", "DurationSeconds": 3600},
    )


def run(**overrides) -> Diagnosis:
    args = {
        "kms_key_arn": ARN,
        "region": REGION,
        "account_id": ACCOUNT,
        "encrypted_data_key": BLOB,
        "encryption_context": None,
        "credentials": None,
        "role": ROLE,
        "check_excess_privilege": False,
    }
    result = diagnosis.diagnose(**(args | overrides))
    assert [c.name for c in result.checks] == ROLE_CHECK_NAMES
    for check in result.checks:
        assert check.cause
        if check.status == "fail":
            assert check.remedy and check.reason
        assert SECRET not in check.cause + check.remedy and TOKEN not in check.cause + check.remedy
    return result


def test_it_lists_assume_role_second_and_keeps_the_access_key_checks_unchanged() -> None:
    assert ROLE_CHECK_NAMES[:2] == ["registration.region", "sts.assume_role"]
    assert [n for n in ROLE_CHECK_NAMES if n != "sts.assume_role"] == [n for n, _label in CHECKS]


def test_it_runs_describe_key_and_decrypt_with_the_temporary_credentials(sts_stub, kms_stub) -> None:
    stub_assume_role(sts_stub)
    metadata = {
        "KeyId": ARN.rsplit("/", 1)[1], "Arn": ARN, "AWSAccountId": ACCOUNT, "KeyState": "Enabled", "Enabled": True,
        "KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "SYMMETRIC_DEFAULT", "KeyManager": "CUSTOMER", "Origin": "AWS_KMS",
    }
    kms_stub.add_response("describe_key", {"KeyMetadata": metadata}, {"KeyId": ARN})
    kms_stub.add_response(
        "decrypt",
        {"KeyId": ARN, "Plaintext": bytes(32), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"},
        {"KeyId": ARN, "CiphertextBlob": BLOB},
    )

    result = run()

    assert (result.outcome, result.failure_reason) == ("passed", None)
    assert result.check("sts.assume_role").status == "pass"
    assert ROLE_ARN in result.check("sts.assume_role").cause


DENIED = f"User: {PLATFORM} is not authorized to perform: sts:AssumeRole on resource: {ROLE_ARN}"


@pytest.mark.parametrize(
    ("code", "status", "message", "outcome", "reason", "causes", "remedies"),
    [
        # Role missing, trust policy not naming the platform, external ID missing or different: one answer.
        ("AccessDenied", 403, DENIED, "failed", "role_access_denied",
         ["does not say which", "the role does not exist", "does not name the platform principal",
          "external ID is missing", PLATFORM],
         ["aws iam get-role --role-name byok-portal-access --query Role.Arn", f'"sts:ExternalId": "{EXTERNAL_ID}"',
          f'"AWS": "{PLATFORM}"', "update-assume-role-policy"]),
        ("ValidationError", 400, "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
         "failed", "duration_too_long", ["3600-second session", "maximum session duration"],
         ["--max-session-duration 3600"]),
        ("RegionDisabledException", 403, "STS is not activated in this region for account:111122223333.",
         "failed", "sts_region_disabled", [f"STS is not activated in {REGION}"],
         [f"In account {ACCOUNT}", "Security Token Service (STS)", f"activate {REGION}"]),
        ("ExpiredTokenException", 400, "The security token included in the request is expired", "unverified",
         "platform_credentials", ["platform's own AWS credentials", "platform's side, not in your AWS account"],
         ["Nothing to change on your side", "operators"]),
        ("InvalidClientTokenId", 403, "The security token included in the request is invalid.", "unverified",
         "platform_credentials", ["InvalidClientTokenId", "platform's side, not in your AWS account"],
         ["Nothing to change on your side"]),
        ("Throttling", 400, "Rate exceeded", "unverified", "sts_throttled", ["STS throttled"],
         ["tries again within about a minute", "every 15 min"]),
    ],
)
def test_it_explains_each_assume_role_failure(
    settings, sts_stub, code, status, message, outcome, reason, causes, remedies
):
    settings.CELERY_TASK_ALWAYS_EAGER = False  # a worker runs the job (its retries, beat's re-validation)
    sts_stub.add_client_error("assume_role", code, message, http_status_code=status)

    result = run()

    check = result.check("sts.assume_role")
    assert (result.outcome, result.failure_reason) == (outcome, reason)
    assert (check.status, check.reason, check.aws_error_code) == ("fail", reason, code)
    assert check.transient is (outcome == "unverified")
    for text in causes:
        assert text in check.cause
    for text in remedies:
        assert text in check.remedy
    assert {c.status for c in result.checks[2:]} == {"skip"}


def test_it_says_the_permissions_policy_of_the_role_when_kms_denies_decrypt(sts_stub, kms_stub) -> None:
    stub_assume_role(sts_stub)
    kms_stub.add_client_error("describe_key", "AccessDeniedException", "not authorized to perform: kms:DescribeKey")
    kms_stub.add_client_error("decrypt", "AccessDeniedException", "is not authorized to perform: kms:Decrypt")

    result = run()

    assert result.outcome == "failed"
    assert "permissions policy of the role" in result.check("decrypt.call").remedy
    assert "permissions policy of the role" in result.check("describe_key.call").remedy


def _policy_in(remedy: str) -> dict:
    """The policy document a remedy quotes (the JSON object from '{"Version"' on)."""
    return json.JSONDecoder().raw_decode(remedy, remedy.index('{"Version"'))[0]


def test_it_suggests_the_setup_guides_permissions_policy_with_the_context_condition_when_kms_refuses_the_role(
    sts_stub, kms_stub
) -> None:
    """GIVEN a version bound to its environment (encryption context portal:environment=…)
    WHEN KMS refuses DescribeKey and Decrypt to the assumed role THEN both remedies quote the
    setup guide's permissions policy (parsers.iam_policy_json), with Decrypt conditioned on
    that context, not an unconditioned statement."""
    context = parsers.environment_encryption_context("0b6f7a52-8f44-4a8e-9d0e-2f1c3a4b5c6d")
    stub_assume_role(sts_stub)
    kms_stub.add_client_error("describe_key", "AccessDeniedException", "not authorized to perform: kms:DescribeKey")
    kms_stub.add_client_error("decrypt", "AccessDeniedException", "is not authorized to perform: kms:Decrypt")

    result = run(encryption_context=context)

    guide = json.loads(parsers.iam_policy_json(kms_key_arn=ARN, encryption_context=context))
    for name in ("describe_key.call", "decrypt.call"):
        assert _policy_in(result.check(name).remedy) == guide
    decrypt = next(s for s in guide["Statement"] if s["Action"] == "kms:Decrypt")
    assert decrypt["Condition"] == {"StringEquals": {"kms:EncryptionContext:portal:environment": context["portal:environment"]}}


def test_it_suggests_the_same_policy_for_a_refusal_known_only_by_its_reason() -> None:
    context = parsers.environment_encryption_context("0b6f7a52-8f44-4a8e-9d0e-2f1c3a4b5c6d")

    _cause, remedy = diagnosis.explain_reason(
        reason=kms.Reason.ACCESS_DENIED, kms_key_arn=ARN, region=REGION, account_id=ACCOUNT, encryption_context=context,
    )

    assert _policy_in(remedy) == json.loads(parsers.iam_policy_json(kms_key_arn=ARN, encryption_context=context))


def test_it_passes_a_role_in_moto_which_does_not_check_the_trust_policy_or_external_id() -> None:
    """moto's AssumeRole accepts any external ID: this only proves the happy path wiring."""
    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": PLATFORM},
                 "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}}}]}
        role_arn = iam.create_role(RoleName="byok", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        admin = boto3.client("kms", region_name=REGION)
        key = admin.create_key()["KeyMetadata"]
        blob = admin.generate_data_key_without_plaintext(KeyId=key["Arn"], KeySpec="AES_256")["CiphertextBlob"]
        role = RoleAccess(role_arn=role_arn, external_id=EXTERNAL_ID, session_name="s-1", platform_principal_arn=PLATFORM)

        result = run(kms_key_arn=key["Arn"], account_id=key["AWSAccountId"], encrypted_data_key=blob, role=role)

    assert result.outcome == "passed", [(c.name, c.cause) for c in result.checks if c.status == "fail"]


def test_it_explains_a_role_refusal_known_only_by_its_reason_in_the_checks_words() -> None:
    """The status of a version the data plane or a re-validation made inaccessible has only
    the reason: with the role, it is explained as STS's refusal, not as a KMS one."""
    cause, remedy = diagnosis.explain_reason(
        reason=sts.Reason.ACCESS_DENIED, kms_key_arn=ARN, region=REGION, account_id=ACCOUNT, role=ROLE
    )

    assert cause.startswith(f"AWS refused sts:AssumeRole on {ROLE_ARN} to the platform principal {PLATFORM}")
    assert "KMS" not in cause
    assert "aws iam get-role --role-name byok-portal-access" in remedy
    trust = json.loads(remedy.split("--policy-document '", 1)[1].split("'", 1)[0])
    assert trust["Statement"][0]["Condition"]["StringEquals"]["sts:ExternalId"] == EXTERNAL_ID
    assert diagnosis.is_sts_reason(sts.Reason.ACCESS_DENIED) and not diagnosis.is_sts_reason(kms.Reason.ACCESS_DENIED)
    # Without the role (or for a KMS reason) it stays the KMS explanation.
    kms_cause, _ = diagnosis.explain_reason(reason=kms.Reason.DISABLED, kms_key_arn=ARN, region=REGION, role=ROLE)
    assert "disabled" in kms_cause


@pytest.mark.parametrize(("reason", "words"), [
    (sts.Reason.PLATFORM_CREDENTIALS, "STS refused the platform's own AWS credentials (a problem on the platform's side)"),
    (sts.Reason.THROTTLED, "STS throttled the AssumeRole request"),
    (sts.Reason.NETWORK, "STS could not be reached"),
    (kms.Reason.THROTTLED, "KMS throttled the request"),
    ("", "KMS could not be reached"),
])
def test_it_says_in_a_few_words_why_a_run_could_not_verify(reason, words) -> None:
    assert diagnosis.short_cause(reason) == words


@pytest.mark.parametrize("eager", [True, False], ids=["no-worker", "worker"])
def test_it_says_only_what_is_true_about_retrying_after_the_platforms_credentials_were_refused(
    sts_stub, settings, eager
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = eager
    sts_stub.add_client_error("assume_role", "ExpiredTokenException", "expired", http_status_code=400)

    remedy = run().check("sts.assume_role").remedy

    assert remedy.startswith("Nothing to change on your side: the platform's operators have to renew")
    if eager:
        assert "does not try again by itself" in remedy and "re-validated every" not in remedy
    else:
        assert "key versions in service are also re-validated every" in remedy
