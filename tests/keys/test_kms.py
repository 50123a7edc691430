"""Tests of keys/kms.py, the KMS adapter.

moto (in-process ``mock_aws``) for what it emulates: keys, data keys, encryption
context, regions, and - with its IAM simulation switched on - unknown access
keys, wrong secrets and missing permissions. botocore's ``Stubber`` and raw HTTP
answers injected with ``before-send`` hooks for what it does not: key states,
throttling, KMS's documented error codes, timeouts, bare 403 and 5xx answers.
(docs/architecture.md, "Testing KMS honestly".)
"""

from __future__ import annotations

import pickle
import threading
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

from keys import kms
from keys.kms import KmsCredentials, KmsPermanentError, KmsTransientError, Reason
from tests.aws import isolate_aws_environment

REGION = "eu-west-1"
ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_ARN = "arn:aws:kms:eu-west-1:111122223333:key/0987dcba-09fe-87dc-65ba-ab0987654321"
BLOB = b"\x01\x02\x03\x00" + b"opaque-kms-ciphertext" * 8
# A canary: no message, repr or check text may ever contain it.
SECRET = "CanarySecret/9f8e7d6c5b4a+DoNotLeak0123456789"
ACCESS_KEY_ID = "AKIACANARY000000WXYZ"
CREDENTIALS = KmsCredentials(ACCESS_KEY_ID, SECRET, version="1")
NO_RETRIES = kms.KmsClientOptions(max_attempts=1)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake, isolated AWS configuration: nothing from the developer's machine."""
    isolate_aws_environment(monkeypatch, REGION)


@pytest.fixture(autouse=True)
def fresh_clients():
    kms.clear_clients()
    yield
    kms.clear_clients()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record botocore's retry back-off sleeps instead of sleeping."""
    recorded: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=recorded.append))
    return recorded


# ---------------------------------------------------------------------------
# moto: the customer's AWS side
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Customer:
    """What the customer set up in (emulated) AWS, as in the seed document."""

    admin: object  # the customer's own boto3 KMS client
    kms_key_arn: str
    account_id: str
    encrypted_data_key: bytes
    credentials: KmsCredentials


@pytest.fixture
def customer() -> Customer:
    """GIVEN a symmetric KMS key, an encrypted data key (AES_256, no encryption
    context) and an IAM user with an access key, in moto."""
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
        iam.put_user_policy(
            UserName=name,
            PolicyName="byok",
            PolicyDocument=(
                '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
                f'"Action": {actions!r}, "Resource": "*"}}]}}'
            ).replace("'", '"'),
        )
    access_key = iam.create_access_key(UserName=name)["AccessKey"]
    return KmsCredentials(access_key["AccessKeyId"], access_key["SecretAccessKey"])


def _describe(customer: Customer, **overrides) -> kms.KeyDescription:
    args = {"region": REGION, "credentials": customer.credentials, "key_id": customer.kms_key_arn}
    return kms.describe_key(**(args | overrides))


def _decrypt(customer: Customer, **overrides) -> kms.DecryptResult:
    args = {
        "region": REGION,
        "credentials": customer.credentials,
        "kms_key_arn": customer.kms_key_arn,
        "ciphertext_blob": customer.encrypted_data_key,
    }
    return kms.decrypt(**(args | overrides))


def test_it_describes_a_customer_managed_symmetric_key(customer: Customer) -> None:
    description = _describe(customer)

    assert description.arn == customer.kms_key_arn
    assert description.account_id == customer.account_id
    assert description.key_state == "Enabled"
    assert description.enabled is True
    assert description.key_spec == "SYMMETRIC_DEFAULT"
    assert description.key_manager == "CUSTOMER"
    assert description.origin == "AWS_KMS"
    assert description.deletion_date is None
    assert description.multi_region is False
    # moto leaves KeyUsage out for a key created without one; AWS always sends it.
    assert description.key_usage == ""


def test_it_decrypts_a_data_key_generated_without_plaintext(customer: Customer) -> None:
    result = _decrypt(customer)

    assert len(result.plaintext) == 32
    assert isinstance(result.plaintext, bytearray)
    assert result.key_id == customer.kms_key_arn
    assert result.encryption_algorithm is None  # moto does not report it
    assert len(customer.encrypted_data_key) == 96  # moto's format, see docs/architecture.md, "Testing KMS honestly"


def test_it_decrypts_with_the_encryption_context_used_at_generation(customer: Customer) -> None:
    context = {"environment": "env-1", "purpose": "records"}
    blob = customer.admin.generate_data_key_without_plaintext(
        KeyId=customer.kms_key_arn, KeySpec="AES_256", EncryptionContext=context
    )["CiphertextBlob"]

    result = _decrypt(customer, ciphertext_blob=blob, encryption_context=dict(reversed(context.items())))

    assert len(result.plaintext) == 32


@pytest.mark.parametrize(
    "context",
    [None, {}, {"environment": "env-2"}, {"environment": "env-1", "extra": "x"}, {"Environment": "env-1"}],
)
def test_it_raises_invalid_ciphertext_when_the_encryption_context_is_missing_or_different(
    customer: Customer, context: dict[str, str] | None
) -> None:
    blob = customer.admin.generate_data_key_without_plaintext(
        KeyId=customer.kms_key_arn, KeySpec="AES_256", EncryptionContext={"environment": "env-1"}
    )["CiphertextBlob"]

    with pytest.raises(KmsPermanentError) as raised:
        _decrypt(customer, ciphertext_blob=blob, encryption_context=context)

    assert raised.value.reason == Reason.INVALID_CIPHERTEXT
    assert raised.value.code == "InvalidCiphertextException"


def test_it_raises_invalid_ciphertext_for_a_corrupted_blob(customer: Customer) -> None:
    corrupted = customer.encrypted_data_key[:-1] + bytes([customer.encrypted_data_key[-1] ^ 1])

    with pytest.raises(KmsPermanentError) as raised:
        _decrypt(customer, ciphertext_blob=corrupted)

    assert raised.value.reason == Reason.INVALID_CIPHERTEXT


def test_it_raises_incorrect_key_for_a_blob_generated_under_another_key(customer: Customer) -> None:
    """GIVEN an encrypted data key generated under a second key
    WHEN it is decrypted with KeyId = the registered key
    THEN moto answers AccessDeniedException (AWS: IncorrectKeyException), which
    the adapter reports as incorrect_key, keeping moto's code."""
    other_arn = customer.admin.create_key()["KeyMetadata"]["Arn"]
    other_blob = customer.admin.generate_data_key_without_plaintext(KeyId=other_arn, KeySpec="AES_256")[
        "CiphertextBlob"
    ]

    with pytest.raises(KmsPermanentError) as raised:
        _decrypt(customer, ciphertext_blob=other_blob)

    assert raised.value.reason == Reason.INCORRECT_KEY
    assert raised.value.code == "AccessDeniedException"
    assert raised.value.http_status == 400


def test_it_raises_not_found_for_a_key_in_another_region(customer: Customer) -> None:
    with pytest.raises(KmsPermanentError) as described:
        _describe(customer, region="us-east-1")
    with pytest.raises(KmsPermanentError) as decrypted:
        _decrypt(customer, region="us-east-1")

    assert described.value.reason == decrypted.value.reason == Reason.NOT_FOUND
    assert described.value.code == "NotFoundException"


def test_it_raises_not_found_for_an_unknown_key_arn(customer: Customer) -> None:
    unknown = customer.kms_key_arn.rsplit("/", 1)[0] + "/11111111-2222-3333-4444-555555555555"

    with pytest.raises(KmsPermanentError) as described:
        _describe(customer, key_id=unknown)
    with pytest.raises(KmsPermanentError) as decrypted:
        _decrypt(customer, kms_key_arn=unknown)

    assert described.value.reason == decrypted.value.reason == Reason.NOT_FOUND
    assert "does not exist" in described.value.message


def test_it_raises_invalid_credentials_for_an_unknown_access_key_id(customer: Customer) -> None:
    """moto's IAM simulation answers HTTP 403 with the code '403' and the real
    code (InvalidClientTokenId) inside an XML body."""
    unknown = KmsCredentials("AKIAUNKNOWN000000000", "whatever")

    with enable_iam_authentication(), pytest.raises(KmsPermanentError) as raised:
        _describe(customer, credentials=unknown)

    assert raised.value.reason == Reason.INVALID_CREDENTIALS
    assert raised.value.code == "InvalidClientTokenId"
    assert raised.value.http_status == 403
    assert "<" not in raised.value.message


def test_it_raises_bad_signature_for_a_wrong_secret_access_key(customer: Customer) -> None:
    wrong = KmsCredentials(customer.credentials.access_key_id, "not-the-secret")

    with enable_iam_authentication(), pytest.raises(KmsPermanentError) as raised:
        _decrypt(customer, credentials=wrong)

    assert raised.value.reason == Reason.BAD_SIGNATURE
    assert raised.value.code == "SignatureDoesNotMatch"


def test_it_raises_access_denied_when_the_iam_policy_does_not_allow_the_action(customer: Customer) -> None:
    only_describe = _iam_user("describe-only", ["kms:DescribeKey"])

    with enable_iam_authentication():
        assert _describe(customer, credentials=only_describe).arn == customer.kms_key_arn
        with pytest.raises(KmsPermanentError) as raised:
            _decrypt(customer, credentials=only_describe)

    assert raised.value.reason == Reason.ACCESS_DENIED
    assert raised.value.code == "AccessDenied"
    assert "kms:Decrypt" in raised.value.message


def test_it_reports_generate_data_key_allowed_when_the_endpoint_ignores_dry_run(customer: Customer) -> None:
    # moto ignores DryRun and generates a real data key; the adapter drops it.
    assert kms.generate_data_key_allowed(
        region=REGION, credentials=customer.credentials, kms_key_arn=customer.kms_key_arn
    )


def test_it_reports_generate_data_key_denied_to_a_least_privilege_user(customer: Customer) -> None:
    least_privilege = _iam_user("least-privilege", ["kms:Decrypt", "kms:DescribeKey"])

    with enable_iam_authentication():
        assert len(_decrypt(customer, credentials=least_privilege).plaintext) == 32
        allowed = kms.generate_data_key_allowed(
            region=REGION, credentials=least_privilege, kms_key_arn=customer.kms_key_arn
        )

    assert allowed is False


# ---------------------------------------------------------------------------
# Stubber: KMS's documented error codes
# ---------------------------------------------------------------------------


@pytest.fixture
def stubber():
    """A Stubber on the very client the adapter caches for CREDENTIALS."""
    with Stubber(kms.client(region=REGION, credentials=CREDENTIALS)) as stub:
        yield stub
        stub.assert_no_pending_responses()


def _stubbed_decrypt(**overrides) -> kms.DecryptResult:
    args = {"region": REGION, "credentials": CREDENTIALS, "kms_key_arn": ARN, "ciphertext_blob": BLOB}
    return kms.decrypt(**(args | overrides))


PENDING_DELETION = f"{ARN} is pending deletion."
EXPIRED = "Signature expired: 20260101T000000Z is now earlier than 20260101T000601Z (20260101T001101Z - 5 min.)"
NOT_YET_CURRENT = "Signature not yet current: 20260101T002000Z is still later than 20260101T001400Z (20260101T000900Z + 5 min.)"
WRONG_SECRET = "The request signature we calculated does not match the signature you provided."
POLICY_DENIAL = (
    "User: arn:aws:iam::111122223333:user/byok is not authorized to perform: kms:Decrypt on resource: "
    f"{ARN} because no identity-based policy allows the kms:Decrypt action"
)

ERROR_CASES = [
    # (code, HTTP status, message) -> (kind, reason)
    ("DisabledException", 400, f"{ARN} is disabled.", KmsPermanentError, Reason.DISABLED),
    ("KMSInvalidStateException", 400, PENDING_DELETION, KmsPermanentError, Reason.PENDING_DELETION),
    ("KMSInvalidStateException", 400, f"{ARN} is pending replica deletion.", KmsPermanentError, Reason.PENDING_DELETION),
    ("KMSInvalidStateException", 400, f"{ARN} is pending import.", KmsPermanentError, Reason.PENDING_IMPORT),
    ("KMSInvalidStateException", 400, f"{ARN} is unavailable.", KmsPermanentError, Reason.UNAVAILABLE_STATE),
    ("IncorrectKeyException", 400, "", KmsPermanentError, Reason.INCORRECT_KEY),
    ("InvalidCiphertextException", 400, "", KmsPermanentError, Reason.INVALID_CIPHERTEXT),
    ("AccessDeniedException", 400, POLICY_DENIAL, KmsPermanentError, Reason.ACCESS_DENIED),
    ("AccessDeniedException", 400, "", KmsPermanentError, Reason.INCORRECT_KEY),
    ("UnrecognizedClientException", 400, "The security token included in the request is invalid.",
     KmsPermanentError, Reason.INVALID_CREDENTIALS),
    ("InvalidSignatureException", 400, WRONG_SECRET, KmsPermanentError, Reason.BAD_SIGNATURE),
    ("InvalidSignatureException", 400, EXPIRED, KmsTransientError, Reason.CLOCK_SKEW),
    ("InvalidSignatureException", 400, NOT_YET_CURRENT, KmsTransientError, Reason.CLOCK_SKEW),
    ("SignatureDoesNotMatch", 403, EXPIRED, KmsTransientError, Reason.CLOCK_SKEW),
    ("NotFoundException", 400, f"Key '{ARN}' does not exist", KmsPermanentError, Reason.NOT_FOUND),
    ("InvalidKeyUsageException", 400, "", KmsPermanentError, Reason.INVALID_KEY_USAGE),
    ("InvalidArnException", 400, "", KmsPermanentError, Reason.INVALID_ARN),
    ("ValidationException", 400, "", KmsPermanentError, Reason.VALIDATION),
    ("InvalidGrantTokenException", 400, "", KmsPermanentError, Reason.VALIDATION),
    ("SomethingNewException", 400, "", KmsPermanentError, Reason.UNEXPECTED),
    ("ThrottlingException", 400, "Rate exceeded", KmsTransientError, Reason.THROTTLED),
    ("LimitExceededException", 400, "", KmsTransientError, Reason.THROTTLED),
    ("RequestLimitExceeded", 400, "", KmsTransientError, Reason.THROTTLED),
    ("KMSInternalException", 500, "", KmsTransientError, Reason.INTERNAL),
    ("DependencyTimeoutException", 503, "", KmsTransientError, Reason.INTERNAL),
    ("KeyUnavailableException", 500, "", KmsTransientError, Reason.KEY_UNAVAILABLE),
    # The KMS common errors (https://docs.aws.amazon.com/kms/latest/APIReference/CommonErrors.html)
    ("ExpiredTokenException", 400, "The security token included in the request is expired",
     KmsTransientError, Reason.EXPIRED_TOKEN),
    ("IncompleteSignature", 400, "The request signature does not conform to AWS standards.",
     KmsPermanentError, Reason.INCOMPLETE_SIGNATURE),
    ("InternalFailure", 500, "", KmsTransientError, Reason.INTERNAL),
    ("OptInRequired", 403, "The AWS access key ID needs a subscription for the service",
     KmsPermanentError, Reason.OPT_IN_REQUIRED),
    ("RequestExpired", 400, "Request has expired.", KmsTransientError, Reason.CLOCK_SKEW),
    ("ServiceUnavailable", 503, "", KmsTransientError, Reason.INTERNAL),
    ("", 403, "", KmsPermanentError, Reason.ACCESS_DENIED),
    ("", 429, "", KmsTransientError, Reason.THROTTLED),
    ("", 500, "", KmsTransientError, Reason.INTERNAL),
    ("", 502, "", KmsTransientError, Reason.INTERNAL),
    ("", 404, "", KmsPermanentError, Reason.UNEXPECTED),
]


@pytest.mark.parametrize(("code", "status", "message", "kind", "reason"), ERROR_CASES)
def test_it_maps_each_kms_error_to_its_kind_and_reason(stubber, code, status, message, kind, reason) -> None:
    stubber.add_client_error("decrypt", code, message, http_status_code=status)

    with pytest.raises(kind) as raised:
        _stubbed_decrypt()

    error = raised.value
    assert (type(error), error.reason, error.permanent) == (kind, reason, kind is KmsPermanentError)
    assert error.code == (code or None)
    assert error.http_status == status
    assert error.operation == "Decrypt"
    assert isinstance(error.__cause__, botocore.exceptions.ClientError)


def test_it_pickles_errors_with_all_their_attributes() -> None:
    error = kms.KmsTransientError(
        Reason.THROTTLED, operation="Decrypt", message="KMS Decrypt failed: throttled", code="ThrottlingException",
        http_status=400,
    )

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is KmsTransientError
    assert (copy.reason, copy.operation, copy.message, copy.code, copy.http_status, copy.permanent) == (
        Reason.THROTTLED, "Decrypt", "KMS Decrypt failed: throttled", "ThrottlingException", 400, False
    )


def test_it_says_clock_skew_in_the_message_of_an_expired_signature(stubber) -> None:
    stubber.add_client_error("describe_key", "InvalidSignatureException", EXPIRED)

    with pytest.raises(KmsTransientError) as raised:
        kms.describe_key(region=REGION, credentials=CREDENTIALS, key_id=ARN)

    assert "clock skew" in str(raised.value)


def test_it_keeps_access_denied_on_describe_key_as_access_denied(stubber) -> None:
    # The "no message means wrong key" reading applies to Decrypt only.
    stubber.add_client_error("describe_key", "AccessDeniedException", "")

    with pytest.raises(KmsPermanentError) as raised:
        kms.describe_key(region=REGION, credentials=CREDENTIALS, key_id=ARN)

    assert raised.value.reason == Reason.ACCESS_DENIED


def test_it_passes_the_key_arn_and_encryption_context_to_decrypt(stubber) -> None:
    stubber.add_response(
        "decrypt",
        {"KeyId": ARN, "Plaintext": bytes(range(32)), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"},
        expected_params={"KeyId": ARN, "CiphertextBlob": BLOB, "EncryptionContext": {"environment": "env-1"}},
    )

    result = _stubbed_decrypt(encryption_context={"environment": "env-1"})

    assert result.plaintext == bytearray(range(32))
    assert result.encryption_algorithm == "SYMMETRIC_DEFAULT"
    assert result.key_id == ARN


def test_it_sends_no_encryption_context_when_there_is_none(stubber) -> None:
    stubber.add_response(
        "decrypt", {"KeyId": ARN, "Plaintext": bytes(32)}, expected_params={"KeyId": ARN, "CiphertextBlob": BLOB}
    )

    assert _stubbed_decrypt(encryption_context={}).key_id == ARN


def test_it_describes_the_deletion_date_of_a_key_pending_deletion_in_utc(stubber) -> None:
    stubber.add_response(
        "describe_key",
        {
            "KeyMetadata": {
                "KeyId": ARN.rsplit("/", 1)[1],
                "Arn": ARN,
                "AWSAccountId": "111122223333",
                "KeyState": "PendingDeletion",
                "Enabled": False,
                "KeyUsage": "ENCRYPT_DECRYPT",
                "KeySpec": "SYMMETRIC_DEFAULT",
                "KeyManager": "CUSTOMER",
                "Origin": "AWS_KMS",
                "DeletionDate": datetime(2026, 12, 4, 10, 30, tzinfo=timezone.utc),
                "MultiRegion": False,
            }
        },
        expected_params={"KeyId": ARN},
    )

    description = kms.describe_key(region=REGION, credentials=CREDENTIALS, key_id=ARN)

    assert description.key_state == "PendingDeletion"
    assert description.deletion_date == datetime(2026, 12, 4, 10, 30, tzinfo=timezone.utc)
    assert description.deletion_date.tzinfo == timezone.utc


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [("DryRunOperationException", 412, True), ("AccessDeniedException", 400, False)],
)
def test_it_probes_generate_data_key_with_a_dry_run(stubber, code, status, expected) -> None:
    stubber.add_client_error(
        "generate_data_key",
        code,
        http_status_code=status,
        expected_params={"KeyId": ARN, "KeySpec": "AES_256", "DryRun": True},
    )

    assert kms.generate_data_key_allowed(region=REGION, credentials=CREDENTIALS, kms_key_arn=ARN) is expected


def test_it_raises_other_errors_of_the_generate_data_key_probe(stubber) -> None:
    stubber.add_client_error("generate_data_key", "ThrottlingException")

    with pytest.raises(KmsTransientError):
        kms.generate_data_key_allowed(region=REGION, credentials=CREDENTIALS, kms_key_arn=ARN)


# ---------------------------------------------------------------------------
# Raw HTTP answers and network failures (before-send hooks): botocore's own
# parsing and retries run, only the socket is replaced.
# ---------------------------------------------------------------------------


class _RawBody:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_kwargs):
        yield self._body


def _answer_every_request(options: kms.KmsClientOptions, status: int, body: bytes, headers=None) -> list:
    """Make the cached client answer each request with this raw HTTP response."""
    requests: list = []

    def before_send(request, **_kwargs):
        requests.append(request)
        return AWSResponse(request.url, status, HeadersDict(headers or {}), _RawBody(body))

    kms_client = kms.client(region=REGION, credentials=CREDENTIALS, options=options)
    kms_client.meta.events.register("before-send.kms", before_send)
    return requests


def _fail_every_request(options: kms.KmsClientOptions, error: Exception) -> list:
    requests: list = []

    def before_send(request, **_kwargs):
        requests.append(request)
        raise error

    kms_client = kms.client(region=REGION, credentials=CREDENTIALS, options=options)
    kms_client.meta.events.register("before-send.kms", before_send)
    return requests


def test_it_maps_an_http_403_without_a_kms_code_to_access_denied(sleeps) -> None:
    requests = _answer_every_request(kms.DEFAULT_OPTIONS, 403, b"<html><body>Forbidden</body></html>")

    with pytest.raises(KmsPermanentError) as raised:
        _stubbed_decrypt()

    assert raised.value.reason == Reason.ACCESS_DENIED
    assert raised.value.http_status == 403
    assert raised.value.code is None
    assert len(requests) == 1  # a 403 is not retried


def test_it_maps_an_http_500_without_a_code_to_internal_after_retrying(sleeps) -> None:
    """GIVEN an endpoint that answers every request with a bare HTTP 500
    WHEN Decrypt is called with the default options
    THEN botocore tries 3 times with back-off and the adapter raises a
    transient internal error."""
    requests = _answer_every_request(kms.DEFAULT_OPTIONS, 500, b"")

    with pytest.raises(KmsTransientError) as raised:
        _stubbed_decrypt()

    assert raised.value.reason == Reason.INTERNAL
    assert raised.value.http_status == 500
    assert len(requests) == kms.MAX_ATTEMPTS == 3
    assert len(sleeps) == 2


def test_it_retries_throttling_before_giving_up(sleeps) -> None:
    body = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
    requests = _answer_every_request(kms.DEFAULT_OPTIONS, 400, body)

    with pytest.raises(KmsTransientError) as raised:
        kms.describe_key(region=REGION, credentials=CREDENTIALS, key_id=ARN)

    assert (raised.value.reason, raised.value.code) == (Reason.THROTTLED, "ThrottlingException")
    assert len(requests) == 3


def test_it_parses_a_kms_json_error_body(sleeps) -> None:
    body = b'{"__type": "KMSInvalidStateException", "message": "' + PENDING_DELETION.encode() + b'"}'
    _answer_every_request(kms.DEFAULT_OPTIONS, 400, body)

    with pytest.raises(KmsPermanentError) as raised:
        _stubbed_decrypt()

    assert (raised.value.reason, raised.value.code) == (Reason.PENDING_DELETION, "KMSInvalidStateException")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (botocore.exceptions.ReadTimeoutError(endpoint_url="https://kms.eu-west-1.amazonaws.com/"), Reason.TIMEOUT),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="https://kms.eu-west-1.amazonaws.com/"), Reason.TIMEOUT),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="https://kms.eu-west-1.amazonaws.com/"),
         Reason.NETWORK),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="https://kms.eu-west-1.amazonaws.com/"),
         Reason.NETWORK),
    ],
)
def test_it_maps_timeouts_and_connection_failures_to_transient_errors(sleeps, error, reason) -> None:
    requests = _fail_every_request(kms.DEFAULT_OPTIONS, error)

    with pytest.raises(KmsTransientError) as raised:
        _stubbed_decrypt()

    assert raised.value.reason == reason
    assert raised.value.code is None
    assert raised.value.__cause__ is error
    assert len(requests) == 3  # standard retries cover connection errors


def test_it_maps_an_unreachable_endpoint_to_a_transient_network_error() -> None:
    # A real socket: nothing listens on the discard port of the loopback.
    with pytest.raises(KmsTransientError) as raised:
        kms.describe_key(
            region=REGION, credentials=CREDENTIALS, key_id=ARN, endpoint_url="http://127.0.0.1:9", options=NO_RETRIES
        )

    assert raised.value.reason in (Reason.NETWORK, Reason.TIMEOUT)
    assert isinstance(raised.value.__cause__, botocore.exceptions.BotoCoreError)


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (botocore.exceptions.NoCredentialsError(), KmsPermanentError, Reason.INVALID_CREDENTIALS),
        (botocore.exceptions.ParamValidationError(report="CiphertextBlob too short"), KmsPermanentError,
         Reason.VALIDATION),
        (botocore.exceptions.BotoCoreError(), KmsTransientError, Reason.INTERNAL),
        (ValueError("what?"), KmsTransientError, Reason.INTERNAL),
    ],
)
def test_it_classifies_other_errors_on_their_own(error, kind, reason) -> None:
    classified = kms.classify(error, operation="Decrypt")

    assert (type(classified), classified.reason) == (kind, reason)


def test_it_raises_validation_when_botocore_rejects_the_parameters() -> None:
    requests = _answer_every_request(kms.DEFAULT_OPTIONS, 200, b"{}")

    with pytest.raises(KmsPermanentError) as raised:
        _stubbed_decrypt(encryption_context={"environment": 1})

    assert raised.value.reason == Reason.VALIDATION
    assert requests == []  # botocore refused before sending anything
    assert isinstance(raised.value.__cause__, botocore.exceptions.ParamValidationError)


# ---------------------------------------------------------------------------
# The client cache
# ---------------------------------------------------------------------------


def test_it_returns_the_same_client_for_the_same_region_credentials_and_endpoint() -> None:
    first = kms.client(region=REGION, credentials=CREDENTIALS, endpoint_url="http://127.0.0.1:5000")
    again = kms.client(
        region=REGION, credentials=KmsCredentials(ACCESS_KEY_ID, SECRET, "1"), endpoint_url="http://127.0.0.1:5000"
    )

    assert again is first


@pytest.mark.parametrize(
    "change",
    [
        {"region": "us-east-1"},
        {"credentials": KmsCredentials(ACCESS_KEY_ID, SECRET, version="2")},
        {"credentials": KmsCredentials(ACCESS_KEY_ID, SECRET + "x", version="1")},
        {"credentials": KmsCredentials("AKIAOTHER00000000000", SECRET, version="1")},
        {"endpoint_url": "http://127.0.0.1:5000"},
        {"options": NO_RETRIES},
    ],
)
def test_it_builds_another_client_when_anything_in_the_cache_key_changes(change) -> None:
    args = {"region": REGION, "credentials": CREDENTIALS}

    assert kms.client(**(args | change)) is not kms.client(**args)


def test_it_builds_a_new_client_after_clear_clients() -> None:
    first = kms.client(region=REGION, credentials=CREDENTIALS)

    kms.clear_clients()

    assert kms.client(region=REGION, credentials=CREDENTIALS) is not first


def test_it_configures_timeouts_and_standard_retries() -> None:
    config = kms.client(region=REGION, credentials=CREDENTIALS).meta.config

    assert (config.connect_timeout, config.read_timeout) == (3.0, 10.0)
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}


def test_it_signs_with_the_given_credentials_and_region() -> None:
    kms_client = kms.client(region="ap-southeast-2", credentials=CREDENTIALS)
    frozen = kms_client._request_signer._credentials.get_frozen_credentials()

    assert (frozen.access_key, frozen.secret_key, frozen.token) == (ACCESS_KEY_ID, SECRET, None)
    assert kms_client.meta.region_name == "ap-southeast-2"


def test_it_builds_one_client_when_threads_ask_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []
    real_build = kms._build_client

    def counting_build(*args):
        built.append(args)
        return real_build(*args)

    monkeypatch.setattr(kms, "_build_client", counting_build)
    barrier = threading.Barrier(8)
    clients: list[object] = []

    def ask() -> None:
        barrier.wait()
        clients.append(kms.client(region=REGION, credentials=CREDENTIALS))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(built) == 1
    assert len({id(c) for c in clients}) == 1


def test_it_evicts_the_least_recently_used_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kms, "CLIENT_CACHE_SIZE", 2)
    first = kms.client(region="eu-west-1", credentials=CREDENTIALS)
    kms.client(region="eu-west-2", credentials=CREDENTIALS)
    assert kms.client(region="eu-west-1", credentials=CREDENTIALS) is first  # now most recent

    kms.client(region="eu-west-3", credentials=CREDENTIALS)  # evicts eu-west-2

    assert kms.client(region="eu-west-1", credentials=CREDENTIALS) is first
    assert len(kms._clients) == 2


# ---------------------------------------------------------------------------
# Secrets stay secret
# ---------------------------------------------------------------------------


def test_it_keeps_the_secret_access_key_out_of_the_credentials_repr() -> None:
    assert SECRET not in repr(CREDENTIALS)
    assert SECRET not in str(CREDENTIALS)
    assert ACCESS_KEY_ID in repr(CREDENTIALS)


def test_it_keeps_the_plaintext_out_of_the_decrypt_result_repr_and_wipes_it() -> None:
    result = kms.DecryptResult(key_id=ARN, encryption_algorithm=None, plaintext=bytearray(b"\xab" * 32))

    assert "plaintext" not in repr(result)

    result.wipe()

    assert result.plaintext == bytearray(32)


@pytest.mark.parametrize(
    "message",
    [
        f"Credential {ACCESS_KEY_ID}/20260101/eu-west-1/kms/aws4_request rejected; secret {SECRET}",
        f"<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message>{SECRET}</Message></Error></ErrorResponse>",
    ],
)
def test_it_never_puts_the_secret_access_key_in_an_error(stubber, message) -> None:
    """GIVEN an endpoint that echoes the credentials back in its error message
    THEN the error's message and repr carry neither the secret nor the whole
    access key ID."""
    stubber.add_client_error("decrypt", "InvalidSignatureException", message)

    with pytest.raises(KmsPermanentError) as raised:
        _stubbed_decrypt()

    error = raised.value
    for text in (str(error), repr(error), error.message, *map(str, error.args)):
        assert SECRET not in text
        assert ACCESS_KEY_ID not in text
    assert "[redacted]" in error.message


def test_it_signs_with_the_session_token_of_temporary_credentials() -> None:
    temporary = KmsCredentials("ASIACANARY000000WXYZ", SECRET, version="sts", session_token="CanaryToken+xyz")

    signed = kms.client(region=REGION, credentials=temporary)._request_signer._credentials

    assert (signed.access_key, signed.secret_key, signed.token) == ("ASIACANARY000000WXYZ", SECRET, "CanaryToken+xyz")
    assert "CanaryToken" not in repr(temporary)
    assert kms.client(region=REGION, credentials=temporary) is not kms.client(region=REGION, credentials=CREDENTIALS)
