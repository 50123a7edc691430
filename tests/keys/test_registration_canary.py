"""Canary: a known secret access key goes in through the registration page and must come
out nowhere: not in any database column, page, log line, audit event, admin history entry
or Django error report (docs/architecture.md, "Invariants", 1).

The KMS side is moto (in-process ``mock_aws``): the registration is validated for real, so
the validation runs and their log lines exist and are searched too.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
from collections.abc import Iterator
from unittest import mock

import boto3
import pytest
from django.contrib.admin.models import LogEntry
from django.core.signals import got_request_exception
from django.db import connection
from django.test import override_settings
from django.urls import URLPattern, reverse
from django.views.debug import ExceptionReporter
from moto import mock_aws

from keys import kms
from keys.models import AuditEvent, KeyRegistration, ValidationRun
from portal.debug import AlwaysSafeExceptionReporterFilter
from tests.aws import isolate_aws_environment

from .test_registration_views import new_url

pytestmark = pytest.mark.django_db

SECRET = "CANARYsecret/DoNotLeak+0123456789abcdefX"
ACCESS_KEY_ID = "AKIACANARY7Q2W3E4R5T"
REGION = "eu-west-1"


def needles(text: str) -> dict[str, str]:
    """The forms a value could take once stored or printed: as is, hex, base64."""
    raw = text.encode("ascii")
    return {
        "plain": text,
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "base64": base64.b64encode(raw).decode(),
        "base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


def assert_absent(text: str, where: str, value: str = SECRET) -> None:
    for form, needle in needles(value).items():
        assert needle not in text, f"{value[:4]}… found ({form}) in {where}"


@pytest.fixture
def aws(monkeypatch):
    """moto in-process; the customer's own (admin) credentials come from the environment."""
    isolate_aws_environment(monkeypatch, REGION)
    kms.clear_clients()
    with mock_aws():
        yield boto3.client("kms", region_name=REGION)
    kms.clear_clients()


@pytest.fixture
def all_loggers_at_debug(caplog) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG for the root logger and every logger created so far, including
    those that do not propagate (their records are sent to caplog's handler directly)."""
    caplog.set_level(logging.DEBUG)
    detached = []
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            caplog.set_level(logging.DEBUG, logger=name)
            if not logger.propagate:
                logger.addHandler(caplog.handler)
                detached.append(logger)
    yield caplog
    for logger in detached:
        logger.removeHandler(caplog.handler)


def dump_database() -> str:
    """Every row of every table as text; bytea both as hex and as bytes decoded latin-1."""
    lines = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor, include_views=True):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                cells = []
                for value in row:
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        raw = bytes(value)
                        cells += [raw.hex(), raw.decode("latin-1")]
                    elif isinstance(value, (dict, list)):
                        cells.append(json.dumps(value))
                    else:
                        cells.append(str(value))
                lines.append(f"{table}: " + " | ".join(cells))
    return "\n".join(lines)


@pytest.fixture
def registered(aws, client_for, alice, environment, django_capture_on_commit_callbacks, all_loggers_at_debug):
    """GIVEN a customer's KMS key and encrypted data key in (emulated) AWS
    WHEN alice registers it with the canary IAM credentials and the validation job runs
    THEN the key version is valid (which proves the credentials were used)."""
    arn = aws.create_key(KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]["Arn"]
    blob = aws.generate_data_key_without_plaintext(KeyId=arn, KeySpec="AES_256")["CiphertextBlob"]
    form = {
        "encrypted_data_key": base64.b64encode(blob).decode(),
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET,
        "kms_key_arn": arn,
        "region": REGION,
        "encryption_context": "",
    }
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(new_url(environment), form)
    assert response.status_code == 302
    registration = environment.key_registrations.get(version=2)
    registration.refresh_from_db()
    assert registration.status == KeyRegistration.Status.VALID, list(registration.validation_runs.values("checks"))
    assert ValidationRun.objects.filter(registration=registration).exists()
    return {"client": client, "form": form, "registration": registration, "environment": environment}


def test_it_keeps_the_secret_out_of_every_database_column(registered):
    dump = dump_database()
    assert "keys_keyregistration" in dump and "sealed$1$" in dump  # the dump does see the row
    assert_absent(dump, "the database")
    assert_absent(dump, "the database", ACCESS_KEY_ID)


def test_it_keeps_the_secret_out_of_every_log_line(registered, all_loggers_at_debug):
    records = [r for phase in ("setup", "call") for r in all_loggers_at_debug.get_records(phase)]
    assert records, "nothing was logged: the capture is not working"
    for record in records:
        text = f"{record.name} {record.getMessage()} {record.args!r} {record.exc_text or ''}"
        assert_absent(text, f"log record of {record.name}")
        if not record.name.startswith("botocore"):
            # botocore's DEBUG output names the access key ID in its signing scope; its
            # logger is configured at WARNING (portal/settings.py, LOGGING).
            assert_absent(text, f"log record of {record.name}", ACCESS_KEY_ID)


def test_it_keeps_the_secret_out_of_audit_events_and_admin_history(registered):
    events = list(AuditEvent.objects.filter(environment=registered["environment"]))
    assert {e.action for e in events} >= {"registration_created", "status_changed", "validation_run"}
    for event in events:
        text = json.dumps([event.before, event.after, event.message, event.actor_label, str(event)])
        assert_absent(text, f"audit event {event.action}")
        assert_absent(text, f"audit event {event.action}", ACCESS_KEY_ID)
    for entry in LogEntry.objects.all():
        text = f"{entry.object_repr} {entry.change_message} {entry.get_change_message()}"
        assert_absent(text, "an admin LogEntry")
        assert_absent(text, "an admin LogEntry", ACCESS_KEY_ID)


def test_it_keeps_the_secret_out_of_the_environment_page(registered):
    response = registered["client"].get(reverse("environment_detail", args=[registered["environment"].public_id]))
    html = response.content.decode()
    assert "••••••••••••••••4R5T" in html
    assert_absent(html, "the environment page")
    assert_absent(html, "the environment page", ACCESS_KEY_ID)


def test_it_keeps_the_secret_out_of_the_registration_page_after_an_error(registered):
    client, environment = registered["client"], registered["environment"]
    for bad in ({"region": "us-east-1a"}, {"kms_key_arn": "alias/nope"}, {"access_key_id": "ASIA" + "X" * 16}):
        response = client.post(new_url(environment), {**registered["form"], **bad})
        assert response.status_code == 200
        assert_absent(response.content.decode(), f"the registration page after the error {bad}")


def test_it_keeps_the_secret_out_of_every_keys_page_of_the_registration(registered):
    from keys.urls import urlpatterns

    registration, environment = registered["registration"], registered["environment"]
    values = {"environment_id": environment.public_id, "registration_id": registration.public_id}
    seen = 0
    for pattern in urlpatterns:
        assert isinstance(pattern, URLPattern)
        names = list(pattern.pattern.converters)
        if not set(names) <= set(values):
            continue
        response = registered["client"].get(reverse(pattern.name, kwargs={n: values[n] for n in names}))
        if response.status_code == 405:
            continue
        assert response.status_code == 200, pattern.name
        seen += 1
        assert_absent(response.content.decode(), f"the page {pattern.name}")
        assert_absent(response.content.decode(), f"the page {pattern.name}", ACCESS_KEY_ID)
    assert seen >= 2


def admin_pages(registration) -> list[str]:
    runs = ValidationRun.objects.filter(registration=registration)
    events = AuditEvent.objects.filter(registration=registration)
    return [
        reverse("admin:index"),
        reverse("admin:keys_keyregistration_changelist"),
        reverse("admin:keys_keyregistration_changelist") + "?q=4R5T",
        reverse("admin:keys_keyregistration_change", args=[registration.pk]),
        reverse("admin:keys_keyregistration_history", args=[registration.pk]),
        reverse("admin:keys_auditevent_changelist"),
        *[reverse("admin:keys_auditevent_change", args=[e.pk]) for e in events],
        reverse("admin:keys_validationrun_changelist"),
        *[reverse("admin:keys_validationrun_change", args=[r.pk]) for r in runs],
        reverse("admin:environments_environment_change", args=[registration.environment_id]),
    ]


def test_it_keeps_the_secret_out_of_every_admin_page(registered, client, django_user_model):
    staff = django_user_model.objects.create_superuser("root", "root@example.org", "x")
    client.force_login(staff)
    registration = registered["registration"]
    # The admin action support uses, so that its traces are searched as well.
    with mock.patch("keys.tasks.validate_registration.delay"):
        client.post(
            reverse("admin:keys_keyregistration_changelist"),
            {"action": "run_validation", "_selected_action": [registration.pk]},
        )
    for url in admin_pages(registration):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert_absent(html, url)
        assert_absent(html, url, ACCESS_KEY_ID)
    change = client.get(reverse("admin:keys_keyregistration_change", args=[registration.pk])).content.decode()
    assert "••••••••••••••••4R5T" in change
    assert ">set<" in change  # the secret access key: "set", never its value


# --- Django's error report ----------------------------------------------------------


def _boom(*args, **kwargs):
    raise RuntimeError("forced failure for the error report test")


FORCED_FAILURES = {
    # Inside the registration service, while the unsealed credentials are in its frame.
    "in the service": "keys.services.registrations.audit",
    # In the view, after the service returned, with the cleaned form data in its frame.
    "in the view": "keys.views.registration.redirect",
    # While the form is checked: the secret is already in cleaned_data.
    "in the form": "keys.forms.parsers.parse_region",
}


@pytest.mark.parametrize("where", FORCED_FAILURES)
def test_it_keeps_the_secret_out_of_the_debug_error_report(client_for, alice, environment, where):
    """GIVEN DEBUG on and a failure forced inside the registration view
    WHEN Django renders its technical 500 page and the report it would mail to admins
    THEN neither shows the secret access key (or the access key ID): sensitive_post_parameters
    cleanses request.POST and sensitive_variables the frames' local variables."""
    captured = {}

    def keep(sender, request, **kwargs):
        captured["request"] = request
        captured["exc_info"] = sys.exc_info()

    form = {
        "encrypted_data_key": base64.b64encode(b"k" * 36 + bytes(range(60))).decode(),
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET,
        "kms_key_arn": "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "region": REGION,
        "encryption_context": "",
    }
    client = client_for(alice)
    client.raise_request_exception = False
    got_request_exception.connect(keep)
    try:
        with override_settings(DEBUG=True), mock.patch(FORCED_FAILURES[where], _boom):
            response = client.post(new_url(environment), form, HTTP_ACCEPT="text/html")
            request, exc_info = captured["request"], captured["exc_info"]
            reports = {
                "technical 500 page": response.content.decode(),
                "ExceptionReporter HTML": ExceptionReporter(request, *exc_info).get_traceback_html(),
                "ExceptionReporter text": ExceptionReporter(request, *exc_info).get_traceback_text(),
                "mailed report": ExceptionReporter(request, *exc_info, is_email=True).get_traceback_html(),
            }
            # The decorators alone, without any redaction by the shape of a secret: Django's
            # filter made active with DEBUG on (portal.debug), set on this request only.
            request.exception_reporter_filter = AlwaysSafeExceptionReporterFilter()
            reports["sensitive_variables/sensitive_post_parameters only (HTML)"] = ExceptionReporter(
                request, *exc_info
            ).get_traceback_html()
            reports["sensitive_variables/sensitive_post_parameters only (text)"] = ExceptionReporter(
                request, *exc_info
            ).get_traceback_text()
    finally:
        got_request_exception.disconnect(keep)

    assert response.status_code == 500
    for name, report in reports.items():
        assert "forced failure for the error report test" in report, name
        assert "secret_access_key" in report, name  # the POST section is there, cleansed
        assert_absent(report, name)
        assert_absent(report, name, ACCESS_KEY_ID)
    assert KeyRegistration.objects.filter(environment=environment, version=2).exists() is (where == "in the view")
