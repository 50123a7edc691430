"""Tests of keys/diagnosis.py: what a BYOK validation tells the customer's admin.

moto plays the customer's AWS side where it can (keys, data keys, encryption
context, regions, IAM users - with moto's IAM simulation for bad credentials and
missing permissions); botocore's Stubber and raw HTTP answers stand in for
what moto does not emulate (key states, throttling, documented error codes,
timeouts). See docs/architecture.md, "Testing KMS honestly".
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from datetime import datetime, timezone

import boto3
import botocore.endpoint
import botocore.exceptions
import pytest
from botocore.awsrequest import AWSResponse, HeadersDict
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import enable_iam_authentication

from keys import diagnosis, kms
from keys.diagnosis import CHECKS, Diagnosis
from keys.kms import KmsCredentials
from tests.aws import isolate_aws_environment

REGION = "eu-west-1"
ACCOUNT = "111122223333"
ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0987dcba-09fe-87dc-65ba-ab0987654321"
BLOB = b"\x01\x02\x03\x00" + b"opaque-kms-ciphertext" * 8
SECRET = "CanarySecret/9f8e7d6c5b4a+DoNotLeak0123456789"
CREDENTIALS = KmsCredentials("AKIACANARY000000WXYZ", SECRET, version="1")
CHECK_NAMES = [name for name, _label in CHECKS]
DESCRIBE_ATTRIBUTES = [n for n in CHECK_NAMES if n.startswith("describe_key.") and n != "describe_key.call"]
DECRYPT_DEPENDENTS = ["decrypt.plaintext_size", "decrypt.key_id", "decrypt.algorithm"]


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake, isolated AWS configuration: nothing from the developer's machine."""
    isolate_aws_environment(monkeypatch, REGION)


@pytest.fixture(autouse=True)
def fresh_clients():
    kms.clear_clients()
    yield
    kms.clear_clients()


@pytest.fixture(autouse=True)
def no_backoff_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's retries sleep between attempts; not in tests."""
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=lambda _seconds: None))


def assert_well_formed(result: Diagnosis) -> None:
    """Every diagnosis lists every check once, in order; a pass has no remedy,
    a fail or warn has one, and every fail says why."""
    assert [c.name for c in result.checks] == CHECK_NAMES
    for check in result.checks:
        assert check.label == dict(CHECKS)[check.name]
        assert check.cause
        if check.status == "pass":
            assert check.remedy == ""
        if check.status in ("fail", "warn"):
            assert check.remedy
        if check.status == "fail":
            assert check.reason
    assert result.transient == (result.outcome == "unverified")


def statuses(result: Diagnosis) -> dict[str, str]:
    return {c.name: c.status for c in result.checks}


# ---------------------------------------------------------------------------
# moto: the customer's AWS side, as in the seed document
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    admin: object  # the customer's own boto3 KMS client
    kms_key_arn: str
    account_id: str
    encrypted_data_key: bytes
    credentials: KmsCredentials

    def generate(self, kms_key_arn: str | None = None, **kwargs) -> bytes:
        return self.admin.generate_data_key_without_plaintext(
            KeyId=kms_key_arn or self.kms_key_arn, KeySpec="AES_256", **kwargs
        )["CiphertextBlob"]


@pytest.fixture
def customer() -> Customer:
    """GIVEN a symmetric KMS key, an encrypted data key generated with
    generate-data-key-without-plaintext (AES_256), and an IAM user with an
    access key, in moto."""
    with mock_aws():
        admin = boto3.client("kms", region_name=REGION)
        metadata = admin.create_key(Description="byok")["KeyMetadata"]
        blob = admin.generate_data_key_without_plaintext(KeyId=metadata["Arn"], KeySpec="AES_256")[
            "CiphertextBlob"
        ]
        yield Customer(admin, metadata["Arn"], metadata["AWSAccountId"], blob, _iam_user("byok-portal"))


def _iam_user(name: str, actions: list[str] | None = None) -> KmsCredentials:
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName=name)
    if actions is not None:
        statement = '{"Effect": "Allow", "Action": %s, "Resource": "*"}' % str(actions).replace("'", '"')
        iam.put_user_policy(
            UserName=name,
            PolicyName="byok",
            PolicyDocument='{"Version": "2012-10-17", "Statement": [%s]}' % statement,
        )
    access_key = iam.create_access_key(UserName=name)["AccessKey"]
    return KmsCredentials(access_key["AccessKeyId"], access_key["SecretAccessKey"])


def diagnose_customer(customer: Customer, **overrides) -> Diagnosis:
    args = {
        "kms_key_arn": customer.kms_key_arn,
        "region": REGION,
        "account_id": customer.account_id,
        "encrypted_data_key": customer.encrypted_data_key,
        "encryption_context": None,
        "credentials": customer.credentials,
    }
    result = diagnosis.diagnose(**(args | overrides))
    assert_well_formed(result)
    return result


def test_it_passes_a_registration_made_as_the_seed_document_says(customer: Customer) -> None:
    result = diagnose_customer(customer)

    assert (result.outcome, result.failure_reason, result.transient) == ("passed", None, False)
    assert {n: s for n, s in statuses(result).items() if s != "pass"} == {
        # moto does not enforce IAM by default: the user may do anything.
        "policy.excess_privilege": "warn",
        # moto's Decrypt does not report EncryptionAlgorithm: nothing to check.
        "decrypt.algorithm": "skip",
    }


def test_it_passes_with_the_encryption_context_used_at_generation(customer: Customer) -> None:
    context = {"environment": "env-1", "tenant": "acme"}
    blob = customer.generate(EncryptionContext=context)

    result = diagnose_customer(customer, encrypted_data_key=blob, encryption_context=context)

    assert result.outcome == "passed"
    assert result.check("decrypt.plaintext_size").status == "pass"


def test_it_says_a_blob_of_another_key_was_generated_under_another_key(customer: Customer) -> None:
    """GIVEN an encrypted data key generated under a second KMS key
    WHEN the registration names the first key
    THEN Decrypt fails (moto: AccessDeniedException, AWS: IncorrectKeyException)
    and the admin is told the blob belongs to another key."""
    other_arn = customer.admin.create_key()["KeyMetadata"]["Arn"]

    result = diagnose_customer(customer, encrypted_data_key=customer.generate(other_arn))

    check = result.check("decrypt.call")
    assert (result.outcome, result.failure_reason) == ("failed", "incorrect_key")
    assert (check.status, check.aws_error_code) == ("fail", "AccessDeniedException")
    assert "generated under another KMS key" in check.cause
    assert "generate-data-key-without-plaintext" in check.remedy
    assert "--key-spec AES_256" in check.remedy
    assert result.check("describe_key.state").status == "pass"
    assert [result.check(n).status for n in DECRYPT_DEPENDENTS] == ["skip"] * 3
    assert result.check("policy.excess_privilege").status == "skip"


@pytest.mark.parametrize(
    "entered_context",
    [None, {"environment": "env-2"}, {"environment": "env-1", "extra": "x"}, {"Environment": "env-1"}],
    ids=["missing", "other value", "extra pair", "other case"],
)
def test_it_says_the_encryption_context_must_be_the_one_used_at_generation(
    customer: Customer, entered_context: dict[str, str] | None
) -> None:
    blob = customer.generate(EncryptionContext={"environment": "env-1"})

    result = diagnose_customer(customer, encrypted_data_key=blob, encryption_context=entered_context)

    check = result.check("decrypt.call")
    assert (result.outcome, result.failure_reason) == ("failed", "invalid_ciphertext")
    assert (check.status, check.aws_error_code) == ("fail", "InvalidCiphertextException")
    assert "encryption context differs" in check.cause
    assert "exactly the one used with generate-data-key-without-plaintext" in check.cause


def test_it_says_the_region_is_wrong_when_the_key_is_in_another_region(customer: Customer) -> None:
    """GIVEN a key in eu-west-1
    WHEN the registration says us-east-1
    THEN the region check fails, and KMS in us-east-1 does not know the key."""
    result = diagnose_customer(customer, region="us-east-1")

    assert (result.outcome, result.failure_reason) == ("failed", "region_mismatch")
    region_check = result.check("registration.region")
    assert "Register the region of the key, eu-west-1" in region_check.remedy
    assert result.check("describe_key.call").reason == "not_found"
    assert "us-east-1" in result.check("describe_key.call").cause
    assert [result.check(n).status for n in DESCRIBE_ATTRIBUTES] == ["skip"] * len(DESCRIBE_ATTRIBUTES)
    assert result.check("decrypt.call").reason == "not_found"


def test_it_says_the_key_is_not_found_when_the_arn_names_another_region(customer: Customer) -> None:
    arn_in_us_east_1 = customer.kms_key_arn.replace(f":{REGION}:", ":us-east-1:")

    result = diagnose_customer(customer, kms_key_arn=arn_in_us_east_1, region="us-east-1")

    assert result.check("registration.region").status == "pass"
    assert (result.outcome, result.failure_reason) == ("failed", "not_found")
    assert result.check("describe_key.call").aws_error_code == "NotFoundException"


def test_it_says_the_key_is_not_found_for_an_unknown_key_arn(customer: Customer) -> None:
    unknown = customer.kms_key_arn.rsplit("/", 1)[0] + "/11111111-2222-3333-4444-555555555555"

    result = diagnose_customer(customer, kms_key_arn=unknown)

    describe = result.check("describe_key.call")
    assert (result.outcome, result.failure_reason) == ("failed", "not_found")
    assert f"KMS has no key {unknown} in region {REGION}" in describe.cause
    assert "Check the key ARN and the region" in describe.remedy
    assert result.check("decrypt.call").reason == "not_found"


def test_it_says_an_unknown_access_key_must_be_replaced(customer: Customer) -> None:
    unknown = KmsCredentials("AKIAUNKNOWN000000000", "whatever")

    with enable_iam_authentication():
        result = diagnose_customer(customer, credentials=unknown)

    for name in ("describe_key.call", "decrypt.call"):
        check = result.check(name)
        assert (check.status, check.reason, check.aws_error_code) == ("fail", "invalid_credentials", "InvalidClientTokenId")
        assert "unknown or was deleted" in check.cause
        assert "Create a new access key" in check.remedy
    assert (result.outcome, result.failure_reason) == ("failed", "invalid_credentials")


def test_it_says_the_secret_access_key_is_wrong(customer: Customer) -> None:
    wrong_secret = KmsCredentials(customer.credentials.access_key_id, "not-the-secret")

    with enable_iam_authentication():
        result = diagnose_customer(customer, credentials=wrong_secret)

    check = result.check("decrypt.call")
    assert (result.outcome, result.failure_reason) == ("failed", "bad_signature")
    assert "secret access key is wrong" in check.cause


def test_it_asks_for_kms_describe_key_when_the_policy_allows_only_decrypt(customer: Customer) -> None:
    """GIVEN an IAM user allowed kms:Decrypt only
    THEN DescribeKey fails with a remedy naming kms:DescribeKey, the key
    attributes are skipped, Decrypt still runs and passes."""
    decrypt_only = _iam_user("decrypt-only", ["kms:Decrypt"])

    with enable_iam_authentication():
        result = diagnose_customer(customer, credentials=decrypt_only)

    describe = result.check("describe_key.call")
    assert (result.outcome, result.failure_reason) == ("failed", "access_denied")
    assert (describe.status, describe.aws_error_code) == ("fail", "AccessDenied")
    assert '"kms:DescribeKey"' in describe.remedy
    assert customer.kms_key_arn in describe.remedy
    assert [result.check(n).status for n in DESCRIBE_ATTRIBUTES] == ["skip"] * len(DESCRIBE_ATTRIBUTES)
    assert result.check("decrypt.call").status == "pass"
    assert result.check("decrypt.plaintext_size").status == "pass"
    assert result.check("policy.excess_privilege").status == "pass"


def test_it_shows_the_policy_action_when_decrypt_is_denied(customer: Customer) -> None:
    describe_only = _iam_user("describe-only", ["kms:DescribeKey"])

    with enable_iam_authentication():
        result = diagnose_customer(customer, credentials=describe_only)

    check = result.check("decrypt.call")
    assert (result.outcome, result.failure_reason) == ("failed", "access_denied")
    assert "denied kms:Decrypt" in check.cause
    assert '"kms:Decrypt"' in check.remedy
    assert '"Action": ["kms:Decrypt", "kms:DescribeKey"]' in check.remedy


def test_it_passes_a_least_privilege_user_without_warnings(customer: Customer) -> None:
    least_privilege = _iam_user("least-privilege", ["kms:Decrypt", "kms:DescribeKey"])

    with enable_iam_authentication():
        result = diagnose_customer(customer, credentials=least_privilege)

    assert result.outcome == "passed"
    # moto's Decrypt does not report EncryptionAlgorithm: that check has nothing to look at.
    assert {n: s for n, s in statuses(result).items() if s != "pass"} == {"decrypt.algorithm": "skip"}


def test_it_warns_about_credentials_that_can_also_generate_data_keys(customer: Customer) -> None:
    too_broad = _iam_user("too-broad", ["kms:*"])

    with enable_iam_authentication():
        result = diagnose_customer(customer, credentials=too_broad)

    check = result.check("policy.excess_privilege")
    assert result.outcome == "passed"
    assert check.status == "warn"
    assert "can also call kms:GenerateDataKey" in check.cause
    assert "kms:Decrypt and kms:DescribeKey" in check.cause
    assert "Narrow the IAM policy" in check.remedy


# ---------------------------------------------------------------------------
# Stubber: key states and KMS error codes moto does not emulate
# ---------------------------------------------------------------------------


@pytest.fixture
def stubber():
    """A Stubber on the very client the adapter caches for CREDENTIALS."""
    with Stubber(kms.client(region=REGION, credentials=CREDENTIALS)) as stub:
        yield stub
        stub.assert_no_pending_responses()


def key_metadata(**overrides) -> dict:
    metadata = {
        "KeyId": ARN.rsplit("/", 1)[1],
        "Arn": ARN,
        "AWSAccountId": ACCOUNT,
        "KeyState": "Enabled",
        "Enabled": True,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "KeyManager": "CUSTOMER",
        "Origin": "AWS_KMS",
        "MultiRegion": False,
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
    }
    return metadata | overrides


def stub_describe(stubber: Stubber, key_id: str = ARN, **overrides) -> None:
    stubber.add_response("describe_key", {"KeyMetadata": key_metadata(**overrides)}, {"KeyId": key_id})


def stub_decrypt(
    stubber: Stubber, plaintext: bytes = bytes(range(32)), key_id: str = ARN, algorithm: str = "SYMMETRIC_DEFAULT"
) -> None:
    stubber.add_response(
        "decrypt",
        {"KeyId": key_id, "Plaintext": plaintext, "EncryptionAlgorithm": algorithm},
        {"KeyId": ARN, "CiphertextBlob": BLOB},
    )


def stub_dry_run(stubber: Stubber, allowed: bool = False) -> None:
    if allowed:
        stubber.add_client_error("generate_data_key", "DryRunOperationException", "Would have succeeded", 412)
    else:
        stubber.add_client_error("generate_data_key", "AccessDeniedException", "not authorized to perform")


def run(**overrides) -> Diagnosis:
    args = {
        "kms_key_arn": ARN,
        "region": REGION,
        "account_id": ACCOUNT,
        "encrypted_data_key": BLOB,
        "encryption_context": None,
        "credentials": CREDENTIALS,
    }
    result = diagnosis.diagnose(**(args | overrides))
    assert_well_formed(result)
    return result


def test_it_passes_a_healthy_key_on_aws(stubber) -> None:
    stub_describe(stubber)
    stub_decrypt(stubber)
    stub_dry_run(stubber, allowed=False)

    result = run()

    assert (result.outcome, result.failure_reason, result.transient) == ("passed", None, False)
    assert set(statuses(result).values()) == {"pass"}


def test_it_says_when_a_key_pending_deletion_will_be_deleted(stubber) -> None:
    stub_describe(
        stubber,
        KeyState="PendingDeletion",
        Enabled=False,
        DeletionDate=datetime(2026, 12, 4, 9, 0, tzinfo=timezone.utc),
    )
    stubber.add_client_error("decrypt", "KMSInvalidStateException", f"{ARN} is pending deletion.")

    result = run()

    state = result.check("describe_key.state")
    assert (result.outcome, result.failure_reason) == ("failed", "pending_deletion")
    assert state.cause.startswith("Key is scheduled for deletion on 2026-12-04")
    assert state.remedy.startswith("Cancel the deletion in the KMS console")
    assert "validate again" in state.remedy
    decrypt = result.check("decrypt.call")
    assert (decrypt.reason, decrypt.aws_error_code) == ("pending_deletion", "KMSInvalidStateException")
    assert result.check("policy.excess_privilege").status == "skip"


@pytest.mark.parametrize(
    ("state", "decrypt_code", "decrypt_message", "reason", "cause", "remedy"),
    [
        ("Disabled", "DisabledException", f"{ARN} is disabled.", "disabled", "is disabled", "Enable the key"),
        ("PendingReplicaDeletion", "KMSInvalidStateException", f"{ARN} is pending replica deletion.",
         "pending_deletion", "multi-Region replica key is scheduled for deletion", "Cancel the deletion"),
        ("PendingImport", "KMSInvalidStateException", f"{ARN} is pending import.", "pending_import",
         "no key material", "Import the same key material"),
        ("Unavailable", "KMSInvalidStateException", f"{ARN} is unavailable.", "unavailable_state",
         "custom key store is disconnected", "connect the key store"),
    ],
)
def test_it_explains_each_key_state_kms_refuses(stubber, state, decrypt_code, decrypt_message, reason, cause, remedy):
    stub_describe(stubber, KeyState=state, Enabled=False)
    stubber.add_client_error("decrypt", decrypt_code, decrypt_message)

    result = run()

    check = result.check("describe_key.state")
    assert (result.outcome, result.failure_reason, result.transient) == ("failed", reason, False)
    assert (check.status, check.reason) == ("fail", reason)
    assert cause in check.cause
    assert remedy in check.remedy
    assert (result.check("decrypt.call").reason, result.check("decrypt.call").aws_error_code) == (reason, decrypt_code)


@pytest.mark.parametrize("state", ["Creating", "Updating"])
def test_it_leaves_a_key_still_being_set_up_unverified(stubber, state) -> None:
    stub_describe(stubber, KeyState=state)
    stubber.add_client_error("decrypt", "KMSInvalidStateException", f"{ARN} is {state.lower()}.")

    result = run()

    assert (result.outcome, result.failure_reason, result.transient) == ("unverified", f"key_{state.lower()}", True)


def test_it_fails_a_signing_key(stubber) -> None:
    stub_describe(stubber, KeyUsage="SIGN_VERIFY", KeySpec="RSA_2048", CustomerMasterKeySpec="RSA_2048")
    stubber.add_client_error("decrypt", "InvalidKeyUsageException", "")

    result = run()

    assert (result.outcome, result.failure_reason) == ("failed", "wrong_key_usage")
    assert "SIGN_VERIFY" in result.check("describe_key.usage").cause
    assert "RSA_2048" in result.check("describe_key.spec").cause
    assert "Create a symmetric encryption key" in result.check("describe_key.spec").remedy
    assert result.check("decrypt.call").reason == "invalid_key_usage"


def test_it_fails_an_asymmetric_encryption_key(stubber) -> None:
    stub_describe(stubber, KeySpec="RSA_4096", CustomerMasterKeySpec="RSA_4096")
    stubber.add_client_error("decrypt", "InvalidKeyUsageException", "")

    result = run()

    assert result.check("describe_key.usage").status == "pass"
    assert (result.outcome, result.failure_reason) == ("failed", "wrong_key_spec")


def test_it_refuses_an_aws_managed_key(stubber) -> None:
    stub_describe(stubber, KeyManager="AWS")
    stub_decrypt(stubber)
    stub_dry_run(stubber)

    result = run()

    check = result.check("describe_key.manager")
    assert (result.outcome, result.failure_reason) == ("failed", "aws_managed_key")
    assert "AWS managed key" in check.cause
    assert check.remedy.startswith("Create a customer managed key")


@pytest.mark.parametrize(
    ("origin", "store", "cause"),
    [
        ("EXTERNAL", None, "imported key material"),
        ("AWS_CLOUDHSM", "cks-1234567890abcdef0", "AWS CloudHSM key store (cks-1234567890abcdef0)"),
        ("EXTERNAL_KEY_STORE", "cks-0fedcba0987654321", "external key store (cks-0fedcba0987654321)"),
    ],
)
def test_it_passes_keys_outside_kms_with_a_warning(stubber, origin, store, cause) -> None:
    extra = {"CustomKeyStoreId": store} if store else {}
    stub_describe(stubber, Origin=origin, **extra)
    stub_decrypt(stubber)
    stub_dry_run(stubber)

    result = run()

    check = result.check("describe_key.origin")
    assert result.outcome == "passed"
    assert check.status == "warn"
    assert cause in check.cause


def test_it_asks_for_the_key_arn_when_an_alias_arn_was_registered(stubber) -> None:
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/byok"
    stub_describe(stubber, key_id=alias_arn)
    stubber.add_response(
        "decrypt",
        {"KeyId": ARN, "Plaintext": bytes(32), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"},
        {"KeyId": alias_arn, "CiphertextBlob": BLOB},
    )
    stubber.add_client_error("generate_data_key", "AccessDeniedException", "not authorized to perform")

    result = run(kms_key_arn=alias_arn)

    check = result.check("describe_key.arn")
    assert (result.outcome, result.failure_reason) == ("failed", "arn_mismatch")
    assert "alias ARN" in check.cause
    assert check.remedy == f"Register the key ARN exactly as KMS shows it: {ARN}"
    assert result.check("decrypt.key_id").status == "fail"


def test_it_fails_a_key_of_another_account(stubber) -> None:
    stub_describe(stubber)
    stub_decrypt(stubber)
    stub_dry_run(stubber)

    result = run(account_id="444455556666")

    check = result.check("describe_key.account")
    assert (result.outcome, result.failure_reason) == ("failed", "account_mismatch")
    assert f"belongs to AWS account {ACCOUNT}, not to the registered account 444455556666" in check.cause


def test_it_fails_a_data_key_that_is_not_256_bits(stubber) -> None:
    stub_describe(stubber)
    stub_decrypt(stubber, plaintext=bytes(16))
    stub_dry_run(stubber)

    result = run()

    check = result.check("decrypt.plaintext_size")
    assert (result.outcome, result.failure_reason) == ("failed", "wrong_data_key_size")
    assert "16 bytes (128 bits)" in check.cause
    assert "--key-spec AES_256" in check.remedy


def test_it_fails_a_decrypt_made_with_another_key(stubber) -> None:
    stub_describe(stubber)
    stub_decrypt(stubber, key_id=OTHER_ARN)
    stub_dry_run(stubber)

    result = run()

    assert (result.outcome, result.failure_reason) == ("failed", "key_id_mismatch")
    assert OTHER_ARN in result.check("decrypt.key_id").cause


def test_it_fails_an_unexpected_encryption_algorithm(stubber) -> None:
    stub_describe(stubber)
    stub_decrypt(stubber, algorithm="RSAES_OAEP_SHA_256")
    stub_dry_run(stubber)

    result = run()

    assert (result.outcome, result.failure_reason) == ("failed", "wrong_algorithm")


@pytest.mark.parametrize(
    ("code", "message", "reason", "cause", "remedy"),
    [
        ("IncorrectKeyException", "", "incorrect_key", "generated under another KMS key, not under", "--key-id"),
        ("InvalidCiphertextException", "", "invalid_ciphertext", "encryption context differs",
         "Paste the CiphertextBlob again"),
        ("AccessDeniedException",
         f"User: arn:aws:iam::{ACCOUNT}:user/byok is not authorized to perform: kms:Decrypt on resource: {ARN}",
         "access_denied", "denied kms:Decrypt", '"kms:Decrypt"'),
        ("UnrecognizedClientException", "The security token included in the request is invalid.",
         "invalid_credentials", "unknown or was deleted", "Create a new access key"),
        ("InvalidSignatureException", "The request signature we calculated does not match the signature you provided.",
         "bad_signature", "secret access key is wrong", "secret access key"),
        ("NotFoundException", f"Key '{ARN}' does not exist", "not_found", "KMS has no key", "Check the key ARN"),
        ("DisabledException", f"{ARN} is disabled.", "disabled", "disabled", "Enable the key"),
        ("ValidationException", "", "validation", "malformed", "paste the encrypted data key again"),
        ("IncompleteSignature", "The request signature does not conform to AWS standards.",
         "incomplete_signature", "platform's side", "contact support"),
        ("OptInRequired", "The AWS access key ID needs a subscription for the service",
         "opt_in_required", f"has not enabled region {REGION}", "aws account enable-region"),
    ],
)
def test_it_explains_each_permanent_decrypt_error(stubber, code, message, reason, cause, remedy) -> None:
    stub_describe(stubber)
    stubber.add_client_error("decrypt", code, message)

    result = run()

    check = result.check("decrypt.call")
    assert (result.outcome, result.failure_reason, result.transient) == ("failed", reason, False)
    assert (check.status, check.reason, check.aws_error_code, check.transient) == ("fail", reason, code, False)
    assert cause in check.cause
    assert remedy in check.remedy
    assert [result.check(n).status for n in DECRYPT_DEPENDENTS] == ["skip"] * 3


EXPIRED = "Signature expired: 20260101T000000Z is now earlier than 20260101T000601Z (20260101T001101Z - 5 min.)"


@pytest.mark.parametrize(
    ("code", "message", "status", "reason", "cause"),
    [
        ("InvalidSignatureException", EXPIRED, 400, "clock_skew", "clock skew"),
        ("ThrottlingException", "Rate exceeded", 400, "throttled", "throttled"),
        ("KMSInternalException", "", 500, "internal", "internal error"),
        ("DependencyTimeoutException", "", 503, "internal", "internal error"),
        ("KeyUnavailableException", "", 500, "key_unavailable", "temporarily unavailable"),
        ("ExpiredTokenException", "The security token included in the request is expired", 400,
         "expired_token", "security token expired"),
        ("InternalFailure", "", 500, "internal", "InternalFailure"),
        ("RequestExpired", "Request has expired.", 400, "clock_skew", "RequestExpired"),
        ("ServiceUnavailable", "", 503, "internal", "ServiceUnavailable"),
    ],
)
def test_it_leaves_the_registration_unverified_on_transient_errors(
    settings, stubber, code, message, status, reason, cause
):
    settings.CELERY_TASK_ALWAYS_EAGER = False  # a worker runs the job (and beat the periodic one)
    stub_describe(stubber)
    stubber.add_client_error("decrypt", code, message, http_status_code=status)

    result = run()

    check = result.check("decrypt.call")
    assert (result.outcome, result.failure_reason, result.transient) == ("unverified", reason, True)
    assert (check.status, check.transient, check.aws_error_code) == ("fail", True, code)
    assert cause in check.cause
    # Says when the platform tries again (the job's retries, the periodic re-validation).
    assert "tries again within about a minute" in check.remedy
    assert "every 15 min" in check.remedy


def test_it_promises_no_retry_it_will_not_make_without_a_worker(settings, stubber) -> None:
    """Without a broker the job runs once in the web request and nothing runs later by
    itself (no worker, no beat): the remedy says "Validate again" and no minute."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    stub_describe(stubber)
    stubber.add_client_error("decrypt", "ThrottlingException", "Rate exceeded")

    check = run().check("decrypt.call")

    assert check.transient
    assert check.remedy == (
        "Nothing to change on your side: try “Validate again” in a moment. This portal runs without a "
        "background worker, so it does not try again by itself."
    )


def test_it_tries_decrypt_and_stays_unverified_when_describe_key_is_throttled(stubber) -> None:
    stubber.add_client_error("describe_key", "ThrottlingException", "Rate exceeded")
    stub_decrypt(stubber)
    stub_dry_run(stubber)

    result = run()

    assert (result.outcome, result.failure_reason, result.transient) == ("unverified", "throttled", True)
    assert result.check("decrypt.call").status == "pass"


def test_it_never_fails_when_a_transient_error_hides_the_rest(stubber) -> None:
    """GIVEN DescribeKey denied (permanent) and Decrypt throttled (transient)
    THEN the outcome is unverified, not failed: the retry decides."""
    stubber.add_client_error("describe_key", "AccessDeniedException", "not authorized to perform: kms:DescribeKey")
    stubber.add_client_error("decrypt", "ThrottlingException", "Rate exceeded")

    result = run()

    assert (result.outcome, result.failure_reason, result.transient) == ("unverified", "throttled", True)
    assert result.check("describe_key.call").reason == "access_denied"


def test_it_fails_when_decrypt_refuses_even_if_describe_key_was_throttled(stubber) -> None:
    """GIVEN DescribeKey throttled (transient) and Decrypt refused with DisabledException
    THEN the outcome is failed (disabled): a definite refusal is a revocation."""
    stubber.add_client_error("describe_key", "ThrottlingException", "Rate exceeded")
    stubber.add_client_error("decrypt", "DisabledException", "key is disabled")

    result = run()

    assert (result.outcome, result.failure_reason, result.transient) == ("failed", "disabled", False)
    assert result.check("describe_key.call").transient is True


def test_it_skips_the_excess_privilege_probe_when_not_asked(stubber) -> None:
    stub_describe(stubber)
    stub_decrypt(stubber)

    result = run(check_excess_privilege=False)

    assert result.outcome == "passed"
    assert result.check("policy.excess_privilege").status == "skip"
    assert result.check("policy.excess_privilege").cause.startswith(
        "Not checked: this platform does not test for extra permissions."
    )


def test_it_warns_when_the_dry_run_says_generate_data_key_is_allowed(stubber) -> None:
    stub_describe(stubber)
    stub_decrypt(stubber)
    stub_dry_run(stubber, allowed=True)

    result = run()

    check = result.check("policy.excess_privilege")
    assert (result.outcome, check.status) == ("passed", "warn")
    assert '"Action": ["kms:Decrypt", "kms:DescribeKey"]' in check.remedy
    assert ARN in check.remedy


def test_it_does_not_let_a_failed_probe_change_the_outcome(stubber) -> None:
    stub_describe(stubber)
    stub_decrypt(stubber)
    stubber.add_client_error("generate_data_key", "ThrottlingException", "Rate exceeded")

    result = run()

    assert (result.outcome, result.transient) == ("passed", False)
    check = result.check("policy.excess_privilege")
    assert (check.status, check.aws_error_code) == ("skip", "ThrottlingException")


def test_it_fails_a_registered_arn_that_is_not_a_kms_arn(stubber) -> None:
    stubber.add_client_error("describe_key", "NotFoundException", "Invalid keyId", expected_params={"KeyId": "my-key"})
    stubber.add_client_error("decrypt", "NotFoundException", "Invalid keyId")

    result = run(kms_key_arn="my-key")

    assert (result.outcome, result.failure_reason) == ("failed", "invalid_arn")


@pytest.mark.parametrize("size", [32, 16])
def test_it_wipes_the_plaintext_data_key(stubber, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    stub_describe(stubber)
    stub_decrypt(stubber, plaintext=b"\xaa" * size)
    stub_dry_run(stubber)
    results: list[kms.DecryptResult] = []
    real_decrypt = kms.decrypt

    def spying_decrypt(**kwargs):
        results.append(real_decrypt(**kwargs))
        return results[-1]

    monkeypatch.setattr(kms, "decrypt", spying_decrypt)

    run()

    assert results[0].plaintext == bytearray(size)


# ---------------------------------------------------------------------------
# Raw HTTP answers and network failures
# ---------------------------------------------------------------------------


class _RawBody:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_kwargs):
        yield self._body


def answer_every_request(status: int, body: bytes) -> None:
    def before_send(request, **_kwargs):
        return AWSResponse(request.url, status, HeadersDict({}), _RawBody(body))

    kms.client(region=REGION, credentials=CREDENTIALS).meta.events.register("before-send.kms", before_send)


def fail_every_request(error: Exception) -> None:
    def before_send(request, **_kwargs):
        raise error

    kms.client(region=REGION, credentials=CREDENTIALS).meta.events.register("before-send.kms", before_send)


def test_it_fails_on_an_http_403_without_a_kms_code() -> None:
    answer_every_request(403, b"<html><body>Forbidden</body></html>")

    result = run()

    assert (result.outcome, result.failure_reason) == ("failed", "access_denied")
    assert result.check("describe_key.call").aws_error_code is None


def test_it_leaves_the_registration_unverified_on_an_http_500_without_a_code() -> None:
    answer_every_request(500, b"")

    result = run()

    assert (result.outcome, result.failure_reason, result.transient) == ("unverified", "internal", True)


@pytest.mark.parametrize(
    ("error", "reason", "cause"),
    [
        (botocore.exceptions.ReadTimeoutError(endpoint_url="https://kms.eu-west-1.amazonaws.com/"), "timeout",
         "did not answer within the time limit"),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="https://kms.eu-west-1.amazonaws.com/"), "network",
         "KMS unreachable"),
    ],
)
def test_it_leaves_the_registration_unverified_when_kms_cannot_be_reached(error, reason, cause) -> None:
    fail_every_request(error)

    result = run()

    assert (result.outcome, result.failure_reason, result.transient) == ("unverified", reason, True)
    for name in ("describe_key.call", "decrypt.call"):
        check = result.check(name)
        assert (check.status, check.reason, check.aws_error_code) == ("fail", reason, None)
        assert cause in check.cause
    assert result.check("policy.excess_privilege").status == "skip"


# ---------------------------------------------------------------------------
# Secrets stay secret
# ---------------------------------------------------------------------------


def test_it_never_shows_the_secret_access_key(stubber) -> None:
    """GIVEN an endpoint that echoes the secret back in its error messages
    THEN no check text, and no repr of the diagnosis, contains it."""
    echo = f"Credential {CREDENTIALS.access_key_id} secret {SECRET} rejected"
    diagnoses = []
    stubber.add_client_error("describe_key", "UnrecognizedClientException", echo)
    stubber.add_client_error("decrypt", "InvalidSignatureException", echo)
    diagnoses.append(run())
    stubber.add_client_error("describe_key", "SomethingNewException", echo)
    stubber.add_client_error("decrypt", "ValidationException", echo)
    diagnoses.append(run())
    stub_describe(stubber)
    stub_decrypt(stubber)
    stub_dry_run(stubber, allowed=True)
    diagnoses.append(run())

    for result in diagnoses:
        assert SECRET not in repr(result)
        for check in result.checks:
            for text in (check.name, check.label, check.cause, check.remedy, check.aws_error_code or ""):
                assert SECRET not in text
                assert CREDENTIALS.access_key_id not in text


EMULATOR = "http://127.0.0.1:4566"


def test_it_cannot_judge_excess_privilege_against_an_emulator_that_allows_everything() -> None:
    """GIVEN AWS_KMS_ENDPOINT_URL names an emulator (moto allows every call, whatever the
    policy) WHEN its dry run says GenerateDataKey is allowed THEN the check is skipped as
    "cannot be judged here", with no warning and no remedy repeating the policy."""
    with Stubber(kms.client(region=REGION, credentials=CREDENTIALS, endpoint_url=EMULATOR)) as emulator:
        stub_describe(emulator)
        stub_decrypt(emulator)
        stub_dry_run(emulator, allowed=True)
        result = run(endpoint_url=EMULATOR)
        emulator.assert_no_pending_responses()

    check = result.check("policy.excess_privilege")
    assert (result.outcome, check.status) == ("passed", "skip")
    assert check.cause.startswith("Cannot be judged here: this KMS endpoint is an emulator")
    assert not check.remedy


def test_it_still_passes_a_denied_dry_run_on_an_emulator() -> None:
    with Stubber(kms.client(region=REGION, credentials=CREDENTIALS, endpoint_url=EMULATOR)) as emulator:
        stub_describe(emulator)
        stub_decrypt(emulator)
        stub_dry_run(emulator, allowed=False)
        result = run(endpoint_url=EMULATOR)
    assert result.check("policy.excess_privilege").status == "pass"


@pytest.mark.parametrize(
    "endpoint_url, aws",
    [(None, True), ("https://kms.eu-west-1.amazonaws.com", True), ("https://kms.cn-north-1.amazonaws.com.cn", True),
     ("https://kms.eu-west-1.api.aws", True), (EMULATOR, False), ("http://localstack:4566", False),
     ("https://amazonaws.com.evil.example", False)],
)
def test_it_tells_aws_endpoints_from_emulators(endpoint_url, aws) -> None:
    assert kms.is_aws_endpoint(endpoint_url) is aws
