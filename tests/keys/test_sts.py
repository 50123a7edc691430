"""Tests of keys/sts.py, the STS adapter, and of RoleSessions (temporary credentials in memory).

moto (in-process ``mock_aws``) runs the happy path: a role is created, AssumeRole
returns temporary credentials, and KMS accepts them. NOTE: moto's AssumeRole
checks neither the external ID nor the trust policy - it hands out credentials
for any role ARN, even one that does not exist. Every refusal is therefore
tested with botocore's Stubber and with raw STS XML error bodies (STS speaks
the query protocol: ``<ErrorResponse><Error><Code>``), which exercise botocore's
own parser, as AWS documents them:
https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html#API_AssumeRole_Errors
"""

from __future__ import annotations

import json
import threading
import time
import types
from datetime import datetime, timedelta, timezone

import boto3
import botocore.endpoint
import botocore.exceptions
import pytest
from botocore.awsrequest import AWSResponse, HeadersDict
from botocore.stub import Stubber
from moto import mock_aws

from keys import kms, sts
from keys.kms import KmsPermanentError, KmsTransientError
from keys.sts import Reason, StsPermanentError, StsTransientError, TemporaryCredentials
from tests.aws import isolate_aws_environment

REGION = "eu-west-1"
ACCOUNT = "111122223333"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/byok-portal-access"
EXTERNAL_ID = "portal-ext-6f1c0a9e2b7d4c3f8a5e"
PLATFORM = "arn:aws:iam::999988887777:role/byok-platform"
NO_RETRIES = sts.StsClientOptions(max_attempts=1)
CANARY_SECRET = "CanaryStsSecret/0123456789abcdefDoNotLeak"
CANARY_TOKEN = "CanaryStsSessionToken+FwoGZXIvYXdzEDoNotLeak"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_aws_environment(monkeypatch, REGION)


@pytest.fixture(autouse=True)
def fresh_clients():
    sts.clear_clients()
    kms.clear_clients()
    yield
    sts.clear_clients()
    kms.clear_clients()


@pytest.fixture(autouse=True)
def no_backoff_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=lambda _seconds: None))


def _assume(**overrides) -> TemporaryCredentials:
    args = {
        "role_arn": ROLE_ARN,
        "external_id": EXTERNAL_ID,
        "session_name": "portal-env-abc",
        "region": REGION,
        "options": NO_RETRIES,
    }
    return sts.assume_role(**(args | overrides))


# ---------------------------------------------------------------------------
# moto: the happy path (no trust-policy or external-ID check in moto!)
# ---------------------------------------------------------------------------

TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"AWS": PLATFORM},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}},
        }
    ],
}


def test_it_assumes_a_role_and_kms_accepts_the_temporary_credentials() -> None:
    with mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        role_arn = iam.create_role(RoleName="byok-portal-access", AssumeRolePolicyDocument=json.dumps(TRUST_POLICY))[
            "Role"
        ]["Arn"]
        admin = boto3.client("kms", region_name=REGION)
        key_arn = admin.create_key()["KeyMetadata"]["Arn"]
        blob = admin.generate_data_key_without_plaintext(KeyId=key_arn, KeySpec="AES_256")["CiphertextBlob"]

        temporary = _assume(role_arn=role_arn)
        result = kms.decrypt(
            region=REGION, credentials=temporary.kms_credentials(), kms_key_arn=key_arn, ciphertext_blob=blob
        )

    assert temporary.access_key_id.startswith("ASIA")
    assert temporary.assumed_role_arn.endswith(":assumed-role/byok-portal-access/portal-env-abc")
    assert temporary.expiration.tzinfo is not None
    assert len(result.plaintext) == 32
    assert temporary.secret_access_key not in repr(temporary)
    assert temporary.session_token not in repr(temporary)


def test_it_names_the_platform_principal_with_get_caller_identity() -> None:
    with mock_aws():
        identity = sts.get_caller_identity(region=REGION)

    assert identity.account == "123456789012"  # moto's default account
    assert identity.arn.startswith("arn:aws:")


def test_it_sends_the_external_id_session_name_and_duration() -> None:
    with Stubber(sts.client(region=REGION, options=NO_RETRIES)) as stub:
        stub.add_response(
            "assume_role",
            _assume_role_response(),
            {
                "RoleArn": ROLE_ARN,
                "ExternalId": EXTERNAL_ID,
                "RoleSessionName": "portal-env-abc",
                "DurationSeconds": 3600,
            },
        )
        temporary = _assume()
        stub.assert_no_pending_responses()

    assert (temporary.secret_access_key, temporary.session_token) == (CANARY_SECRET, CANARY_TOKEN)
    assert temporary.kms_credentials().session_token == CANARY_TOKEN


def _assume_role_response(expiration: datetime | None = None) -> dict:
    return {
        "Credentials": {
            "AccessKeyId": "ASIACANARY0000000001",
            "SecretAccessKey": CANARY_SECRET,
            "SessionToken": CANARY_TOKEN,
            "Expiration": expiration or datetime.now(timezone.utc) + timedelta(hours=1),
        },
        "AssumedRoleUser": {
            "AssumedRoleId": "AROACANARY:portal-env-abc",
            "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/byok-portal-access/portal-env-abc",
        },
    }


@pytest.mark.parametrize(
    ("label", "expected"),
    [("portal-env-7c9e", "portal-env-7c9e"), ("env id/with spaces", "env-id-with-spaces"), ("x", "portal-x"),
     ("a" * 80, "a" * 64)],
)
def test_it_makes_a_valid_role_session_name(label: str, expected: str) -> None:
    assert sts.session_name(label) == expected


# ---------------------------------------------------------------------------
# STS's error shapes
# ---------------------------------------------------------------------------

DENIED = (
    f"User: {PLATFORM.replace(':role/', ':assumed-role/')}/i-0abc is not authorized to perform: "
    f"sts:AssumeRole on resource: {ROLE_ARN}"
)
STS_ERRORS = [
    # (code, HTTP status, message) -> (kind, reason, platform_fault)
    ("AccessDenied", 403, DENIED, StsPermanentError, Reason.ACCESS_DENIED, False),
    ("ValidationError", 400, "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
     StsPermanentError, Reason.DURATION_TOO_LONG, False),
    ("ValidationError", 400, "1 validation error detected: Value 'x' at 'roleArn' failed to satisfy constraint",
     StsPermanentError, Reason.VALIDATION, False),
    ("RegionDisabledException", 403,
     "STS is not activated in this region for account:111122223333. Your account administrator can activate "
     "STS in this region using the IAM Console.", StsPermanentError, Reason.REGION_DISABLED, False),
    ("ExpiredTokenException", 400, "The security token included in the request is expired",
     StsTransientError, Reason.PLATFORM_CREDENTIALS, True),
    ("InvalidClientTokenId", 403, "The security token included in the request is invalid.",
     StsTransientError, Reason.PLATFORM_CREDENTIALS, True),
    ("SignatureDoesNotMatch", 403, "The request signature we calculated does not match the signature you provided.",
     StsTransientError, Reason.PLATFORM_CREDENTIALS, True),
    ("SignatureDoesNotMatch", 403, "Signature expired: 20260101T000000Z is now earlier than 20260101T000601Z",
     StsTransientError, Reason.CLOCK_SKEW, False),
    ("Throttling", 400, "Rate exceeded", StsTransientError, Reason.THROTTLED, False),
    ("InternalFailure", 500, "", StsTransientError, Reason.INTERNAL, False),
    ("ServiceUnavailable", 503, "", StsTransientError, Reason.INTERNAL, False),
    ("RequestExpired", 400, "Request has expired.", StsTransientError, Reason.CLOCK_SKEW, False),
    ("MalformedPolicyDocument", 400, "", StsPermanentError, Reason.UNEXPECTED, False),
    ("", 403, "", StsPermanentError, Reason.ACCESS_DENIED, False),
    ("", 502, "", StsTransientError, Reason.INTERNAL, False),
]


@pytest.mark.parametrize(("code", "status", "message", "kind", "reason", "platform_fault"), STS_ERRORS)
def test_it_classifies_each_sts_error_from_the_stubber(code, status, message, kind, reason, platform_fault) -> None:
    with Stubber(sts.client(region=REGION, options=NO_RETRIES)) as stub:
        stub.add_client_error("assume_role", code, message, http_status_code=status)
        with pytest.raises(kind) as raised:
            _assume()

    error = raised.value
    assert (error.reason, error.code, error.http_status, error.operation) == (reason, code or None, status, "AssumeRole")
    assert error.platform_fault is platform_fault
    # Callers that handle KMS refusals handle STS refusals the same way.
    assert isinstance(error, KmsPermanentError if kind is StsPermanentError else KmsTransientError)
    assert isinstance(error.__cause__, botocore.exceptions.ClientError)


class _RawBody:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_kwargs):
        yield self._body


def _sts_xml_error(code: str, message: str, kind: str = "Sender") -> bytes:
    return (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        f"<Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"
    ).encode()


@pytest.mark.parametrize(
    ("code", "status", "message", "kind", "reason", "platform_fault"), [c for c in STS_ERRORS if c[0]]
)
def test_it_classifies_each_sts_error_from_its_xml_body(code, status, message, kind, reason, platform_fault) -> None:
    requests: list = []

    def before_send(request, **_kwargs):
        requests.append(request)
        body = _sts_xml_error(code, message, "Receiver" if status >= 500 else "Sender")
        return AWSResponse(request.url, status, HeadersDict({"Content-Type": "text/xml"}), _RawBody(body))

    sts.client(region=REGION, options=NO_RETRIES).meta.events.register("before-send.sts", before_send)

    with pytest.raises(kind) as raised:
        _assume()

    assert (raised.value.reason, raised.value.code, raised.value.platform_fault) == (reason, code, platform_fault)
    body = requests[0].body
    assert f"ExternalId={EXTERNAL_ID}" in (body.decode() if isinstance(body, bytes) else body)


def test_it_retries_throttling_before_giving_up() -> None:
    requests: list = []

    def before_send(request, **_kwargs):
        requests.append(request)
        return AWSResponse(request.url, 400, HeadersDict({}), _RawBody(_sts_xml_error("Throttling", "Rate exceeded")))

    sts.client(region=REGION).meta.events.register("before-send.sts", before_send)

    with pytest.raises(StsTransientError):
        sts.assume_role(role_arn=ROLE_ARN, external_id=EXTERNAL_ID, session_name="s1", region=REGION)

    assert len(requests) == sts.MAX_ATTEMPTS


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="https://sts"), Reason.TIMEOUT),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="https://sts"), Reason.NETWORK),
        (botocore.exceptions.NoCredentialsError(), Reason.PLATFORM_CREDENTIALS),
    ],
)
def test_it_classifies_network_errors_and_missing_platform_credentials_as_transient(error, reason) -> None:
    def before_send(request, **_kwargs):
        raise error

    sts.client(region=REGION, options=NO_RETRIES).meta.events.register("before-send.sts", before_send)

    with pytest.raises(StsTransientError) as raised:
        _assume()

    assert raised.value.reason == reason


# ---------------------------------------------------------------------------
# RoleSessions: refresh and single-flight with a fake clock
# ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class FakeAssume:
    """Counts AssumeRole calls; each returns new credentials valid for an hour of the fake clock."""

    def __init__(self, clock: FakeClock, *, delay: float = 0.0) -> None:
        self.clock = clock
        self.calls: list[dict] = []
        self.delay = delay
        self.error: Exception | None = None
        self._lock = threading.Lock()

    def __call__(self, **kwargs) -> TemporaryCredentials:
        with self._lock:
            self.calls.append(kwargs)
            number = len(self.calls)
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return TemporaryCredentials(
            access_key_id=f"ASIAFAKE{number:012d}",
            secret_access_key=f"secret-{number}",
            session_token=f"token-{number}",
            expiration=self.clock.now + timedelta(seconds=kwargs["duration_seconds"]),
        )


def _credentials(sessions: sts.RoleSessions, role_arn: str = ROLE_ARN, external_id: str = EXTERNAL_ID):
    return sessions.credentials(role_arn=role_arn, external_id=external_id, session_name="portal-env-abc", region=REGION)


def test_it_assumes_the_role_once_and_reuses_the_credentials_until_the_refresh_window() -> None:
    clock = FakeClock()
    assume = FakeAssume(clock)
    sessions = sts.RoleSessions(time_fetcher=clock, assume=assume)

    first = _credentials(sessions)
    clock.advance(minutes=44)
    again = _credentials(sessions)

    assert len(assume.calls) == 1
    assert again == first
    assert (first.session_token, first.version) == ("token-1", "sts")
    assert assume.calls[0] | {} == {
        "role_arn": ROLE_ARN, "external_id": EXTERNAL_ID, "session_name": "portal-env-abc", "region": REGION,
        "duration_seconds": 3600, "endpoint_url": None, "options": sts.DEFAULT_OPTIONS,
    }
    assert sessions.expiration(role_arn=ROLE_ARN, external_id=EXTERNAL_ID) == datetime(
        2026, 12, 1, 13, 0, tzinfo=timezone.utc
    )


def test_it_refreshes_before_the_credentials_expire() -> None:
    clock = FakeClock()
    assume = FakeAssume(clock)
    sessions = sts.RoleSessions(time_fetcher=clock, assume=assume)
    _credentials(sessions)

    clock.advance(minutes=46)  # inside botocore's 15-minute advisory window
    refreshed = _credentials(sessions)

    assert len(assume.calls) == 2
    assert refreshed.session_token == "token-2"


def test_it_keeps_the_current_credentials_when_an_advisory_refresh_fails() -> None:
    clock = FakeClock()
    assume = FakeAssume(clock)
    sessions = sts.RoleSessions(time_fetcher=clock, assume=assume)
    _credentials(sessions)
    assume.error = sts.classify(
        botocore.exceptions.ClientError({"Error": {"Code": "Throttling"}}, "AssumeRole"), operation="AssumeRole"
    )

    clock.advance(minutes=46)
    still = _credentials(sessions)

    assert len(assume.calls) == 2
    assert still.session_token == "token-1"


def test_it_raises_the_sts_error_when_a_mandatory_refresh_fails_and_recovers_later() -> None:
    """GIVEN credentials about to expire WHEN the customer removed the trust (AccessDenied)
    THEN the caller gets the StsPermanentError; once trust is back, the next call assumes again."""
    clock = FakeClock()
    assume = FakeAssume(clock)
    sessions = sts.RoleSessions(time_fetcher=clock, assume=assume)
    _credentials(sessions)
    assume.error = sts.classify(
        botocore.exceptions.ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
                                        "AssumeRole"),
        operation="AssumeRole",
    )

    clock.advance(minutes=55)  # inside the 10-minute mandatory window
    with pytest.raises(StsPermanentError) as raised:
        _credentials(sessions)
    assume.error = None
    restored = _credentials(sessions)

    assert raised.value.reason == Reason.ACCESS_DENIED
    assert restored.session_token == "token-3"


def test_it_assumes_the_role_once_when_threads_ask_at_once() -> None:
    clock = FakeClock()
    assume = FakeAssume(clock, delay=0.2)
    sessions = sts.RoleSessions(time_fetcher=clock, assume=assume)
    results: list = []

    threads = [threading.Thread(target=lambda: results.append(_credentials(sessions))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(assume.calls) == 1
    assert {r.session_token for r in results} == {"token-1"}
    assert len(results) == 8


def test_it_refreshes_once_when_threads_ask_at_once_in_the_mandatory_window() -> None:
    clock = FakeClock()
    assume = FakeAssume(clock)
    sessions = sts.RoleSessions(time_fetcher=clock, assume=assume)
    _credentials(sessions)
    assume.delay = 0.2
    clock.advance(minutes=55)
    results: list = []

    threads = [threading.Thread(target=lambda: results.append(_credentials(sessions))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(assume.calls) == 2
    assert {r.session_token for r in results} == {"token-2"}


def test_it_keeps_one_session_per_role_arn_and_external_id() -> None:
    clock = FakeClock()
    assume = FakeAssume(clock)
    sessions = sts.RoleSessions(time_fetcher=clock, assume=assume)

    a = _credentials(sessions)
    b = _credentials(sessions, external_id="portal-ext-other")
    c = _credentials(sessions, role_arn=f"arn:aws:iam::{ACCOUNT}:role/other")
    sessions.forget(role_arn=ROLE_ARN, external_id=EXTERNAL_ID)
    d = _credentials(sessions)

    assert [x.session_token for x in (a, b, c, d)] == ["token-1", "token-2", "token-3", "token-4"]
    assert len(sessions) == 3


def test_it_forgets_the_credentials_of_a_role_no_longer_used_once_they_expire() -> None:
    """GIVEN credentials held for a role this process no longer asks for (its key version
    was pointed at another role by another process) WHEN they expire THEN the next lookup
    of any role drops them."""
    clock = FakeClock()
    assume = FakeAssume(clock)
    sessions = sts.RoleSessions(time_fetcher=clock, assume=assume)
    _credentials(sessions, external_id="old-role")
    clock.advance(minutes=30)
    _credentials(sessions)
    assert len(sessions) == 2

    clock.advance(minutes=31)
    _credentials(sessions)

    assert sessions.expiration(role_arn=ROLE_ARN, external_id="old-role") is None
    assert len(sessions) == 1


def test_it_evicts_the_least_recently_used_session() -> None:
    clock = FakeClock()
    assume = FakeAssume(clock)
    sessions = sts.RoleSessions(time_fetcher=clock, assume=assume, max_entries=2)

    for external_id in ("e1", "e2", "e3"):
        _credentials(sessions, external_id=external_id)

    assert len(sessions) == 2
    assert sessions.expiration(role_arn=ROLE_ARN, external_id="e1") is None
