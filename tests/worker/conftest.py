"""Fixtures of the worker tests: a moto server as the customer's AWS, a Redis database
of the test's own as the broker, and ``celery -A portal worker --pool solo`` against this
run's PostgreSQL test database (every process stopped, every wait bounded)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.keys.moto_customer import Customer, set_up_customer
from tests.support import (
    claimed_redis_db,
    database_url,
    moto_iam,
    stop_process,
    wait_for,
)
from tests.support import moto_server as start_moto_server

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKER_READY_SECONDS = 45


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """moto's threaded server on a free loopback port: the customer's AWS; its URL."""
    with start_moto_server() as url:
        yield url


@pytest.fixture
def customer(moto_server) -> Iterator[Customer]:
    """GIVEN the seed's AWS side in the moto server, under moto's IAM simulation: the
    portal's IAM user may only call kms:Decrypt and kms:DescribeKey."""
    found = set_up_customer(endpoint_url=moto_server, user_name=f"byok-{time.monotonic_ns()}")
    moto_iam(moto_server, enforced=True)
    try:
        yield found
    finally:
        moto_iam(moto_server, enforced=False)


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A Redis database for this test's broker alone: empty, claimed, emptied afterwards."""
    with claimed_redis_db(ttl_seconds=600) as url:
        yield url


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


MAIL_END = "-" * 79 + "\n"  # django.core.mail.backends.filebased: the line after each message


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
        """What the worker's file email backend wrote, one string per file, as it is now."""
        return [p.read_text() for p in sorted(self.mail_dir.glob("*.log"))] if self.mail_dir.exists() else []

    def whole_mails(self) -> list[str]:
        """The files of :meth:`mails` written whole: Django's file backend creates its file
        (empty) before it renders and writes the message, and ends each message with a line
        of 79 dashes, so a file read in between is empty or cut short."""
        return [text for text in self.mails() if text.endswith(MAIL_END)]


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

    def start(*, beat_every: int | None = None, extra_env: dict[str, str] | None = None) -> Worker:
        """``extra_env``: more variables for the worker (role mode's platform principal, say)."""
        log, mail_dir = tmp_path / f"worker{len(processes)}.log", tmp_path / "mail"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELERY_"))},
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "false",
            "SECRET_KEY": settings.SECRET_KEY,
            "SEALING_KEYS": ",".join(settings.SEALING_KEYS),
            "ALLOWED_HOSTS": ",".join(settings.ALLOWED_HOSTS),
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": queued_to,
            "AWS_KMS_ENDPOINT_URL": moto_server,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            # django-environ drops one leading "/" of the path: four make it absolute.
            "EMAIL_URL": f"filemail:///{mail_dir}",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
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
        wait_for(worker.answers_ping, timeout=WORKER_READY_SECONDS, what="the Celery worker to answer a ping")
        return worker

    try:
        yield start
    finally:
        for process in processes:
            stop_process(process, timeout=15)
