"""Canary for role mode (issue 14, "Tests that must exist and pass"; docs/architecture.md,
"Invariants", 1): the temporary access key ID, secret access key and session token that STS
AssumeRole returns never appear in the database, Redis (the app's database and a Celery
broker's), Celery messages, logs, pages, Django admin, audit events or error reports.

moto plays the customer's AWS (in-process ``mock_aws``): a role, a KMS key and an encrypted
data key bound to the environment. Its AssumeRole is patched to return credentials made of
canary strings, so every AssumeRole of the flow (the validation's and the data plane's) hands
the portal values that can be searched for. The flow is the product's own: register through
the page, the validation job, activation, a data-plane PUT and GET, "Validate again". Then
every place is searched in every form a value could take (as is, hex, base64; the helpers of
``test_registration_canary``).

Raw log records of botocore (and moto, the stand-in for AWS) do hold the credentials at
DEBUG: botocore logs the AssumeRole response and the signed request headers. Production
sets botocore to WARNING (portal/settings.py, LOGGING), and every handler redacts what is
shaped like a credential (portal/logging.py): so for those loggers what is *written* is
searched, for every other logger the record itself.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import traceback
from collections.abc import Iterator
from unittest import mock

import pytest
import redis
from celery.signals import after_task_publish
from django.core import mail
from django.core.signals import got_request_exception
from django.urls import URLPattern, reverse
from django.views.debug import ExceptionReporter
from moto import mock_aws
from moto.sts.models import STSBackend

from keys import cache, kms, sts
from keys.models import AuditEvent, KeyRegistration
from tests.aws import isolate_aws_environment
from tests.support import claimed_redis_db
from tests.worker.conftest import _reset_producer_pool

from .test_registration_canary import admin_pages, assert_absent, dump_database
from .test_registration_views import new_url
from .test_role_mode import PLATFORM, REGION, _role_customer

pytestmark = pytest.mark.django_db

# What the patched AssumeRole returns: shaped like real STS credentials (an ASIA access key
# ID, a 40-character secret, a long base64 session token), each with a marker to search for.
ACCESS_KEY_ID = "ASIACANARYR0LE5F1E9B"
SECRET = "CANARYroleSecret/5f1e9b27+DoNotLeak01234"
SESSION_TOKEN = (
    "IQoJb3JpZ2luX2VjECANARYsessionToken5f1e9b27"
    + base64.b64encode(bytes(range(256)) * 2).decode().replace("=", "")
)
CANARIES = {"access key ID": ACCESS_KEY_ID, "secret access key": SECRET, "session token": SESSION_TOKEN}
MARKERS = ("CANARYR0LE5F1E9", "CANARYroleSecret", "CANARYsessionToken5f1e9b27")
# Loggers whose raw records hold the credentials by design of the library (see the docstring).
AWS_LIBRARY_LOGGERS = ("botocore", "boto3", "moto", "urllib3")
RECORD_KEY = "canary-record"


def assert_no_canary(text: str, where: str) -> None:
    """None of the three credentials, in any form, nor any of their markers, in ``text``."""
    for name, value in CANARIES.items():
        assert_absent(text, f"{where} ({name})", value)
    for marker in MARKERS:
        assert marker not in text, f"a canary marker {marker} found in {where}"


def test_the_canary_values_look_like_sts_credentials():
    assert len(ACCESS_KEY_ID) == 20 and ACCESS_KEY_ID.startswith("ASIA") and ACCESS_KEY_ID.isupper()
    assert len(SECRET) == 40 and len(SESSION_TOKEN) > 600


class RawLogCapture(logging.Handler):
    """Every record as it was logged, before any handler's redacting filter rewrote it (the
    filters change the record in place: a handler called after them sees redacted text)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: set[int] = set()
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) in self.seen:  # the same record reaching a parent logger's handlers
            return
        self.seen.add(id(record))
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        exception = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else ""
        self.lines.append((record.name, f"{message} {record.args!r} {exception} {record.__dict__!r}"))


@pytest.fixture
def raw_log(console) -> Iterator[RawLogCapture]:
    """All loggers at DEBUG (``console``), botocore's included; this handler first on every
    logger that has handlers, so it sees each record before any redaction."""
    capture = RawLogCapture()
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and logger.handlers
    ]
    for logger in loggers:
        logger.handlers.insert(0, capture)
    yield capture
    for logger in loggers:
        logger.removeHandler(capture)


@pytest.fixture
def assume_role_calls(monkeypatch) -> list[str]:
    """moto's AssumeRole, returning the canary credentials; the role ARNs it was called for."""
    calls: list[str] = []
    original = STSBackend.assume_role

    def assume_role(self, *args, **kwargs):
        role = original(self, *args, **kwargs)
        role.access_key_id, role.secret_access_key, role.session_token = ACCESS_KEY_ID, SECRET, SESSION_TOKEN
        calls.append(kwargs.get("role_arn", ""))
        return role

    monkeypatch.setattr(STSBackend, "assume_role", assume_role)
    return calls


@pytest.fixture
def aws(monkeypatch, settings) -> Iterator[None]:
    isolate_aws_environment(monkeypatch, REGION)
    settings.PLATFORM_AWS_PRINCIPAL_ARN = PLATFORM
    settings.ADMINS = [("Ops", "ops@example.org")]
    settings.DEBUG = False
    for clear in (sts.clear_clients, kms.clear_clients, sts.role_sessions.clear):
        clear()
    with mock_aws():
        yield
    for clear in (sts.clear_clients, kms.clear_clients, sts.role_sessions.clear):
        clear()


@pytest.fixture
def role_mode_in_use(
    aws, assume_role_calls, console, raw_log, client_for, alice, environment, api,
    django_capture_on_commit_callbacks,
) -> dict:
    """GIVEN a customer's role, KMS key and environment-bound encrypted data key (moto)
    WHEN alice registers the role on the page, the validation job runs (AssumeRole, then
    DescribeKey and Decrypt with the canary credentials), she activates the version, and an
    application writes and reads a record (the data plane assumes the role again)
    THEN the version is active and the record round-trips: the credentials were used."""
    role_arn, key, blob, context = _role_customer(environment)
    client = client_for(alice)
    form = {
        "access_mode": "role", "role_arn": role_arn, "kms_key_arn": key["Arn"], "region": REGION,
        "encrypted_data_key": base64.b64encode(blob).decode(), "encryption_context": json.dumps(context),
    }
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(new_url(environment), form).status_code == 302
    registration = environment.key_registrations.get(version=2)
    assert registration.status == KeyRegistration.Status.VALID, list(registration.validation_runs.values("checks"))
    activate = reverse("registration_activate", args=[environment.public_id, registration.public_id])
    with django_capture_on_commit_callbacks(execute=True):
        client.post(activate)
    registration.refresh_from_db()
    assert registration.status == KeyRegistration.Status.ACTIVE

    assert api.put(RECORD_KEY, {"body": {"patient": "canary"}}).status_code == 200
    cache.clear()
    answer = api.get(RECORD_KEY)
    assert answer.status_code == 200 and json.loads(answer.content)["body"] == {"patient": "canary"}
    assert len(assume_role_calls) == 2  # the validation's, then the data plane's (held for the GET)
    return {"client": client, "registration": registration, "environment": environment, "api": api,
            "answers": [answer.content.decode()]}


def test_it_keeps_the_role_credentials_out_of_every_database_column(role_mode_in_use):
    dump = dump_database()
    assert role_mode_in_use["registration"].role_arn in dump and "keys_validationrun" in dump
    assert_no_canary(dump, "the database")


def test_it_keeps_the_role_credentials_out_of_every_log_line(role_mode_in_use, raw_log, console):
    names = {name for name, _ in raw_log.lines}
    assert {"keys.api.access", "botocore.endpoint", "botocore.parsers"} <= names, "the capture misses loggers"
    library_lines_with_canary = set()
    for name, text in raw_log.lines:
        if name.startswith(AWS_LIBRARY_LOGGERS):
            library_lines_with_canary |= {name for marker in MARKERS if marker in text}
            continue
        assert_no_canary(text, f"a log record of {name}")
    written = console.getvalue()
    assert '"logger": "botocore.parsers"' in written  # botocore's DEBUG lines were written too
    assert_no_canary(written, "the written log lines")
    # The capture sees the credentials where botocore logs them (the AssumeRole response, the
    # signed requests): the search can find them, and what was written had them redacted.
    assert {"botocore.parsers", "botocore.endpoint"} <= library_lines_with_canary


def test_it_keeps_the_role_credentials_out_of_the_pages_of_the_environment_and_version(role_mode_in_use):
    from keys.urls import urlpatterns

    client, environment, registration = (role_mode_in_use[k] for k in ("client", "environment", "registration"))
    pages = {"home": reverse("home"), "environment": reverse("environment_detail", args=[environment.public_id])}
    values = {"environment_id": environment.public_id, "registration_id": registration.public_id}
    for pattern in urlpatterns:
        assert isinstance(pattern, URLPattern)
        names = list(pattern.pattern.converters)
        if names and set(names) <= set(values):
            pages[pattern.name] = reverse(pattern.name, kwargs={n: values[n] for n in names})
    shown = 0
    for name, url in pages.items():
        response = client.get(url)
        if response.status_code == 405 or (name == "registration_edit" and response.status_code == 302):
            continue  # a POST-only action; the edit page of a version in service sends it back
        assert response.status_code == 200, name
        shown += 1
        assert_no_canary(response.content.decode(), f"the page {name}")
    assert {"registration_status", "registration_role_arn", "revocation_drill"} <= set(pages) and shown >= 6
    for answer in role_mode_in_use["answers"]:
        assert_no_canary(answer, "a data-plane answer")


def test_it_keeps_the_role_credentials_out_of_every_admin_page(role_mode_in_use, client, django_user_model):
    staff = django_user_model.objects.create_superuser("root", "root@example.org", "x")
    client.force_login(staff)
    registration = role_mode_in_use["registration"]
    for url in admin_pages(registration):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_no_canary(response.content.decode(), url)
    change = client.get(reverse("admin:keys_keyregistration_change", args=[registration.pk])).content.decode()
    assert registration.role_arn in change


def test_it_keeps_the_role_credentials_out_of_audit_events(role_mode_in_use):
    events = list(AuditEvent.objects.filter(environment=role_mode_in_use["environment"]))
    assert {e.action for e in events} >= {"registration_created", "status_changed", "validation_run"}
    for event in events:
        text = json.dumps([event.before, event.after, event.message, event.actor_label, str(event)])
        assert_no_canary(text, f"audit event {event.action}")


def _redis_text(url: str) -> tuple[str, int]:
    """Every key and value of one Redis database as text (Celery messages' base64 bodies
    decoded too), and how many keys there were."""
    client = redis.Redis.from_url(url)
    lines, keys = [], 0
    try:
        for key in client.scan_iter(count=1000):
            keys += 1
            lines.append(key.decode("latin-1"))
            for value in _redis_values(client, key):
                text = (value or b"").decode("latin-1")
                lines.append(text)
                lines.extend(_message_bodies(text))
    finally:
        client.close()
    return "\n".join(lines), keys


def _redis_values(client: redis.Redis, key: bytes) -> list[bytes]:
    kind = client.type(key).decode()
    if kind == "string":
        return [client.get(key)]
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind == "hash":
        return [b"%s=%s" % item for item in client.hgetall(key).items()]
    if kind == "set":
        return list(client.smembers(key))
    if kind == "zset":
        return list(client.zrange(key, 0, -1))
    raise AssertionError(f"Redis key {key!r} of type {kind}: not searched")


def _message_bodies(text: str) -> list[str]:
    try:
        message = json.loads(text)
    except ValueError:
        return []
    if isinstance(message, dict) and message.get("properties", {}).get("body_encoding") == "base64":
        return [base64.b64decode(message["body"]).decode("latin-1")]
    return []


@pytest.fixture
def broker() -> Iterator[str]:
    """Tasks of this process go to a Redis database of this test's own (not run eagerly)."""
    from portal.celery import app

    with claimed_redis_db(ttl_seconds=600) as url:
        saved = {"broker_url": app.conf.broker_url, "task_always_eager": app.conf.task_always_eager}
        _reset_producer_pool(app)
        app.conf.update(broker_url=url, task_always_eager=False)
        try:
            yield url
        finally:
            app.conf.update(saved)
            _reset_producer_pool(app)


def test_it_keeps_the_role_credentials_out_of_redis_and_celery_messages(
    role_mode_in_use, broker, settings, django_capture_on_commit_callbacks
):
    """GIVEN the role's credentials held by this process WHEN "Validate again" and the
    periodic re-validation queue validations on a real broker THEN the messages carry ids
    only, and neither the broker's Redis database nor the app's holds the credentials."""
    from keys import tasks

    environment, registration = role_mode_in_use["environment"], role_mode_in_use["registration"]
    published: list[tuple] = []

    def record(sender=None, headers=None, body=None, **kwargs):
        published.append((sender, body, headers))

    after_task_publish.connect(record, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            role_mode_in_use["client"].post(
                reverse("registration_validate", args=[environment.public_id, registration.public_id])
            )
        tasks.revalidate_active_registrations.apply()
    finally:
        after_task_publish.disconnect(record)

    assert [(name, tuple(body[0])) for name, body, _ in published] == [
        ("keys.tasks.validate_registration", (registration.pk, "manual")),
        ("keys.tasks.validate_registration", (registration.pk, "periodic")),
    ]
    assert_no_canary(repr(published), "the published Celery messages")
    broker_text, queued = _redis_text(broker)
    assert queued >= 1 and "keys.tasks.validate_registration" in broker_text
    assert_no_canary(broker_text, "the broker's Redis database")
    if settings.REDIS_URL:  # the rate limiter's buckets live there
        app_text, _ = _redis_text(settings.REDIS_URL)
        assert_no_canary(app_text, "the app's Redis database")


# --- Error reports --------------------------------------------------------------------


def _boom(*args, **kwargs):
    raise RuntimeError("forced failure for the role canary")


def test_it_keeps_the_role_credentials_out_of_the_error_report_of_a_failed_validation(
    role_mode_in_use, monkeypatch, console
):
    """GIVEN role mode in the embedded default (no broker: "Validate again" validates inside
    the web request) WHEN the validation fails unexpectedly right after AssumeRole, with the
    temporary credentials in its frames THEN the 500 report mailed to ADMINS and Django's
    reporter output (text, HTML, the mail's HTML) hold none of them."""
    client, environment, registration = (role_mode_in_use[k] for k in ("client", "environment", "registration"))
    captured = {}

    def keep(sender, request, **kwargs):
        captured["request"], captured["exc_info"] = request, sys.exc_info()

    monkeypatch.setattr(kms, "describe_key", _boom)
    client.raise_request_exception = False
    got_request_exception.connect(keep)
    mail.outbox.clear()
    try:
        # on_commit at once, as in production where the request's transaction commits.
        with mock.patch("django.db.transaction.on_commit", lambda func, using=None, robust=False: func()):
            response = client.post(reverse("registration_validate", args=[environment.public_id, registration.public_id]))
    finally:
        got_request_exception.disconnect(keep)

    assert response.status_code == 500
    request, exc_info = captured["request"], captured["exc_info"]
    reports = {
        "mail to ADMINS": "\n".join(m.subject + m.body + "".join(a[0] for a in m.alternatives) for m in mail.outbox),
        "reporter text": ExceptionReporter(request, *exc_info).get_traceback_text(),
        "reporter HTML": ExceptionReporter(request, *exc_info).get_traceback_html(),
        "mailed HTML": ExceptionReporter(request, *exc_info, is_email=True).get_traceback_html(),
        "written log lines": console.getvalue(),
    }
    assert len(mail.outbox) == 1 and "forced failure for the role canary" in reports["mail to ADMINS"]
    # The report shows the frames of role-mode validation, where the temporary credentials were.
    assert "in _diagnose_role" in reports["reporter text"] and "in diagnose" in reports["reporter text"]
    for name, report in reports.items():
        assert_no_canary(report, name)


def test_it_keeps_the_role_credentials_out_of_the_report_of_a_failed_data_plane_read(
    role_mode_in_use, monkeypatch, console
):
    """GIVEN the role's credentials held by this process WHEN a read fails unexpectedly inside
    the KMS call (the credentials in its frames) THEN the API answers 500 and neither the
    error line it writes nor any mail holds them."""
    monkeypatch.setattr(kms, "decrypt", _boom)
    cache.clear()
    mail.outbox.clear()

    answer = role_mode_in_use["api"].get(RECORD_KEY)

    assert answer.status_code == 500
    written = console.getvalue()
    assert "data-plane API error" in written and "RuntimeError" in written
    assert_no_canary(written, "the written log lines")
    assert_no_canary(answer.content.decode(), "the 500 answer")
    for message in mail.outbox:
        assert_no_canary(message.subject + message.body, "a mail")


def test_the_canary_search_finds_credentials_written_where_it_looks(role_mode_in_use):
    """The searches above can fail: the credentials, held by this process, are found in the
    text of a page that shows them."""
    held = sts.role_sessions.credentials(
        role_arn=role_mode_in_use["registration"].role_arn, external_id=role_mode_in_use["environment"].aws_external_id,
        session_name="x", region=REGION,
    )
    for value in (held.access_key_id, held.secret_access_key, held.session_token):
        with pytest.raises(AssertionError):
            assert_no_canary(f"<p>{value}</p>", "a page")
        with pytest.raises(AssertionError):
            assert_no_canary(base64.b64encode(value.encode()).decode(), "a page")
