"""A validation run inside the web request (no broker: Celery's eager mode, the embedded
default of `make run`) against a KMS endpoint that accepts connections and never answers.

Before: "Validate again" held the request about 208 s (five attempts, each DescribeKey and
Decrypt with three botocore attempts of up to 10 s), and the remedy promised a retry
"within about a minute" that nothing would make. Now: one attempt with short timeouts and
no botocore retry (``keys.services.validation.INLINE_KMS_OPTIONS``), and a remedy that is
true without a worker. The hung endpoint is a plain socket server in this test."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from django.urls import reverse

from keys import kms
from keys.models import KeyRegistration, ValidationRun
from keys.services.registrations import registration_create
from keys.services.validation import INLINE_KMS_OPTIONS
from tests.aws import isolate_aws_environment
from tests.support import hung_endpoint

Status = KeyRegistration.Status
ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# Far above the inline budget (two calls of at most connect + read seconds each), far
# below the 208 s it took before: the bound only proves the request is not held for minutes.
GENEROUS_BOUND_SECONDS = 60


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_aws_environment(monkeypatch, "eu-west-1")
    kms.clear_clients()
    yield
    kms.clear_clients()


@pytest.fixture
def hung_kms(settings):
    """A KMS endpoint that accepts every connection and never answers; the connections it
    accepted, one per HTTP attempt botocore made."""
    with hung_endpoint() as (url, accepted):
        settings.AWS_KMS_ENDPOINT_URL = url
        yield accepted



@pytest.fixture
def failed(environment, alice) -> KeyRegistration:
    """A BYOK version whose last validation failed: the admin's "Validate again" case."""
    registration = registration_create(
        environment=environment, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 40, encryption_context={},
        access_key_id="AKIAIOSFODNN7EXAMPLE", secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    )
    KeyRegistration.objects.filter(pk=registration.pk).update(status=Status.FAILED)
    registration.refresh_from_db()
    return registration


def test_it_validates_again_in_one_short_attempt_when_kms_never_answers_without_a_worker(
    settings, client_for, alice, failed, hung_kms, built_clients, django_capture_on_commit_callbacks
):
    """GIVEN no broker (the job runs in the web request) and a KMS that never answers
    WHEN the owner clicks "Validate again"
    THEN the job makes one attempt with the short inline options, one connection for
    DescribeKey and one for Decrypt (no retry of either), and ends "could not verify"
    with the version back to pending validation, long before minutes pass."""
    assert settings.CELERY_TASK_ALWAYS_EAGER
    url = reverse("registration_validate", args=[failed.environment.public_id, failed.public_id])

    started = time.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(url)
    elapsed = time.monotonic() - started

    assert response.status_code == 302
    assert built_clients and set(built_clients) == {("kms", INLINE_KMS_OPTIONS)}
    assert INLINE_KMS_OPTIONS.max_attempts == 1
    assert len(hung_kms) == 2  # DescribeKey, Decrypt; the dry run follows only a Decrypt that answered
    assert elapsed < GENEROUS_BOUND_SECONDS
    failed.refresh_from_db()
    assert failed.status == Status.PENDING_VALIDATION
    run = failed.validation_runs.get()
    assert (run.outcome, run.failure_reason) == (ValidationRun.Outcome.UNVERIFIED, kms.Reason.TIMEOUT)


def test_it_tells_the_admin_to_validate_again_and_promises_no_retry_without_a_worker(
    settings, client_for, alice, failed, hung_kms, django_capture_on_commit_callbacks
):
    """The remedy shown on the page is true for the mode: without a worker nothing tries
    again by itself, so it names "Validate again" and no minute."""
    url = reverse("registration_validate", args=[failed.environment.public_id, failed.public_id])
    with django_capture_on_commit_callbacks(execute=True):
        client_for(alice).post(url)

    run = failed.validation_runs.get()
    remedies = {check["remedy"] for check in run.checks if check["status"] == "fail"}
    assert remedies, run.checks
    for remedy in remedies:
        assert "“Validate again”" in remedy and "does not try again by itself" in remedy
        assert "within about a minute" not in remedy and "re-validates" not in remedy
    page = client_for(alice).get(reverse("environment_detail", args=[failed.environment.public_id]))
    text = page.content.decode()
    assert "does not try again by itself" in text and "within about a minute" not in text
    # The audit trail promises no "next try" either.
    assert "Validation could not reach KMS: version 2 stays pending until it is validated again" in text
