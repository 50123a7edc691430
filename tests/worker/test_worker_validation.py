"""End to end through a real Celery worker: the web process queues, the worker validates.

Processes (started and always stopped by fixtures, every wait bounded):
* ``moto_server`` on a free loopback port: the customer's AWS (KMS and IAM);
* ``celery -A portal worker --pool solo`` (with ``--beat`` for periodic re-validation),
  on a Redis database of its own, against the PostgreSQL *test* database of this run.

The test process sends its tasks to the same Redis database instead of running them
eagerly, and commits for real (``transactional_db``) so that ``on_commit`` fires and the
worker sees the rows. DESIGN.md: "a real Celery worker for the end-to-end tests".
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests
from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse

from keys.models import AuditEvent, KeyRegistration, ValidationRun
from keys.validation import registration_activate
from tests.keys.moto_customer import Customer, register, set_up_customer

pytestmark = [pytest.mark.worker]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
Status = KeyRegistration.Status
REDIS = "redis://127.0.0.1:6379"
# Redis databases this test may take for its broker (0 is everyone's default, 15 is the
# test settings' REDIS_URL); the first one that is empty and not claimed is used.
SPARE_REDIS_DBS = range(8, 15)
CLAIM_KEY = "byok-portal-tests:worker-broker-claim"
WORKER_READY_SECONDS = 45
VALIDATED_WITHIN_SECONDS = 30
STOP_SECONDS = 15
QUEUE = "celery"


# Processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Warm shutdown (SIGTERM), then SIGKILL if it does not stop in time; by process id."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_SECONDS)


def _wait_for(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory) -> Iterator[str]:
    """A moto server on a free loopback port; its URL. IAM simulation off until asked."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "AWS_CONFIG_FILE": "/dev/null"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        def up() -> bool:
            try:
                return requests.get(f"{url}/moto-api/", timeout=1).status_code < 500
            except requests.ConnectionError:
                assert process.poll() is None, "moto_server exited"
                return False

        _wait_for(up, timeout=20, what="moto_server")
        yield url
    finally:
        _stop(process)
        log.close()


def _moto_iam(url: str, enforced: bool) -> None:
    """Switch moto's IAM simulation on (every call checked against IAM) or off."""
    response = requests.post(f"{url}/moto-api/reset-auth", data=b"0" if enforced else b"inf", timeout=5)
    response.raise_for_status()


@pytest.fixture
def customer(moto_server) -> Iterator[Customer]:
    """GIVEN the seed's AWS side in the moto server, under moto's IAM simulation: the
    portal's IAM user may only call kms:Decrypt and kms:DescribeKey."""
    found = set_up_customer(endpoint_url=moto_server, user_name=f"byok-{time.monotonic_ns()}")
    _moto_iam(moto_server, enforced=True)
    try:
        yield found
    finally:
        _moto_iam(moto_server, enforced=False)


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A Redis database for this test's broker alone: empty, claimed, emptied afterwards."""
    for db in SPARE_REDIS_DBS:
        client = redis.Redis.from_url(f"{REDIS}/{db}")
        if client.dbsize() == 0 and client.set(CLAIM_KEY, os.getpid(), nx=True, ex=600):
            try:
                yield f"{REDIS}/{db}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    pytest.fail(f"no empty Redis database among {list(SPARE_REDIS_DBS)} for the worker's broker")


@pytest.fixture
def queued_to(broker_url) -> Iterator[str]:
    """Make this process send tasks to ``broker_url`` instead of running them eagerly."""
    from portal.celery import app

    saved = {"broker_url": app.conf.broker_url, "task_always_eager": app.conf.task_always_eager}
    _reset_producer_pool(app)
    app.conf.update(broker_url=broker_url, task_always_eager=False)
    try:
        yield broker_url
    finally:
        app.conf.update(saved)
        _reset_producer_pool(app)


def _reset_producer_pool(app) -> None:
    # Forget (not close) the pools: kombu keeps producer pools per broker URL process-wide,
    # and the next test may use the same Redis database again.
    app._pool = None
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None


def _database_url() -> str:
    """The PostgreSQL test database pytest-django created for this run (``test_…``)."""
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class Worker:
    def __init__(self, process: subprocess.Popen, name: str, log: Path, mail_dir: Path) -> None:
        self.process, self.name, self.log, self.mail_dir = process, name, log, mail_dir

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def answers_ping(self) -> bool:
        from portal.celery import app

        assert self.process.poll() is None, f"the worker exited:\n{self.output()[-4000:]}"
        return bool(app.control.ping(destination=[self.name], timeout=0.5))

    def mails(self) -> list[str]:
        return [p.read_text() for p in sorted(self.mail_dir.glob("*.log"))] if self.mail_dir.exists() else []


@pytest.fixture
def published() -> Iterator[list[tuple]]:
    """The tasks this (web) process sends to the broker: (task name, args)."""
    from celery.signals import after_task_publish

    sent: list[tuple] = []

    def record(sender=None, headers=None, body=None, **kwargs):
        sent.append((sender, tuple(body[0]) if body else ()))

    after_task_publish.connect(record, weak=False)
    try:
        yield sent
    finally:
        after_task_publish.disconnect(record)


@pytest.fixture
def start_worker(transactional_db, queued_to, moto_server, tmp_path) -> Iterator[Callable[..., Worker]]:
    """Start ``celery -A portal worker --pool solo`` with this run's database, sealing keys
    and secret key, the broker database and the moto server; stopped after the test,
    before pytest-django empties the tables."""
    processes: list[subprocess.Popen] = []

    def start(*, beat_every: int | None = None) -> Worker:
        log, mail_dir = tmp_path / f"worker{len(processes)}.log", tmp_path / "mail"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELERY_"))},
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "false",
            "SECRET_KEY": settings.SECRET_KEY,
            "SEALING_KEYS": ",".join(settings.SEALING_KEYS),
            "ALLOWED_HOSTS": ",".join(settings.ALLOWED_HOSTS),
            "DATABASE_URL": _database_url(),
            "CELERY_BROKER_URL": queued_to,
            "AWS_KMS_ENDPOINT_URL": moto_server,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            # django-environ drops one leading "/" of the path: four make it absolute.
            "EMAIL_URL": f"filemail:///{mail_dir}",
            "PYTHONUNBUFFERED": "1",
        }
        name = f"byok-test-{os.getpid()}-{len(processes)}@localhost"
        command = [str(BIN / "celery"), "-A", "portal", "worker", "--pool", "solo", "-l", "info",
                   "-n", name, "--without-mingle", "--without-gossip"]
        if beat_every is not None:
            env["REVALIDATION_INTERVAL_SECONDS"] = str(beat_every)
            command += ["--beat", "--schedule", str(tmp_path / "beat-schedule")]
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        processes.append(process)
        worker = Worker(process, name, log, mail_dir)
        _wait_for(worker.answers_ping, timeout=WORKER_READY_SECONDS, what="the Celery worker to answer a ping")
        return worker

    try:
        yield start
    finally:
        for process in processes:
            _stop(process)


def _status(registration_id: int) -> str | None:
    return KeyRegistration.objects.filter(pk=registration_id).values_list("status", flat=True).first()


def _wait_status(registration_id: int, status: str, worker: Worker, timeout: float = VALIDATED_WITHIN_SECONDS) -> None:
    try:
        _wait_for(lambda: _status(registration_id) == status, timeout=timeout, what=f"status {status}")
    except AssertionError:
        raise AssertionError(f"status is {_status(registration_id)}, not {status}; worker log:\n{worker.output()[-4000:]}")


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
    _wait_status(registration.pk, Status.VALID, worker)
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
    _wait_status(registration.pk, Status.VALID, worker)


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
    _wait_status(registration.pk, Status.VALID, worker)
    registration_activate(registration=KeyRegistration.objects.get(pk=registration.pk), actor=alice)
    generation = KeyRegistration.objects.get(pk=registration.pk).generation

    revoke(customer)

    _wait_status(registration.pk, Status.INACCESSIBLE, worker)
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
    mails = _wait_for(worker.mails, timeout=10, what="the email to owners and admins")
    assert "is inaccessible" in mails[0]
    assert "alice@example.org" in mails[0] and "carol@example.org" in mails[0]

    restore(customer)

    _wait_status(registration.pk, Status.ACTIVE, worker)
    restored = KeyRegistration.objects.get(pk=registration.pk)
    assert (restored.inaccessible_reason, restored.restore_status) == ("", "")
    # Both flips came from Celery beat's periodic runs, not from anything this test queued.
    assert registration.validation_runs.filter(trigger="periodic").count() >= 2
