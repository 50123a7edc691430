"""Django's error reports (technical 500 page, mails to ADMINS) never carry a secret
(portal/reporting.py): settings cleansed by name, frame variables, POST fields and headers
by the shape of what they hold, and the finished report once more."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.signals import got_request_exception
from django.test import RequestFactory, override_settings
from django.urls import path
from django.views.debug import ExceptionReporter, get_exception_reporter_class, get_exception_reporter_filter

from portal.reporting import RedactingExceptionReporter, RedactingExceptionReporterFilter
from tests.test_logging import ACCESS_KEY_ID, API_KEY, AWS_SECRET, CANARIES, DATA_KEY, SEALED, assert_no_canary

ROOT = Path(__file__).resolve().parent.parent


def _fail_with_secrets_in_scope():
    """Raise while secrets sit in local variables that no one marked sensitive."""
    credentials = {"access_key_id": ACCESS_KEY_ID, "secret_access_key": AWS_SECRET}  # noqa: F841
    data_key_b64 = DATA_KEY  # noqa: F841
    api_key, sealed = API_KEY, SEALED  # noqa: F841
    raise RuntimeError("forced failure for the reporter test")


def _exc_info():
    try:
        _fail_with_secrets_in_scope()
    except RuntimeError:
        return sys.exc_info()


@pytest.fixture
def request_with_secrets():
    return RequestFactory().post(
        "/environments/x/keys/new/",
        {"secret_access_key": AWS_SECRET, "access_key_id": ACCESS_KEY_ID, "comment": f"mine: {DATA_KEY}"},
        HTTP_AUTHORIZATION=f"Bearer {API_KEY}",
        HTTP_X_DEBUG_NOTE=SEALED,
    )


def test_it_is_the_configured_filter_and_reporter(rf):
    request = rf.get("/")
    assert isinstance(get_exception_reporter_filter(request), RedactingExceptionReporterFilter)
    assert get_exception_reporter_class(request) is RedactingExceptionReporter


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("report", ["text", "html", "mail html"])
def test_it_keeps_secrets_in_scope_out_of_djangos_own_reporter(request_with_secrets, report, debug):
    """Django's ExceptionReporter itself (not our subclass): the filter alone must do it."""
    with override_settings(DEBUG=debug):
        reporter = ExceptionReporter(request_with_secrets, *_exc_info(), is_email=report == "mail html")
        text = reporter.get_traceback_text() if report == "text" else reporter.get_traceback_html()

    assert "forced failure for the reporter test" in text
    if report != "text":  # the HTML lists frame variables and POST fields, cleansed
        assert "credentials" in text and "secret_access_key" in text
    assert_no_canary(text, f"the {report} report")


@pytest.mark.parametrize("report", ["text", "html"])
def test_it_keeps_secrets_in_the_message_and_url_out_of_the_configured_reporter(rf, report):
    """Django's reporter shows the exception message and the URL's query unfiltered; the
    configured reporter redacts its finished output."""
    request = rf.get("/?q=" + AWS_SECRET)
    try:
        raise ValueError(f"cannot use {CANARIES}")
    except ValueError:
        reporter = get_exception_reporter_class(request)(request, *sys.exc_info())
    text = reporter.get_traceback_text() if report == "text" else reporter.get_traceback_html()

    assert "cannot use" in text
    assert_no_canary(text, f"the {report} report")


def test_it_hides_sealing_keys_database_email_and_broker_settings():
    safe = RedactingExceptionReporterFilter().get_safe_settings()
    cleansed = RedactingExceptionReporterFilter.cleansed_substitute
    for name in ("SEALING_KEYS", "DATABASES", "SECRET_KEY", "EMAIL_CONFIG", "EMAIL_HOST_PASSWORD",
                 "CELERY_BROKER_URL", "REDIS_URL", "ADMINS"):
        assert safe[name] == cleansed, name
    for name in ("TIME_ZONE", "REVALIDATION_INTERVAL_SECONDS"):
        assert safe[name] != cleansed, name


def _secret_view(request):
    secret_access_key = request.POST.get("secret_access_key")  # noqa: F841
    raise RuntimeError(f"forced failure in a view {ACCESS_KEY_ID}")


urlpatterns = [path("boom/", _secret_view)]


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__, DEBUG=True)
def test_it_keeps_secrets_out_of_the_technical_500_page(client):
    captured = {}

    def keep(sender, request, **kwargs):
        captured["exc_info"] = sys.exc_info()
        captured["request"] = request

    client.raise_request_exception = False
    got_request_exception.connect(keep)
    try:
        response = client.post("/boom/", {"secret_access_key": AWS_SECRET, "note": DATA_KEY}, HTTP_ACCEPT="text/html")
    finally:
        got_request_exception.disconnect(keep)

    assert response.status_code == 500
    page = response.content.decode()
    assert "forced failure in a view" in page
    assert_no_canary(page, "the technical 500 page")
    mailed = RedactingExceptionReporter(captured["request"], *captured["exc_info"], is_email=True)
    assert_no_canary(mailed.get_traceback_text() + mailed.get_traceback_html(), "the mailed report")


def test_it_leaves_frame_variables_without_secrets_as_they_are(rf):
    ordinary = {"region": "eu-west-1", "version": 3}
    holding = f"secret={AWS_SECRET}"  # noqa: F841
    frame = sys._getframe()

    variables = dict(RedactingExceptionReporterFilter().get_traceback_frame_variables(rf.get("/"), frame))

    assert variables["ordinary"] is ordinary
    assert variables["holding"] == "secret=[REDACTED]"


def _settings_in_subprocess(code: str, **overrides: str) -> str:
    env = {**os.environ, "DEBUG": "false", "SECRET_KEY": "s" * 50, "ALLOWED_HOSTS": "x.example",
           "SEALING_KEYS": "k1:" + "A" * 43 + "=", **overrides}
    result = subprocess.run(
        [sys.executable, "-c", f"import portal.settings as s; print({code})"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_it_reads_admins_from_the_environment():
    assert _settings_in_subprocess("s.ADMINS", ADMINS="Ops Team <ops@example.org>,sec@example.org") == (
        "[('Ops Team', 'ops@example.org'), ('', 'sec@example.org')]"
    )
    assert _settings_in_subprocess("s.ADMINS", ADMINS="") == "[]"
