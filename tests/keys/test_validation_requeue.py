"""A broker outage leaves no stuck state (issue 13, item 11): a validation whose job could not be
queued is marked ``not_queued`` and the page says so; the validation sweep
(``keys.services.validation.validations_requeue``, beat task ``keys.tasks.requeue_validations``)
queues it again once the broker is back, picks up versions left pending validation, and is
idempotent.

The broker is taken away by making the Celery send of ``validate_registration`` raise kombu's
``OperationalError``, as an unreachable Redis does; everything else is real (moto plays KMS)."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta
from unittest import mock

import pytest
from django.urls import reverse
from kombu.exceptions import OperationalError
from moto import mock_aws

from keys import kms, tasks
from keys.clock import now
from keys.models import KeyRegistration, ValidationRun
from keys.services.validation import validations_requeue
from tests.aws import isolate_aws_environment
from tests.keys.moto_customer import REGION, register, set_up_customer

Status = KeyRegistration.Status
Outcome = ValidationRun.Outcome
PROMISE = "could not be queued; it will be retried automatically within 5 minutes."
STUCK_AFTER = timedelta(minutes=10)


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, settings):
    isolate_aws_environment(monkeypatch, REGION)
    settings.VALIDATION_REQUEUE_INTERVAL_SECONDS = 300
    settings.VALIDATION_REQUEUE_AFTER_SECONDS = int(STUCK_AFTER.total_seconds())
    kms.clear_clients()
    yield
    kms.clear_clients()


@pytest.fixture
def customer():
    with mock_aws():
        yield set_up_customer()


@contextmanager
def broker_down():
    error = OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    with mock.patch.object(tasks.validate_registration, "delay", side_effect=error) as send:
        yield send


@contextmanager
def broker_recording():
    """A broker that takes every message and runs nothing: what was queued, in order."""
    with mock.patch.object(tasks.validate_registration, "delay") as send:
        yield send


def validate_again_url(registration) -> str:
    return reverse("registration_validate", args=[registration.environment.public_id, registration.public_id])


def ago(registration_or_run, *, minutes: int, field: str) -> None:
    type(registration_or_run).objects.filter(pk=registration_or_run.pk).update(**{field: now() - timedelta(minutes=minutes)})


def byok_row(environment, version: int, status: str = Status.PENDING_VALIDATION) -> KeyRegistration:
    return KeyRegistration.objects.create(environment=environment, version=version, kind="byok", status=status)


@pytest.mark.django_db(transaction=True)
def test_a_validation_that_could_not_be_queued_is_marked_so_and_the_sweep_validates_it_once_the_broker_is_back(
    client_for, environment, alice, customer
):
    """GIVEN the broker is unreachable WHEN a key is registered and "Validate again" is pressed
    THEN its one run is "not queued", the pages say the validation will be retried within 5
    minutes (not that it started); WHEN the broker is back and the sweep runs THEN the key
    version ends valid, and a second sweep queues nothing."""
    client = client_for(alice)
    with broker_down() as send:
        registration = register(environment, alice, customer)
        run = registration.validation_runs.get()
        assert (run.outcome, run.trigger) == (Outcome.NOT_QUEUED, "registration")

        response = client.post(validate_again_url(registration), follow=True)

        page = response.content.decode()
        assert f"Validation of key version {registration.version} {PROMISE}" in page
        assert "has started" not in page
        assert "data-not-queued" in page
        assert send.call_count == 2
        assert list(registration.validation_runs.values_list("outcome", flat=True)) == [Outcome.NOT_QUEUED]
        # The status endpoint the page polls says the same.
        status = client.get(
            reverse("registration_status", args=[environment.public_id, registration.public_id])
        ).json()
        assert status["busy"] is False and PROMISE in status["status_html"]

    assert tasks.requeue_validations() == 1

    registration.refresh_from_db()
    assert registration.status == Status.VALID
    assert list(registration.validation_runs.values_list("outcome", flat=True)) == [Outcome.PASSED]
    assert tasks.requeue_validations() == 0


@pytest.mark.django_db(transaction=True)
def test_a_sweep_while_the_broker_is_still_down_leaves_the_run_not_queued_for_the_next(
    environment, alice, customer
):
    with broker_down():
        registration = register(environment, alice, customer)
        assert tasks.requeue_validations() == 1
        assert registration.validation_runs.get().outcome == Outcome.NOT_QUEUED

    assert tasks.requeue_validations() == 1
    registration.refresh_from_db()
    assert registration.status == Status.VALID


@pytest.mark.django_db(transaction=True)
def test_new_credentials_during_an_outage_are_not_said_to_be_validating(client_for, environment, alice, customer):
    registration = register(environment, alice, customer)
    registration.refresh_from_db()
    assert registration.status == Status.VALID
    with broker_down():
        response = client_for(alice).post(
            reverse("registration_edit", args=[environment.public_id, registration.public_id]),
            {
                "kms_key_arn": customer.kms_key_arn, "region": customer.region,
                "encryption_context": "", "encrypted_data_key": "",
                "access_key_id": "", "secret_access_key": "",
            },
            follow=True,
        )
    page = response.content.decode()
    assert f"Key version {registration.version} saved. Validation of key version {registration.version} {PROMISE}" in page


@pytest.mark.django_db
def test_the_sweep_picks_up_a_version_left_pending_validation_past_the_bound(environment, alice, customer):
    """GIVEN a version registered while the broker was down before runs said so (pending, no
    run; the ``db`` fixture's transaction never commits, so nothing was queued)
    WHEN it is older than the bound THEN the sweep validates it; a younger one waits."""
    registration = register(environment, alice, customer)
    assert not registration.validation_runs.exists()

    assert validations_requeue(stuck_after=STUCK_AFTER) == 0  # registered just now: its job may be on its way

    ago(registration, minutes=11, field="updated_at")
    assert validations_requeue(stuck_after=STUCK_AFTER) == 1

    registration.refresh_from_db()
    assert registration.status == Status.VALID
    run = registration.validation_runs.get()
    assert (run.outcome, run.trigger) == (Outcome.PASSED, "registration")


@pytest.mark.django_db
def test_running_the_sweep_twice_queues_each_due_validation_once(environment, alice):
    """GIVEN a run not queued, a run "running" whose job was lost 20 minutes ago, a version
    pending validation for 11 minutes with no run, a run queued a minute ago (not due) and a
    valid version (nothing to do) WHEN the sweep runs twice THEN the three due ones are
    queued once each, in the first sweep."""
    not_queued = byok_row(environment, 2)
    ValidationRun.objects.create(registration=not_queued, trigger="manual", outcome=Outcome.NOT_QUEUED)
    lost = byok_row(environment, 3, Status.VALIDATING)
    lost_run = ValidationRun.objects.create(registration=lost, trigger="registration", outcome=Outcome.RUNNING)
    ago(lost_run, minutes=20, field="started_at")
    pending = byok_row(environment, 4)
    ago(pending, minutes=11, field="updated_at")
    fresh = byok_row(environment, 5)
    ValidationRun.objects.create(registration=fresh, trigger="registration", outcome=Outcome.RUNNING, queued_at=now())
    ago(fresh, minutes=30, field="updated_at")
    valid = byok_row(environment, 6, Status.VALID)
    ago(valid, minutes=30, field="updated_at")

    with broker_recording() as send:
        first = validations_requeue(stuck_after=STUCK_AFTER)
        second = validations_requeue(stuck_after=STUCK_AFTER)

    assert (first, second) == (3, 0)
    assert sorted(c.args for c in send.call_args_list) == sorted(
        [(not_queued.pk, "manual"), (lost.pk, "registration"), (pending.pk, "registration")]
    )
    assert set(ValidationRun.objects.filter(registration__in=[not_queued, lost, pending]).values_list("outcome", flat=True)) == {
        Outcome.RUNNING
    }
    lost_run.refresh_from_db()
    assert lost_run.queued_at is not None and now() - lost_run.queued_at < timedelta(minutes=1)


@pytest.mark.django_db
def test_the_sweep_ends_a_run_that_has_nothing_left_to_validate(environment, alice):
    """A run not queued for a version validated meanwhile by another route, and an older
    duplicate of a due run: each ended "could not verify" (not_run), nothing queued."""
    valid = byok_row(environment, 2, Status.VALID)
    moot = ValidationRun.objects.create(registration=valid, trigger="registration", outcome=Outcome.NOT_QUEUED)
    pending = byok_row(environment, 3)
    older = ValidationRun.objects.create(registration=pending, trigger="registration", outcome=Outcome.NOT_QUEUED)
    ago(older, minutes=5, field="started_at")
    newer = ValidationRun.objects.create(registration=pending, trigger="manual", outcome=Outcome.NOT_QUEUED)

    with broker_recording() as send:
        assert validations_requeue(stuck_after=STUCK_AFTER) == 1

    assert [c.args for c in send.call_args_list] == [(pending.pk, "manual")]
    for run in (moot, older):
        run.refresh_from_db()
        assert (run.outcome, run.failure_reason) == (Outcome.UNVERIFIED, "not_run") and run.finished_at
    newer.refresh_from_db()
    assert newer.outcome == Outcome.RUNNING


def test_beat_runs_the_sweep_every_interval(settings):
    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "keys.tasks.requeue_validations")
    assert entry["task"] in tasks.requeue_validations.name


@pytest.mark.django_db(transaction=True)
def test_the_admin_action_says_which_validations_could_not_be_queued(client, admin_user, environment, alice, customer):
    with broker_down():
        registration = register(environment, alice, customer)
        client.force_login(admin_user)
        response = client.post(
            reverse("admin:keys_keyregistration_changelist"),
            {"action": "run_validation", "_selected_action": [registration.pk]},
            follow=True,
        )

    page = response.content.decode()
    assert "Validation queued for 0 BYOK key version(s)." in page
    assert "Validation of 1 BYOK key version(s) could not be queued (broker unreachable)" in page
    assert list(registration.validation_runs.values_list("outcome", flat=True)) == [Outcome.NOT_QUEUED]
