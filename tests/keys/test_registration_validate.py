"""The validation job and its services (keys/validation.py, keys/tasks.py).

moto in-process (``mock_aws``) plays the customer's AWS side for what it emulates: keys,
data keys, encryption context, regions and, with its IAM simulation on, the least-privilege
IAM user. What moto does not emulate (a disabled key refusing Decrypt, throttling) is
injected by patching ``keys.kms`` functions; their mapping of real AWS answers is tested in
test_kms.py and test_diagnosis.py. Here: the state machine's consequences.
"""

from __future__ import annotations

from datetime import timedelta

import botocore.endpoint
import pytest
from django.core import mail
from django.urls import reverse
from moto import mock_aws
from moto.core import enable_iam_authentication

from keys import kms, tasks
from keys.kms import KmsPermanentError, KmsTransientError, Reason
from keys.models import AuditEvent, KeyRegistration, ValidationRun
from keys.tasks import (
    MAX_RETRIES,
    revalidate_active_registrations,
    validate_registration,
)
from keys.services.validation import (
    ActivationError,
    ValidationRequestRefused,
    registration_activate,
    registration_request_validation,
    registration_validate,
    registration_validation_timed_out,
)
from tests.aws import isolate_aws_environment
from tests.keys.moto_customer import OTHER_REGION, REGION, register, set_up_customer

Status = KeyRegistration.Status
Outcome = ValidationRun.Outcome


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake, isolated AWS configuration: nothing from the developer's machine."""
    isolate_aws_environment(monkeypatch, REGION)
    kms.clear_clients()
    yield
    kms.clear_clients()


@pytest.fixture
def aws():
    with mock_aws():
        yield


@pytest.fixture
def customer(aws):
    """GIVEN the seed's AWS side: a symmetric key, an encrypted data key, an IAM user."""
    return set_up_customer()


@pytest.fixture
def iam_enforced(aws):
    """moto's IAM simulation: the portal's calls are checked against the user's policy."""
    with enable_iam_authentication():
        yield


@pytest.fixture
def pending(environment, alice, customer) -> KeyRegistration:
    """A BYOK registration (version 2) as saved by the registration page, not yet validated:
    the ``db`` fixture's transaction never commits, so no job was queued."""
    return register(environment, alice, customer)


def _checks(run: ValidationRun) -> dict[str, dict]:
    return {c["name"]: c for c in run.checks}


def _statuses(registration: KeyRegistration) -> list[tuple[str, str]]:
    events = AuditEvent.objects.filter(registration=registration, action=AuditEvent.Action.STATUS_CHANGED)
    return [(e.before["status"], e.after["status"]) for e in events.order_by("created_at", "id")]


def _kms_error(cls, reason: str, code: str, operation: str = "Decrypt"):
    def fail(**kwargs):
        raise cls(reason, operation=operation, message=f"KMS {operation} failed: {code}", code=code, http_status=400)

    return fail


# First validation


def test_it_turns_a_pending_registration_valid_when_every_check_passes(pending, iam_enforced):
    run = registration_validate(registration_id=pending.pk, trigger="registration")

    pending.refresh_from_db()
    assert pending.status == Status.VALID
    assert run.outcome == Outcome.PASSED and run.trigger == "registration"
    assert run.finished_at is not None and pending.last_verified_at is not None
    # moto never reports the encryption algorithm: that one check has nothing to look at.
    statuses = {c["name"]: c["status"] for c in run.checks}
    assert statuses.pop("decrypt.algorithm") == "skip"
    assert set(statuses.values()) == {"pass"}, run.checks
    assert _statuses(pending) == [("pending_validation", "validating"), ("validating", "valid")]
    assert AuditEvent.objects.filter(registration=pending, action="validation_run", after__outcome="passed").exists()


def test_it_stores_every_check_with_its_cause_and_no_secret(pending, customer, iam_enforced):
    run = registration_validate(registration_id=pending.pk, trigger="registration")

    for check in run.checks:
        assert set(check) >= {"name", "label", "status", "aws_error_code", "cause", "remedy"}
        assert check["cause"]
    stored = str(list(ValidationRun.objects.values())) + str(list(AuditEvent.objects.values()))
    assert customer.secret_access_key not in stored
    assert customer.access_key_id not in stored


def test_it_marks_registration_failed_when_the_blob_was_generated_under_another_key(environment, alice, customer):
    other = set_up_customer(user_name="other")
    registration = register(environment, alice, customer, encrypted_data_key=other.encrypted_data_key)

    run = registration_validate(registration_id=registration.pk, trigger="registration")

    registration.refresh_from_db()
    assert registration.status == Status.FAILED
    decrypt = _checks(run)["decrypt.call"]
    assert decrypt["status"] == "fail" and decrypt["reason"] == Reason.INCORRECT_KEY
    assert decrypt["aws_error_code"] == "AccessDeniedException"  # moto's code; AWS says IncorrectKeyException
    assert "generated under another KMS key" in decrypt["cause"]
    assert "generate-data-key-without-plaintext" in decrypt["remedy"]
    assert run.failure_reason == Reason.INCORRECT_KEY
    assert _statuses(registration)[-1] == ("validating", "failed")


@pytest.mark.parametrize("registered_context", [{}, {"environment": "staging"}, {"Environment": "production"}])
def test_it_marks_registration_failed_when_the_encryption_context_is_missing_or_different(
    environment, alice, aws, registered_context
):
    customer = set_up_customer(encryption_context={"environment": "production"})
    registration = register(environment, alice, customer, encryption_context=registered_context)

    run = registration_validate(registration_id=registration.pk, trigger="registration")

    registration.refresh_from_db()
    assert registration.status == Status.FAILED
    decrypt = _checks(run)["decrypt.call"]
    assert decrypt["reason"] == Reason.INVALID_CIPHERTEXT
    assert decrypt["aws_error_code"] == "InvalidCiphertextException"
    assert "encryption context" in decrypt["cause"]


def test_it_validates_a_registration_with_the_same_encryption_context(environment, alice, aws):
    customer = set_up_customer(encryption_context={"environment": "production", "app": "billing"})
    registration = register(environment, alice, customer)

    registration_validate(registration_id=registration.pk, trigger="registration")

    registration.refresh_from_db()
    assert registration.status == Status.VALID


def test_it_marks_registration_failed_when_the_key_is_in_another_region(environment, alice, customer):
    """GIVEN the key lives in eu-west-1 but the ARN and region registered say us-east-1."""
    elsewhere = customer.kms_key_arn.replace(f":{REGION}:", f":{OTHER_REGION}:")
    registration = register(environment, alice, customer, kms_key_arn=elsewhere, region=OTHER_REGION)

    run = registration_validate(registration_id=registration.pk, trigger="registration")

    registration.refresh_from_db()
    assert registration.status == Status.FAILED
    checks = _checks(run)
    assert checks["registration.region"]["status"] == "pass"
    assert checks["describe_key.call"]["reason"] == Reason.NOT_FOUND
    assert checks["describe_key.call"]["aws_error_code"] == "NotFoundException"
    assert OTHER_REGION in checks["describe_key.call"]["cause"]
    assert checks["decrypt.call"]["reason"] == Reason.NOT_FOUND


def test_it_marks_registration_failed_when_the_region_differs_from_the_arn(environment, alice, customer):
    registration = register(environment, alice, customer, region=OTHER_REGION)

    run = registration_validate(registration_id=registration.pk, trigger="registration")

    registration.refresh_from_db()
    assert registration.status == Status.FAILED
    assert _checks(run)["registration.region"]["reason"] == "region_mismatch"


def test_it_marks_registration_failed_when_the_key_is_unknown(environment, alice, customer):
    unknown = customer.kms_key_arn.rsplit("/", 1)[0] + "/11111111-2222-3333-4444-555555555555"
    registration = register(environment, alice, customer, kms_key_arn=unknown)

    run = registration_validate(registration_id=registration.pk, trigger="registration")

    registration.refresh_from_db()
    assert registration.status == Status.FAILED
    assert _checks(run)["describe_key.call"]["reason"] == Reason.NOT_FOUND
    assert "Check the key ARN and the region" in _checks(run)["describe_key.call"]["remedy"]


def test_it_marks_registration_failed_when_the_iam_policy_lacks_decrypt(pending, customer, iam_enforced):
    customer.iam().put_user_policy(
        UserName=customer.user_name, PolicyName="byok-portal",
        PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["kms:DescribeKey"], "Resource": "*"}]}',
    )

    run = registration_validate(registration_id=pending.pk, trigger="registration")

    pending.refresh_from_db()
    assert pending.status == Status.FAILED
    assert _checks(run)["describe_key.call"]["status"] == "pass"
    assert _checks(run)["decrypt.call"]["reason"] == Reason.ACCESS_DENIED
    assert "kms:Decrypt" in _checks(run)["decrypt.call"]["remedy"]


# Transient failures: retried, then "could not verify", never failed


@pytest.fixture
def throttled(monkeypatch):
    """KMS throttles every DescribeKey and Decrypt; returns the Decrypt call count."""
    calls = []

    def throttle(**kwargs):
        calls.append(kwargs)
        raise KmsTransientError(Reason.THROTTLED, operation="Decrypt", message="throttled",
                                code="ThrottlingException", http_status=400)

    monkeypatch.setattr(kms, "describe_key", _kms_error(KmsTransientError, Reason.THROTTLED, "ThrottlingException", "DescribeKey"))
    monkeypatch.setattr(kms, "decrypt", throttle)
    return calls


def test_it_says_could_not_verify_after_one_inline_attempt_without_failing_the_key(pending, throttled):
    """GIVEN KMS throttles every call
    WHEN the job runs (eagerly, inside the web request, as in the embedded default)
    THEN it makes one attempt (the admin's "Validate again" is the retry there; see
    test_validation_inline.py), keeps one run that ends "could not verify", and puts the
    registration back to pending validation."""
    validate_registration.delay(pending.pk, "registration")

    assert len(throttled) == 1
    pending.refresh_from_db()
    assert pending.status == Status.PENDING_VALIDATION
    run = pending.validation_runs.get()
    assert run.outcome == Outcome.UNVERIFIED and run.get_outcome_display() == "Could not verify"
    assert run.failure_reason == Reason.THROTTLED
    assert _checks(run)["decrypt.call"]["aws_error_code"] == "ThrottlingException"
    assert "failed" not in {after for _before, after in _statuses(pending)}
    assert _statuses(pending) == [("pending_validation", "validating"), ("validating", "pending_validation")]


def test_it_does_not_break_the_web_request_that_queued_a_throttled_validation(
    environment, alice, customer, throttled, django_capture_on_commit_callbacks
):
    """The job is queued with on_commit inside the registration request; in eager mode a
    Celery retry would raise out of the request. It must not."""
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        registration = register(environment, alice, customer)

    assert len(callbacks) == 1
    registration.refresh_from_db()
    assert registration.status == Status.PENDING_VALIDATION
    assert registration.validation_runs.get().outcome == Outcome.UNVERIFIED


class Retried(Exception):
    def __init__(self, countdown):
        self.countdown = countdown


def test_it_recovers_when_kms_answers_on_a_later_attempt_in_a_worker(pending, monkeypatch, iam_enforced):
    real_decrypt, calls = kms.decrypt, []

    def flaky(**kwargs):
        calls.append(1)
        if len(calls) < 3:
            raise KmsTransientError(Reason.INTERNAL, operation="Decrypt", message="KMS internal", code="KMSInternalException")
        return real_decrypt(**kwargs)

    monkeypatch.setattr(kms, "decrypt", flaky)
    monkeypatch.setattr(validate_registration, "retry", lambda exc=None, countdown=None, **kw: Retried(countdown))

    for retries in range(3):  # what the worker does: the first attempt, then Celery's retries
        validate_registration.push_request(retries=retries, is_eager=False, called_directly=False)
        try:
            validate_registration.run(pending.pk, "registration")
        except Retried:
            pass
        finally:
            validate_registration.pop_request()

    pending.refresh_from_db()
    assert pending.status == Status.VALID
    assert len(calls) == 3
    assert pending.validation_runs.get().outcome == Outcome.PASSED  # one run per job, not per attempt


@pytest.mark.parametrize("retries, low, high", [(0, 2, 4), (1, 4, 8), (3, 16, 32)])
def test_it_retries_in_a_worker_with_exponential_backoff_and_jitter(pending, throttled, monkeypatch, retries, low, high):
    """In a worker (not eager) a transient failure asks Celery to retry with a countdown."""
    monkeypatch.setattr(validate_registration, "retry", lambda exc=None, countdown=None, **kw: Retried(countdown))
    validate_registration.push_request(retries=retries, is_eager=False, called_directly=False)
    try:
        with pytest.raises(Retried) as retried:
            validate_registration.run(pending.pk, "registration")
    finally:
        validate_registration.pop_request()

    assert low <= retried.value.countdown <= high
    pending.refresh_from_db()
    assert pending.status == Status.VALIDATING  # still being validated between attempts
    run = pending.validation_runs.get()
    assert run.outcome == Outcome.RUNNING and _checks(run)["decrypt.call"]["reason"] == Reason.THROTTLED


def test_it_ends_could_not_verify_on_the_last_attempt_in_a_worker(pending, throttled, monkeypatch):
    monkeypatch.setattr(validate_registration, "retry", lambda **kw: pytest.fail("no retry after the last attempt"))
    validate_registration.push_request(retries=MAX_RETRIES, is_eager=False, called_directly=False)
    try:
        validate_registration.run(pending.pk, "registration")
    finally:
        validate_registration.pop_request()

    pending.refresh_from_db()
    assert pending.status == Status.PENDING_VALIDATION
    assert pending.validation_runs.get().outcome == Outcome.UNVERIFIED


def test_it_backs_off_with_jitter_and_a_cap(monkeypatch):
    monkeypatch.setattr(tasks.random, "uniform", lambda low, high: high)
    assert [tasks.backoff_seconds(n) for n in range(4)] == [4, 8, 16, 32]
    assert tasks.backoff_seconds(20) == 2 * tasks.BACKOFF_MAX_SECONDS


def test_it_ends_a_timed_out_validation_as_could_not_verify(pending):
    registration_request_validation(registration=pending, actor=None)
    KeyRegistration.objects.filter(pk=pending.pk).update(status=Status.VALIDATING)

    registration_validation_timed_out(registration_id=pending.pk)

    pending.refresh_from_db()
    assert pending.status == Status.PENDING_VALIDATION
    run = pending.validation_runs.get()
    assert (run.outcome, run.failure_reason) == (Outcome.UNVERIFIED, "timeout")


# Idempotency


def test_it_is_harmless_to_run_the_job_twice(pending, iam_enforced):
    validate_registration.delay(pending.pk, "registration")
    validate_registration.delay(pending.pk, "registration")

    pending.refresh_from_db()
    assert pending.status == Status.VALID
    assert pending.validation_runs.count() == 1
    assert _statuses(pending) == [("pending_validation", "validating"), ("validating", "valid")]


def test_it_does_nothing_when_the_registration_vanished(pending):
    registration_id = pending.pk
    pending.delete()

    assert registration_validate(registration_id=registration_id, trigger="registration") is None
    validate_registration.delay(registration_id, "registration")
    validate_registration.delay(registration_id, "periodic")

    assert not ValidationRun.objects.exists()


def test_it_leaves_a_platform_managed_version_alone(environment):
    managed = environment.key_registrations.get()

    assert registration_validate(registration_id=managed.pk, trigger="manual") is None
    assert registration_validate(registration_id=managed.pk, trigger="periodic") is None
    managed.refresh_from_db()
    assert managed.status == Status.ACTIVE


def test_it_continues_a_validation_interrupted_while_validating(pending, iam_enforced):
    """A worker died mid-job (acks_late: the message comes back): the registration is still
    validating with a running run, which the redelivered job fills in."""
    KeyRegistration.objects.filter(pk=pending.pk).update(status=Status.VALIDATING)
    ValidationRun.objects.create(registration=pending, trigger="registration")

    validate_registration.delay(pending.pk, "registration")

    pending.refresh_from_db()
    assert pending.status == Status.VALID
    assert pending.validation_runs.get().outcome == Outcome.PASSED


# Validate again


def test_it_validates_a_failed_registration_again_and_fills_the_queued_run(
    environment, alice, customer, iam_enforced, django_capture_on_commit_callbacks
):
    other_arn = customer.kms().create_key()["KeyMetadata"]["Arn"]
    wrong = customer.kms().generate_data_key_without_plaintext(KeyId=other_arn, KeySpec="AES_256")["CiphertextBlob"]
    registration = register(environment, alice, customer, encrypted_data_key=wrong)
    registration_validate(registration_id=registration.pk, trigger="registration")
    KeyRegistration.objects.filter(pk=registration.pk).update(encrypted_data_key=customer.encrypted_data_key)
    registration.refresh_from_db()

    with django_capture_on_commit_callbacks(execute=True):
        queued = registration_request_validation(registration=registration, actor=alice)

    queued.refresh_from_db()
    registration.refresh_from_db()
    assert registration.status == Status.VALID
    assert (queued.trigger, queued.outcome) == ("manual", Outcome.PASSED)
    assert registration.validation_runs.count() == 2
    assert ("failed", "pending_validation") in _statuses(registration)
    requested = AuditEvent.objects.get(registration=registration, actor=alice, action="validation_run")
    assert requested.after == {"outcome": "queued", "trigger": "manual"}


@pytest.mark.parametrize("status", [Status.VALIDATING, Status.RETIRED])
def test_it_refuses_to_validate_again_while_validating_or_when_retired(pending, status):
    KeyRegistration.objects.filter(pk=pending.pk).update(status=status)
    pending.refresh_from_db()

    with pytest.raises(ValidationRequestRefused):
        registration_request_validation(registration=pending, actor=None)
    assert not pending.validation_runs.exists()


# Activation


@pytest.fixture
def valid(pending, iam_enforced) -> KeyRegistration:
    registration_validate(registration_id=pending.pk, trigger="registration")
    pending.refresh_from_db()
    assert pending.status == Status.VALID
    return pending


def test_it_activates_a_valid_registration_and_makes_the_previous_active_decrypt_only(valid, environment, alice):
    managed = environment.key_registrations.get(version=1)
    generation = managed.generation

    registration_activate(registration=valid, actor=alice)

    valid.refresh_from_db()
    managed.refresh_from_db()
    assert (valid.status, managed.status) == (Status.ACTIVE, Status.DECRYPT_ONLY)
    assert valid.activated_at is not None
    assert managed.generation == generation + 1  # its cached data key is evicted
    demoted = AuditEvent.objects.get(registration=managed, action="status_changed")
    promoted = AuditEvent.objects.filter(registration=valid, action="status_changed").order_by("-id").first()
    assert (demoted.before, demoted.after, demoted.actor) == ({"status": "active"}, {"status": "decrypt_only"}, alice)
    assert (promoted.before, promoted.after, promoted.actor) == ({"status": "valid"}, {"status": "active"}, alice)


@pytest.mark.parametrize("status", [Status.PENDING_VALIDATION, Status.VALIDATING, Status.FAILED, Status.INACCESSIBLE])
def test_it_refuses_to_activate_a_registration_that_is_not_valid(pending, environment, alice, status):
    KeyRegistration.objects.filter(pk=pending.pk).update(status=status)
    pending.refresh_from_db()

    with pytest.raises(ActivationError, match="Only a valid key version can be activated"):
        registration_activate(registration=pending, actor=alice)

    assert environment.key_registrations.get(version=1).status == Status.ACTIVE
    pending.refresh_from_db()
    assert pending.status == status


def test_it_refuses_an_activation_that_lost_a_race(valid, alice):
    stale = KeyRegistration.objects.get(pk=valid.pk)
    KeyRegistration.objects.filter(pk=valid.pk).update(status=Status.VALIDATING)

    with pytest.raises(ActivationError):
        registration_activate(registration=stale, actor=alice)
    assert valid.environment.key_registrations.get(version=1).status == Status.ACTIVE


# Periodic re-validation


@pytest.fixture
def active(valid, alice, carol, bob) -> KeyRegistration:
    """GIVEN a BYOK version that is the environment's active one; carol (admin) and bob
    (viewer) are members too."""
    registration_activate(registration=valid, actor=alice)
    valid.refresh_from_db()
    mail.outbox.clear()
    return valid


def test_it_marks_an_active_key_inaccessible_when_periodic_validation_finds_it_disabled(active, monkeypatch):
    """GIVEN the customer disabled the KMS key (moto still decrypts with a disabled key, so
    Decrypt's DisabledException is injected)
    WHEN periodic re-validation runs
    THEN the version is inaccessible, its cached data keys are evicted (generation bumped),
    the transition is audited, and the owners and admins are emailed."""
    monkeypatch.setattr(kms, "decrypt", _kms_error(KmsPermanentError, Reason.DISABLED, "DisabledException"))
    generation = active.generation

    validate_registration.delay(active.pk, "periodic")

    active.refresh_from_db()
    assert active.status == Status.INACCESSIBLE
    assert (active.restore_status, active.inaccessible_reason) == (Status.ACTIVE, Reason.DISABLED)
    assert active.generation == generation + 1
    event = AuditEvent.objects.filter(registration=active, action="status_changed").order_by("-id").first()
    assert event.before == {"status": "active"}
    assert event.after == {"status": "inaccessible", "reason": "disabled"}
    assert event.actor_label == "job: periodic re-validation"
    run = active.validation_runs.order_by("-id").first()
    assert (run.trigger, run.outcome) == ("periodic", Outcome.FAILED)
    assert _checks(run)["decrypt.call"]["aws_error_code"] == "DisabledException"
    assert "Enable the key" in _checks(run)["decrypt.call"]["remedy"]
    assert len(mail.outbox) == 1
    assert sorted(mail.outbox[0].to) == ["alice@example.org", "carol@example.org"]
    assert "version 2 is inaccessible" in mail.outbox[0].subject
    assert "disabled" in mail.outbox[0].body


def test_it_restores_an_inaccessible_key_when_a_later_validation_succeeds(active, monkeypatch):
    with monkeypatch.context() as patched:
        patched.setattr(kms, "decrypt", _kms_error(KmsPermanentError, Reason.DISABLED, "DisabledException"))
        validate_registration.delay(active.pk, "periodic")
    generation = KeyRegistration.objects.get(pk=active.pk).generation

    validate_registration.delay(active.pk, "periodic")

    active.refresh_from_db()
    assert active.status == Status.ACTIVE
    assert (active.restore_status, active.inaccessible_reason) == ("", "")
    assert active.generation == generation + 1
    assert _statuses(active)[-2:] == [("active", "inaccessible"), ("inaccessible", "active")]
    assert len(mail.outbox) == 1  # the revocation, not the restoration


def test_it_emails_only_once_while_the_key_stays_inaccessible(active, monkeypatch):
    monkeypatch.setattr(kms, "decrypt", _kms_error(KmsPermanentError, Reason.DISABLED, "DisabledException"))

    validate_registration.delay(active.pk, "periodic")
    validate_registration.delay(active.pk, "periodic")

    assert len(mail.outbox) == 1
    assert active.validation_runs.filter(trigger="periodic", outcome=Outcome.FAILED).count() == 2


def test_it_restores_a_version_as_decrypt_only_when_another_was_activated_meanwhile(active, environment, alice, monkeypatch):
    with monkeypatch.context() as patched:
        patched.setattr(kms, "decrypt", _kms_error(KmsPermanentError, Reason.DISABLED, "DisabledException"))
        validate_registration.delay(active.pk, "periodic")
    managed = environment.key_registrations.get(version=1)
    registration_activate(registration=managed, actor=alice)

    validate_registration.delay(active.pk, "periodic")

    active.refresh_from_db()
    assert active.status == Status.DECRYPT_ONLY


def test_it_flips_nothing_when_periodic_validation_cannot_reach_kms(active, throttled, client_for, alice, environment):
    validate_registration.delay(active.pk, "periodic")

    active.refresh_from_db()
    assert active.status == Status.ACTIVE
    assert active.kms_unreachable_since is not None
    assert active.validation_runs.order_by("-id").first().outcome == Outcome.UNVERIFIED
    assert mail.outbox == []
    response = client_for(alice).get(reverse("environment_detail", args=[environment.public_id]))
    assert b"KMS unreachable since" in response.content
    assert b"last verified" in response.content


def test_it_keeps_the_first_time_kms_was_unreachable_and_clears_it_on_success(active, monkeypatch):
    with monkeypatch.context() as patched:
        patched.setattr(kms, "decrypt", _kms_error(KmsTransientError, Reason.NETWORK, "network"))
        validate_registration.delay(active.pk, "periodic")
        first = KeyRegistration.objects.get(pk=active.pk).kms_unreachable_since
        KeyRegistration.objects.filter(pk=active.pk).update(kms_unreachable_since=first - timedelta(hours=1))
        validate_registration.delay(active.pk, "periodic")
        assert KeyRegistration.objects.get(pk=active.pk).kms_unreachable_since == first - timedelta(hours=1)

    validate_registration.delay(active.pk, "periodic")

    active.refresh_from_db()
    assert active.kms_unreachable_since is None
    assert active.status == Status.ACTIVE


def test_it_queues_periodic_validation_of_every_active_decrypt_only_and_inaccessible_byok_version(
    active, environment, alice, customer, monkeypatch
):
    pending = register(environment, alice, customer, access_key_id="AKIAOTHER00000000000")
    validated = []
    monkeypatch.setattr(validate_registration, "apply_async", lambda args, **kw: validated.append((args, kw)))

    assert revalidate_active_registrations() == 1

    assert validated == [((active.pk, "periodic"), {"expires": 900})]
    assert pending.pk not in [args[0] for args, _kw in validated]


def test_it_schedules_periodic_revalidation_with_celery_beat(settings):
    schedule = settings.CELERY_BEAT_SCHEDULE["revalidate-active-registrations"]
    assert schedule["task"] == "keys.tasks.revalidate_active_registrations"
    assert schedule["schedule"] == settings.REVALIDATION_INTERVAL_SECONDS == 900


def test_it_does_not_sleep_between_eager_attempts(pending, throttled, monkeypatch):
    monkeypatch.setattr(botocore.endpoint, "time", None)  # any botocore sleep would now fail
    monkeypatch.setattr(tasks.random, "uniform", lambda *a: pytest.fail("no backoff in eager mode"))

    validate_registration.delay(pending.pk, "registration")

    assert KeyRegistration.objects.get(pk=pending.pk).status == Status.PENDING_VALIDATION
