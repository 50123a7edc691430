"""Validation runs are pruned: the latest N per key version stay, failures stay for D days."""

import datetime

import pytest
from django.conf import settings
from django.utils import timezone

from keys import tasks
from keys.models import ValidationRun
from keys.services.registrations import registration_create
from keys.services.validation_runs import validation_runs_prune, validation_runs_to_prune

Outcome = ValidationRun.Outcome
ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_validation_jobs(monkeypatch):
    monkeypatch.setattr(tasks.validate_registration, "delay", lambda *args, **kwargs: None)


def _version(environment, actor, n: int):
    return registration_create(
        environment=environment, actor=actor, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 40, encryption_context={},
        access_key_id=f"AKIAIOSFODNN7EXAMP{n:02d}", secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    )


def _run(registration, outcome: str, days_ago: float) -> ValidationRun:
    run = ValidationRun.objects.create(registration=registration, trigger="periodic", outcome=outcome)
    ValidationRun.objects.filter(pk=run.pk).update(started_at=NOW - datetime.timedelta(days=days_ago))
    return run


def test_it_keeps_the_latest_runs_of_each_version_and_recent_failures(alice, environment):
    """GIVEN two key versions with runs of every outcome and age
    WHEN runs are pruned keeping the latest 2 and failures for 30 days
    THEN each version keeps its 2 latest runs, young failures and running runs; the rest go."""
    first, second = _version(environment, alice, 1), _version(environment, alice, 2)
    ValidationRun.objects.all().delete()
    latest = [_run(first, Outcome.PASSED, 0.1), _run(first, Outcome.FAILED, 0.2)]
    old_passed = _run(first, Outcome.PASSED, 1)
    young_failure = _run(first, Outcome.FAILED, 29)
    young_unverified = _run(first, Outcome.UNVERIFIED, 3)
    old_failure = _run(first, Outcome.FAILED, 31)
    still_running = _run(first, Outcome.RUNNING, 40)
    second_latest = [_run(second, Outcome.PASSED, 50), _run(second, Outcome.PASSED, 60)]
    second_old = _run(second, Outcome.PASSED, 70)

    deleted = validation_runs_prune(keep_latest=2, keep_failures_days=30, now=NOW)

    assert deleted == 3
    kept = set(ValidationRun.objects.values_list("pk", flat=True))
    assert kept == {r.pk for r in [*latest, young_failure, young_unverified, still_running, *second_latest]}
    assert not kept & {old_passed.pk, old_failure.pk, second_old.pk}


def test_it_counts_the_latest_runs_by_start_time_then_id(alice, environment):
    version = _version(environment, alice, 1)
    ValidationRun.objects.all().delete()
    same_time = [_run(version, Outcome.PASSED, 5) for _ in range(3)]

    assert validation_runs_to_prune(keep_latest=2, keep_failures_days=0, now=NOW) == [same_time[0].pk]


def test_running_it_twice_deletes_nothing_more(alice, environment):
    version = _version(environment, alice, 1)
    ValidationRun.objects.all().delete()
    for days in range(5):
        _run(version, Outcome.PASSED, days)

    assert validation_runs_prune(keep_latest=3, keep_failures_days=30, now=NOW) == 2
    assert validation_runs_prune(keep_latest=3, keep_failures_days=30, now=NOW) == 0
    assert ValidationRun.objects.count() == 3


def test_it_refuses_to_delete_a_versions_latest_run():
    with pytest.raises(ValueError):
        validation_runs_to_prune(keep_latest=0, keep_failures_days=30)
    with pytest.raises(ValueError):
        validation_runs_to_prune(keep_latest=1, keep_failures_days=-1)


def test_the_periodic_task_prunes_with_the_settings(alice, environment, settings):
    version = _version(environment, alice, 1)
    ValidationRun.objects.all().delete()
    settings.VALIDATION_RUNS_KEEP_LATEST, settings.VALIDATION_RUNS_KEEP_FAILURES_DAYS = 1, 7
    now = timezone.now()
    for days in (0, 1, 2):
        run = ValidationRun.objects.create(registration=version, trigger="periodic", outcome=Outcome.PASSED)
        ValidationRun.objects.filter(pk=run.pk).update(started_at=now - datetime.timedelta(days=days))
    recent_failure = ValidationRun.objects.create(registration=version, trigger="periodic", outcome=Outcome.FAILED)
    ValidationRun.objects.filter(pk=recent_failure.pk).update(started_at=now - datetime.timedelta(days=3))

    assert tasks.prune_validation_runs() == 2
    assert ValidationRun.objects.count() == 2


def test_beat_runs_the_pruning_task():
    entry = settings.CELERY_BEAT_SCHEDULE["prune-validation-runs"]
    assert entry["task"] == tasks.prune_validation_runs.name == "keys.tasks.prune_validation_runs"
    assert entry["schedule"] == settings.VALIDATION_RUNS_PRUNE_INTERVAL_SECONDS
