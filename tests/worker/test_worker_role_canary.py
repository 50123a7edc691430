"""The role-mode canary through a real Celery worker (issue 14; docs/architecture.md,
"Invariants", 1): the worker assumes the customer's role (moto's threaded server, in this
process, whose AssumeRole returns the canary credentials of ``tests/keys/test_role_canary.py``)
and validates with them; then the broker's Redis database, what was published, the worker's
log and mails, and every table hold none of them. The in-process searches (pages, admin,
audit, error reports, the app's Redis) are in ``tests/keys/test_role_canary.py``."""

from __future__ import annotations

import pytest

from keys import parsers
from keys.models import KeyRegistration, ValidationRun
from keys.services.registrations import registration_create
from tests.keys.moto_customer import admin_client
from tests.keys.test_registration_canary import dump_database
from tests.keys.test_role_canary import (  # noqa: F401  (assume_role_calls: a fixture)
    PLATFORM,
    REGION,
    _redis_text,
    assert_no_canary,
    assume_role_calls,
)
from tests.worker.waits import wait_status

pytestmark = [pytest.mark.worker]


def test_a_worker_validating_a_role_leaves_its_temporary_credentials_nowhere(
    start_worker, moto_server, queued_to, published, alice, environment, assume_role_calls
):
    """GIVEN a worker whose platform principal may assume roles (its own credentials from its
    environment) and the customer's role, key and bound data key in the emulator
    WHEN a role-mode version is registered and the worker validates it
    THEN it is valid (the canary credentials were used for DescribeKey and Decrypt), and
    the broker, the published message, the worker's output and mails, and the database
    hold no trace of them."""
    worker = start_worker(extra_env={
        "PLATFORM_AWS_PRINCIPAL_ARN": PLATFORM,
        "AWS_STS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    })
    iam = admin_client("iam", "us-east-1", moto_server)
    trust = parsers.trust_policy_json(platform_principal_arn=PLATFORM, external_id=environment.aws_external_id)
    role_arn = iam.create_role(RoleName="byok-canary", AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    kms = admin_client("kms", REGION, moto_server)
    key = kms.create_key()["KeyMetadata"]
    context = parsers.environment_encryption_context(environment.public_id)
    blob = kms.generate_data_key_without_plaintext(KeyId=key["Arn"], KeySpec="AES_256", EncryptionContext=context)

    registration = registration_create(
        environment=environment, actor=alice, kms_key_arn=key["Arn"], region=REGION, account_id=key["AWSAccountId"],
        encrypted_data_key=blob["CiphertextBlob"], encryption_context=context, role_arn=role_arn,
    )

    wait_status(registration.pk, KeyRegistration.Status.VALID, worker)
    assert assume_role_calls == [role_arn]  # the worker's AssumeRole, answered with the canaries
    assert registration.validation_runs.get().outcome == ValidationRun.Outcome.PASSED
    assert published == [("keys.tasks.validate_registration", (registration.pk, "registration"))]
    broker_text, keys = _redis_text(queued_to)
    assert keys >= 1
    assert_no_canary(broker_text, "the broker's Redis database")
    assert_no_canary(worker.output(), "the worker's output")
    assert "validate_registration" in worker.output()  # the output searched is the worker's log
    assert_no_canary("\n".join(worker.mails()), "the worker's mails")
    assert_no_canary(dump_database(), "the database")
