"""Role mode (issue 14) across models, settings, services, validation and the data plane.

moto plays the customer's AWS side: a role, a KMS key and an encrypted data key bound
to the environment by its encryption context. NOTE: moto's AssumeRole checks neither
the external ID nor the trust policy (any role ARN gets credentials), so the refusals
are covered with botocore's Stubber in test_sts.py and test_diagnosis_role.py.
"""

from __future__ import annotations

import json
import logging

import boto3
import botocore.exceptions
import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from moto import mock_aws

from environments.models import Environment
from environments.services import environment_create
from keys import cache, kms, parsers, sts
from keys import system_checks
from keys.services import lifecycle, records
from keys.models import KeyRegistration, ValidationRun
from keys.services.registrations import registration_create
from keys.services.validation import registration_validate
from tests.aws import isolate_aws_environment

REGION = "eu-west-1"
PLATFORM = "arn:aws:iam::999988887777:role/byok-platform"
Status = KeyRegistration.Status


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, settings) -> None:
    isolate_aws_environment(monkeypatch, REGION)
    settings.PLATFORM_AWS_PRINCIPAL_ARN = PLATFORM
    sts.clear_clients()
    kms.clear_clients()
    sts.role_sessions.clear()
    yield
    sts.role_sessions.clear()
    sts.clear_clients()
    kms.clear_clients()


# ---------------------------------------------------------------------------
# External ID
# ---------------------------------------------------------------------------


def test_it_issues_a_unique_stable_unguessable_external_id_per_environment(environment, environment_b, org_a, alice):
    third = environment_create(organization=org_a, name="staging", actor=alice)
    ids = [e.aws_external_id for e in (environment, environment_b, third)]

    environment.refresh_from_db()

    assert len(set(ids)) == 3
    assert environment.aws_external_id == ids[0]
    assert all(i.startswith("byok-") and len(i) >= 5 + 32 for i in ids)


def test_it_never_takes_the_external_id_from_a_form_post(client_for, alice, org_a):
    client = client_for(alice)

    client.post(
        reverse("environment_new"),
        {"organization": org_a.pk, "name": "posted", "aws_external_id": "attacker-chosen-id"},
    )

    environment = Environment.objects.get(name="posted")
    assert environment.aws_external_id != "attacker-chosen-id"
    assert not Environment._meta.get_field("aws_external_id").editable


# ---------------------------------------------------------------------------
# Settings and system check
# ---------------------------------------------------------------------------


def test_it_explains_what_is_missing_when_role_mode_has_no_platform_credentials(monkeypatch, settings):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)

    errors = system_checks.check_role_mode()

    assert [e.id for e in errors] == ["keys.E004"]
    assert "PLATFORM_AWS_PRINCIPAL_ARN is set" in errors[0].msg
    assert "task role" in errors[0].hint and "Never in the database" in errors[0].hint


def test_it_is_quiet_when_role_mode_is_off_or_has_credentials(settings):
    assert system_checks.check_role_mode() == []  # the fake AWS_ACCESS_KEY_ID of isolate_aws_environment
    settings.PLATFORM_AWS_PRINCIPAL_ARN = ""
    assert system_checks.check_role_mode() == []


def test_it_refuses_a_platform_principal_that_is_not_an_iam_arn(settings):
    settings.PLATFORM_AWS_PRINCIPAL_ARN = "arn:aws:sts::999988887777:assumed-role/x/y"

    assert [e.id for e in system_checks.check_role_mode()] == ["keys.E005"]


# ---------------------------------------------------------------------------
# Generated policies and commands
# ---------------------------------------------------------------------------


def test_it_binds_the_permissions_policy_and_the_command_to_the_environment(environment):
    context = parsers.environment_encryption_context(environment.public_id)
    arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

    policy = json.loads(parsers.iam_policy_json(kms_key_arn=arn, encryption_context=context))
    command = parsers.cli_command(kms_key_arn=arn, region=None, encryption_context=context)

    describe, decrypt = policy["Statement"]
    assert describe == {"Sid": "DescribeTheKey", "Effect": "Allow", "Action": "kms:DescribeKey", "Resource": arn}
    assert decrypt["Action"] == "kms:Decrypt" and decrypt["Resource"] == arn
    assert decrypt["Condition"] == {
        "StringEquals": {"kms:EncryptionContext:portal:environment": str(environment.public_id)}
    }
    # The key has a colon, which the CLI shorthand does not take: the command passes JSON.
    assert f"""--encryption-context '{{"portal:environment":"{environment.public_id}"}}'""" in command


def test_it_writes_the_trust_policy_with_the_platform_principal_and_external_id(environment):
    trust = json.loads(
        parsers.trust_policy_json(platform_principal_arn=PLATFORM, external_id=environment.aws_external_id)
    )
    commands = parsers.role_cli_commands(role_arn="arn:aws:iam::111122223333:role/team/byok")

    (statement,) = trust["Statement"]
    assert statement["Principal"] == {"AWS": PLATFORM}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": environment.aws_external_id}}
    assert commands == [
        "aws iam create-role --role-name byok --path /team/ --assume-role-policy-document file://trust-policy.json",
        "aws iam put-role-policy --role-name byok --policy-name byok-portal-kms "
        "--policy-document file://permissions-policy.json",
    ]


# ---------------------------------------------------------------------------
# Validation and data plane with moto
# ---------------------------------------------------------------------------


def _role_customer(environment, *, bind: bool = True):
    iam = boto3.client("iam", region_name="us-east-1")
    trust = parsers.trust_policy_json(platform_principal_arn=PLATFORM, external_id=environment.aws_external_id)
    role_arn = iam.create_role(RoleName="byok-portal-access", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    admin = boto3.client("kms", region_name=REGION)
    key = admin.create_key()["KeyMetadata"]
    context = parsers.environment_encryption_context(environment.public_id) if bind else {}
    params = {"KeyId": key["Arn"], "KeySpec": "AES_256"} | ({"EncryptionContext": context} if context else {})
    blob = admin.generate_data_key_without_plaintext(**params)["CiphertextBlob"]
    return role_arn, key, blob, context


def _register(environment, actor, role_arn, key, blob, context) -> KeyRegistration:
    return registration_create(
        environment=environment, actor=actor, kms_key_arn=key["Arn"], region=REGION,
        account_id=key["AWSAccountId"], encrypted_data_key=blob, encryption_context=context, role_arn=role_arn,
    )


@pytest.mark.parametrize("bind", [True, False], ids=["bound-to-environment", "plain-blob"])
def test_it_validates_a_role_registration_with_assume_role_then_kms(environment, alice, bind):
    with mock_aws():
        role_arn, key, blob, context = _role_customer(environment, bind=bind)
        registration = _register(environment, alice, role_arn, key, blob, context)

        run = registration_validate(registration_id=registration.pk, trigger="registration")

    registration.refresh_from_db()
    names = [c["name"] for c in run.checks]
    assert registration.status == Status.VALID, run.checks
    assert (registration.access_mode, registration.role_arn) == ("role", role_arn)
    assert (registration.sealed_access_key_id, registration.sealed_secret_access_key) == ("", "")
    assert names[:2] == ["registration.region", "sts.assume_role"]
    assert run.outcome == ValidationRun.Outcome.PASSED


def test_it_decrypts_with_the_registered_context_in_role_mode_and_keeps_credentials_in_memory(
    environment, alice, caplog
):
    """GIVEN a valid role registration WHEN the data plane loads its data key THEN it assumes
    the role once, decrypts with the environment's context, and the temporary credentials
    appear nowhere in the database or the logs (canary)."""
    caplog.set_level(logging.DEBUG)
    with mock_aws():
        role_arn, key, blob, context = _role_customer(environment)
        registration = _register(environment, alice, role_arn, key, blob, context)
        registration_validate(registration_id=registration.pk, trigger="registration")
        registration.refresh_from_db()

        first = records.load_data_key(registration)
        second = records.load_data_key(registration)
        held = sts.role_sessions.credentials(
            role_arn=role_arn, external_id=environment.aws_external_id, session_name="x", region=REGION
        )

    assert len(first) == 32 and first == second
    assert len(sts.role_sessions) == 1
    canaries = [held.secret_access_key, held.session_token, held.access_key_id]
    dump = _database_text()
    for canary in canaries:
        assert canary and canary not in dump
        assert canary not in caplog.text


def test_it_answers_key_unavailable_with_the_reason_when_assume_role_is_refused(environment, alice, monkeypatch):
    with mock_aws():
        role_arn, key, blob, context = _role_customer(environment)
        registration = _register(environment, alice, role_arn, key, blob, context)
    refused = sts.classify(
        botocore.exceptions.ClientError(
            {"Error": {"Code": "AccessDenied", "Message": "not authorized to perform: sts:AssumeRole"},
             "ResponseMetadata": {"HTTPStatusCode": 403}}, "AssumeRole"),
        operation="AssumeRole",
    )

    def refuse(**_kwargs):
        raise refused

    monkeypatch.setattr(sts.role_sessions, "_assume", refuse)
    with pytest.raises(kms.KmsPermanentError) as raised:
        records.load_data_key(registration)

    assert raised.value.reason == "role_access_denied"


def test_it_adds_the_session_lifetime_to_the_revocation_bound_in_role_mode(environment, alice, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False  # a worker and beat: the re-check is the periodic re-validation
    settings.DATA_KEY_CACHE_TTL_SECONDS = 300
    settings.REVALIDATION_INTERVAL_SECONDS = 900
    settings.STS_SESSION_DURATION_SECONDS = 3600
    assert lifecycle.environment_revocation_bound(environment).seconds == 1200
    with mock_aws():
        role_arn, key, blob, context = _role_customer(environment)
        registration = _register(environment, alice, role_arn, key, blob, context)
    KeyRegistration.objects.filter(pk=registration.pk).update(status=Status.DECRYPT_ONLY)

    assert lifecycle.environment_revocation_bound(environment).seconds == 1200 + 3600


def _database_text() -> str:
    """Every text and JSON value of every table of this test database, as one string."""
    out = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            for row in cursor.fetchall():
                out.extend(str(v) for v in row if v is not None)
    return "\n".join(out)
