""""Validate again" queues one validation of a version at a time: a second request while the
first is queued or running is refused with a clear message (no second KMS Decrypt, no second
audit entry). Before: six parallel posts ran six validations."""

from __future__ import annotations

import pytest
from django.db import connection
from django.urls import reverse

from keys import queue
from keys.models import AuditEvent, KeyRegistration, ValidationRun
from keys.services.registrations import registration_create
from keys.services.validation import ValidationRequestRefused, registration_request_validation
from tests.support import at_once

Status = KeyRegistration.Status
ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture
def queued(monkeypatch) -> list[tuple[int, str]]:
    """Every validation job queued (to a worker that has not taken it yet)."""
    jobs: list[tuple[int, str]] = []
    monkeypatch.setattr(queue, "enqueue_validation", lambda registration_id, trigger: jobs.append((registration_id, trigger)) or True)
    return jobs


@pytest.fixture
def failed(environment, alice, queued) -> KeyRegistration:
    registration = registration_create(
        environment=environment, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 40, encryption_context={},
        access_key_id="AKIAIOSFODNN7EXAMPLE", secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    )
    KeyRegistration.objects.filter(pk=registration.pk).update(status=Status.FAILED)
    registration.refresh_from_db()
    queued.clear()
    return registration


def _requested(registration) -> int:
    return AuditEvent.objects.filter(registration=registration, action=AuditEvent.Action.VALIDATION_RUN).count()


def test_it_refuses_a_second_validate_again_while_the_first_is_queued(
    client_for, alice, failed, queued, django_capture_on_commit_callbacks
):
    url = reverse("registration_validate", args=[failed.environment.public_id, failed.public_id])
    client = client_for(alice)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(url)
    with django_capture_on_commit_callbacks(execute=True):
        second = client.post(url, follow=True)

    assert f"A validation of version {failed.version} is already running" in second.content.decode()
    assert queued == [(failed.pk, "manual")]
    assert failed.validation_runs.count() == 1 and _requested(failed) == 1


def test_it_allows_validate_again_once_the_previous_run_ended(alice, failed, queued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first = registration_request_validation(registration=failed, actor=alice)
    ValidationRun.objects.filter(pk=first.pk).update(outcome=ValidationRun.Outcome.UNVERIFIED)

    with django_capture_on_commit_callbacks(execute=True):
        registration_request_validation(registration=failed, actor=alice)

    assert len(queued) == 2


@pytest.mark.django_db(transaction=True)
def test_it_queues_one_validation_for_six_parallel_requests_on_postgresql(alice, failed, queued):
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    def click() -> str:
        registration_request_validation(registration=KeyRegistration.objects.get(pk=failed.pk), actor=alice)
        return "queued"

    outcomes = at_once([click] * 6, refused=(ValidationRequestRefused,))

    assert outcomes.count("queued") == 1, outcomes
    assert all("is already running" in o for o in outcomes if o != "queued"), outcomes
    assert queued == [(failed.pk, "manual")]
    assert failed.validation_runs.count() == 1 and _requested(failed) == 1
