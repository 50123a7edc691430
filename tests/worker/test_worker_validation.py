"""End to end through a real Celery worker: the web process queues, the worker validates.

Processes (started and always stopped by fixtures, every wait bounded):
* ``moto_server`` on a free loopback port: the customer's AWS (KMS and IAM);
* ``celery -A portal worker --pool solo`` (with ``--beat`` for periodic re-validation),
  on a Redis database of its own, against the PostgreSQL *test* database of this run.

The test process sends its tasks to the same Redis database instead of running them
eagerly, and commits for real (``transactional_db``) so that ``on_commit`` fires and the
worker sees the rows. The product design asks for a real Celery worker in the end-to-end tests.
"""

from __future__ import annotations

import base64
import time
from datetime import timedelta

import pytest
import redis
from django.db import transaction
from django.urls import reverse

from keys.models import AuditEvent, KeyRegistration, ValidationRun
from keys.services.validation import registration_activate, validations_requeue
from tests.keys.moto_customer import Customer, register
from tests.support import free_port, wait_for
from tests.worker.waits import wait_status

pytestmark = [pytest.mark.worker]

Status = KeyRegistration.Status
QUEUE = "celery"  # the Celery queue the web process sends to


# Tests


def test_it_validates_a_registration_in_the_worker_after_the_web_request_commits(
    start_worker, customer, client_for, alice, environment, published
):
    """GIVEN a worker and the customer's AWS side (IAM enforced)
    WHEN alice registers the five items on the registration page
    THEN the job is queued when the request's transaction commits, and the worker takes the
    registration from pending validation to valid, with a run whose checks all pass."""
    worker = start_worker()

    response = client_for(alice).post(
        reverse("registration_new", args=[environment.public_id]),
        {
            "encrypted_data_key": base64.b64encode(customer.encrypted_data_key).decode(),
            "access_key_id": customer.access_key_id,
            "secret_access_key": customer.secret_access_key,
            "kms_key_arn": customer.kms_key_arn,
            "region": customer.region,
            "encryption_context": "",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    registration = environment.key_registrations.get(version=2)
    wait_status(registration.pk, Status.VALID, worker)
    run = registration.validation_runs.get()
    assert (run.trigger, run.outcome) == ("registration", ValidationRun.Outcome.PASSED)
    statuses = {c["name"]: c["status"] for c in run.checks}
    # moto's Decrypt does not report the encryption algorithm: nothing to check there.
    assert statuses.pop("decrypt.algorithm") == "skip"
    assert set(statuses.values()) == {"pass"}, run.checks
    assert AuditEvent.objects.filter(registration=registration, actor_label="job: validation").count() >= 3
    assert published == [("keys.tasks.validate_registration", (registration.pk, "registration"))]
    assert customer.secret_access_key not in worker.output()


def test_it_queues_nothing_for_a_registration_that_was_rolled_back(
    start_worker, customer, alice, environment, queued_to, published
):
    """GIVEN a worker
    WHEN a registration is saved inside a transaction that then rolls back
    THEN no job reaches the broker or the worker; a committed one afterwards does (the
    control that shows the checks above would have seen a job)."""
    worker = start_worker()
    broker = redis.Redis.from_url(queued_to)

    with pytest.raises(RuntimeError), transaction.atomic():
        register(environment, alice, customer)
        raise RuntimeError("the web request failed after saving")

    assert published == []
    assert broker.llen(QUEUE) == 0
    time.sleep(3)
    assert not ValidationRun.objects.exists()
    assert not environment.key_registrations.filter(kind="byok").exists()

    registration = register(environment, alice, customer)
    assert published == [("keys.tasks.validate_registration", (registration.pk, "registration"))]
    wait_status(registration.pk, Status.VALID, worker)


def _remove_policy(customer: Customer) -> None:
    customer.revoke()


def _disable_key(customer: Customer) -> None:
    customer.kms().disable_key(KeyId=customer.key_id)


def _schedule_deletion(customer: Customer) -> None:
    customer.kms().schedule_key_deletion(KeyId=customer.key_id, PendingWindowInDays=7)


def _cancel_deletion(customer: Customer) -> None:
    customer.kms().cancel_key_deletion(KeyId=customer.key_id)  # leaves the key disabled
    customer.kms().enable_key(KeyId=customer.key_id)


# How the customer revokes and restores access, what the platform then records, and the
# check that catches it. moto does not refuse Decrypt with a disabled or pending-deletion
# key, but its DescribeKey reports the key state, which the validation checks too; with
# its IAM simulation on, it denies both calls once the user's policy is gone.
REVOCATIONS = {
    "policy removed": (_remove_policy, Customer.allow, "access_denied", "decrypt.call", "AccessDenied"),
    "key disabled": (_disable_key, lambda c: c.kms().enable_key(KeyId=c.key_id), "disabled", "describe_key.state", None),
    "deletion scheduled": (_schedule_deletion, _cancel_deletion, "pending_deletion", "describe_key.state", None),
}


@pytest.mark.parametrize("revocation", REVOCATIONS)
def test_it_marks_an_active_key_inaccessible_when_access_is_revoked_and_restores_it(
    revocation, start_worker, customer, alice, carol, environment
):
    """GIVEN an active BYOK version, a worker running Celery beat every 2 s, and moto's IAM
    simulation on
    WHEN the customer revokes access (removes the IAM user's policy, disables the key, or
    schedules its deletion)
    THEN periodic re-validation marks the version inaccessible, with an audit event and an
    email to the owners and admins; once access is restored, it is active again."""
    revoke, restore, reason, check, aws_error_code = REVOCATIONS[revocation]
    worker = start_worker(beat_every=2)
    registration = register(environment, alice, customer)
    wait_status(registration.pk, Status.VALID, worker)
    registration_activate(registration=KeyRegistration.objects.get(pk=registration.pk), actor=alice)
    generation = KeyRegistration.objects.get(pk=registration.pk).generation

    revoke(customer)

    wait_status(registration.pk, Status.INACCESSIBLE, worker)
    revoked = KeyRegistration.objects.get(pk=registration.pk)
    assert revoked.inaccessible_reason == reason
    assert revoked.restore_status == Status.ACTIVE
    assert revoked.generation > generation  # cached data keys evicted everywhere
    event = AuditEvent.objects.filter(registration=registration, after__status="inaccessible").get()
    assert event.before == {"status": "active"} and event.actor_label == "job: periodic re-validation"
    run = registration.validation_runs.filter(trigger="periodic", outcome="failed").first()
    failed = {c["name"]: c for c in run.checks}[check]
    assert (failed["status"], failed["aws_error_code"]) == ("fail", aws_error_code)
    assert failed["remedy"]
    mails = wait_for(worker.whole_mails, timeout=30, what="the email to owners and admins")
    assert "is inaccessible" in mails[0]
    assert "alice@example.org" in mails[0] and "carol@example.org" in mails[0]

    restore(customer)

    wait_status(registration.pk, Status.ACTIVE, worker)
    restored = KeyRegistration.objects.get(pk=registration.pk)
    assert (restored.inaccessible_reason, restored.restore_status) == ("", "")
    # Both flips came from Celery beat's periodic runs, not from anything this test queued.
    assert registration.validation_runs.filter(trigger="periodic").count() >= 2


def test_a_registration_made_while_the_broker_is_down_is_validated_by_the_sweep_once_it_is_back(
    start_worker, customer, client_for, alice, environment, queued_to, published
):
    """GIVEN the web process's broker unreachable for real (a Redis URL nothing listens on)
    WHEN alice registers the five items THEN the page answers (no 500) saying the validation
    could not be queued, and the version's one run is "not queued"; WHEN the broker is back
    and the validation sweep runs (as beat would) THEN the worker takes the version to valid."""
    from portal.celery import app

    worker = start_worker()
    app.conf.update(broker_url=f"redis://127.0.0.1:{free_port()}/0")
    _forget_producer_pool(app)
    try:
        response = client_for(alice).post(
            reverse("registration_new", args=[environment.public_id]),
            {
                "encrypted_data_key": base64.b64encode(customer.encrypted_data_key).decode(),
                "access_key_id": customer.access_key_id,
                "secret_access_key": customer.secret_access_key,
                "kms_key_arn": customer.kms_key_arn,
                "region": customer.region,
                "encryption_context": "",
            },
            follow=True,
        )
    finally:
        app.conf.update(broker_url=queued_to)
        _forget_producer_pool(app)

    assert response.status_code == 200
    assert "could not be queued; it will be retried automatically within" in response.content.decode()
    registration = environment.key_registrations.get(version=2)
    assert registration.status == Status.PENDING_VALIDATION
    assert list(registration.validation_runs.values_list("outcome", flat=True)) == [ValidationRun.Outcome.NOT_QUEUED]
    assert published == []

    assert validations_requeue(stuck_after=timedelta(minutes=10)) == 1

    wait_status(registration.pk, Status.VALID, worker)
    run = registration.validation_runs.get()
    assert (run.trigger, run.outcome) == ("registration", ValidationRun.Outcome.PASSED)
    assert published == [("keys.tasks.validate_registration", (registration.pk, "registration"))]


def _forget_producer_pool(app) -> None:
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
