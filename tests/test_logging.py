"""Structured logs (portal/logging.py, portal/middleware.py, settings.LOGGING).

* One JSON object per line: time, level, logger, message, request_id, extra fields.
* A request id per request: a sane incoming ``X-Request-ID`` is kept, anything else
  replaced; it is on every line logged during the request and on the response.
* Redaction: anything shaped like an AWS secret access key, an AWS access key ID (last four
  kept), a base64 data key, an API key or a sealed value is rewritten in the message, its
  arguments, extra fields and exception text.
* Canary: known secrets fed through every log call site of the project (found by reading
  the source) and through real failing code paths never reach the formatted output of the
  configured handlers (the JSON console and the mails to ADMINS).
"""

from __future__ import annotations

import ast
import base64
import io
import json
import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from portal import logging as portal_logging
from portal.logging import REDACTED, JsonFormatter, RedactingFilter, redact

ROOT = Path(__file__).resolve().parent.parent

AWS_SECRET = "CANARYsecret/DoNotLeak+0123456789abcdefX"
ACCESS_KEY_ID = "AKIACANARY7Q2W3E4R5T"
DATA_KEY = base64.b64encode(b"canary data key: 32 bytes long!!").decode()
API_KEY = "byok_0a1b2c3d_" + "CANARYapiKEYsecretPart_0123456789-abcdefghi"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjECANARY/sessionToken+" + "A1b2" * 100 + "=="
SEALED = "sealed$1$k1$Q0FOQVJZbm9uY2Ux$Q0FOQVJZY2lwaGVydGV4dC1ub3QtZm9yLWV5ZXMtMDEyMzQ1Njc4OQ"
CANARIES = f"{AWS_SECRET} {ACCESS_KEY_ID} {DATA_KEY} {API_KEY} {SEALED}"
# What must never appear (an access key ID keeps its type prefix and last four characters).
NEEDLES = {
    "AWS secret access key": AWS_SECRET,
    "AWS access key ID": "CANARY7Q2W3E",
    "data key": DATA_KEY.rstrip("="),
    "API key secret": "CANARYapiKEYsecretPart",
    "sealed value": "Q0FOQVJZY2lwaGVydGV4dC1ub3Q",
}


def assert_no_canary(text: str, where: str) -> None:
    for what, needle in NEEDLES.items():
        assert needle not in text, f"the {what} canary leaked into {where}"


def test_the_canaries_have_the_shapes_they_stand_for():
    assert len(AWS_SECRET) == 40 and re.fullmatch(r"[A-Za-z0-9/+]{40}", AWS_SECRET)
    assert len(base64.b64decode(DATA_KEY)) == 32 and len(DATA_KEY) == 44
    assert len(API_KEY.split("_")[2]) >= 43 or len(API_KEY) > 50


# ---------------------------------------------------------------------------
# Redaction
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"secret={AWS_SECRET}", f"secret={REDACTED}"),
        (f"key {ACCESS_KEY_ID} used", "key AKIA************4R5T used"),
        ("temporary ASIAQWERTYUIOPASDFGH", "temporary ASIA************DFGH"),
        (f"data key {DATA_KEY}.", f"data key {REDACTED}."),
        (f"Authorization: Bearer {API_KEY}", f"Authorization: Bearer byok_0a1b2c3d_{REDACTED}"),
        (f"stored {SEALED} ok", f"stored sealed$1$k1${REDACTED} ok"),
        ("SEALING_KEYS=k1:" + DATA_KEY, f"SEALING_KEYS=k1:{REDACTED}"),
        (f"'{AWS_SECRET}'", f"'{REDACTED}'"),
        # STS session tokens, where botocore (DEBUG) and Python name them.
        (f"<SessionToken>{SESSION_TOKEN}</SessionToken>", f"<SessionToken>{REDACTED}</SessionToken>"),
        (f"{{'X-Amz-Security-Token': b'{SESSION_TOKEN}'}}", f"{{'X-Amz-Security-Token': b'{REDACTED}'}}"),
        (f"host:kms\nx-amz-security-token:{SESSION_TOKEN}\n", f"host:kms\nx-amz-security-token:{REDACTED}\n"),
        (f"?X-Amz-Security-Token={SESSION_TOKEN}%2B&a=1", f"?X-Amz-Security-Token={REDACTED}&a=1"),
        (f'{{"SessionToken": "{SESSION_TOKEN}"}}', f'{{"SessionToken": "{REDACTED}"}}'),
        (f"session_token='{SESSION_TOKEN}'", f"session_token='{REDACTED}'"),
    ],
)
def test_it_redacts_each_shape_of_secret(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",  # a SHA-1 hex digest: lower case only
        "registration 42 of environment 7f9c1f8e-3b1a-4d8e-9a51-2b6f0f3c9d11",
        "/admin/keys/keyregistration/123/change/",
        "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "byok_0a1b2c3d_… (prefix only)",
        "AKIA1234",
    ],
)
def test_it_leaves_ordinary_text_alone(text):
    assert redact(text) == text


def _record(msg, *args, exc_info=None, **extra) -> logging.LogRecord:
    record = logging.LogRecord("keys.test", logging.WARNING, __file__, 1, msg, args or None, exc_info)
    for name, value in extra.items():
        setattr(record, name, value)
    return record


def test_it_redacts_the_message_its_arguments_extras_and_the_exception():
    try:
        raise ValueError(f"boom {AWS_SECRET}")
    except ValueError:
        import sys

        exc_info = sys.exc_info()
    record = _record("creds %s / %r", ACCESS_KEY_ID, {"secret": AWS_SECRET}, exc_info=exc_info, detail=[API_KEY])

    RedactingFilter().filter(record)
    line = JsonFormatter().format(record)

    assert_no_canary(line, "the formatted line")
    entry = json.loads(line)
    assert entry["message"] == f"creds AKIA************4R5T / {{'secret': '{REDACTED}'}}"
    assert entry["detail"] == [f"byok_0a1b2c3d_{REDACTED}"]
    assert "ValueError: boom [REDACTED]" in entry["exception"]


def test_it_keeps_a_record_whose_arguments_do_not_fit_its_format():
    record = _record("two %s %s", AWS_SECRET)
    assert RedactingFilter().filter(record)
    assert_no_canary(record.getMessage(), "the message")


# ---------------------------------------------------------------------------
# JSON lines and request ids
# ---------------------------------------------------------------------------


def _lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_it_writes_one_json_object_per_line_with_the_standard_fields(console):
    logging.getLogger("keys.anything").warning("hello %s", "world", extra={"registration_id": 7})

    (entry,) = [e for e in _lines(console) if e["logger"] == "keys.anything"]
    assert entry["message"] == "hello world"
    assert entry["level"] == "WARNING"
    assert entry["registration_id"] == 7
    assert entry["request_id"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["time"])


@pytest.mark.django_db
def test_it_gives_each_request_an_id_in_the_response_and_every_log_line(console, client):
    response = client.get(reverse("login"))

    request_id = response["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    entries = [e for e in _lines(console) if e["request_id"] == request_id]
    (access,) = [e for e in entries if e["logger"] == "portal.request"]
    assert access["status"] == 200 and access["path"] == reverse("login") and access["method"] == "GET"
    assert client.get(reverse("login"))["X-Request-ID"] != request_id


@pytest.mark.django_db
def test_it_keeps_a_sane_incoming_request_id(client):
    incoming = "edge-" + uuid.uuid4().hex
    assert client.get(reverse("login"), HTTP_X_REQUEST_ID=incoming)["X-Request-ID"] == incoming


@pytest.mark.django_db
@pytest.mark.parametrize(
    "incoming", ["short", "x" * 129, "id with spaces 123", 'quote"injected1', "line\nbreak-12345", "日本語のリクエスト"]
)
def test_it_replaces_an_incoming_request_id_that_is_not_sane(client, incoming):
    response = client.get(reverse("login"), HTTP_X_REQUEST_ID=incoming)
    assert response["X-Request-ID"] != incoming
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


# ---------------------------------------------------------------------------
# Canary: every log call site of the project, and real failing code paths
# ---------------------------------------------------------------------------

LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
SOURCE_DIRS = ("portal", "environments", "keys")


@dataclass(frozen=True)
class CallSite:
    path: str
    line: int
    logger: str
    level: str
    message: str


def _module_loggers(tree: ast.Module, module: str) -> dict[str, str]:
    """``{"log": "keys.api.views"}`` for module-level ``log = logging.getLogger(__name__ | "name")``."""
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Attribute) and func.attr == "getLogger" and node.value.args:
                arg = node.value.args[0]
                name = module if isinstance(arg, ast.Name) and arg.id == "__name__" else getattr(arg, "value", None)
                for target in node.targets:
                    if isinstance(target, ast.Name) and isinstance(name, str):
                        names[target.id] = name
    return names


def log_call_sites() -> list[CallSite]:
    """Every ``<logger>.<level>(…)`` call in the project's own modules."""
    sites = []
    for directory in SOURCE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            relative = path.relative_to(ROOT)
            module = ".".join(relative.with_suffix("").parts)
            tree = ast.parse(path.read_text())
            loggers = _module_loggers(tree, module)
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LEVELS
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in loggers
                ):
                    first = node.args[0] if node.args else None
                    message = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else "%s"
                    sites.append(CallSite(str(relative), node.lineno, loggers[node.func.value.id], node.func.attr, message))
    return sites


CALL_SITES = log_call_sites()


def test_it_finds_the_log_call_sites_of_the_project():
    loggers = {site.logger for site in CALL_SITES}
    assert {"keys.api.views", "keys.services.records", "portal.request"} <= loggers, loggers


@pytest.mark.parametrize("site", CALL_SITES, ids=lambda s: f"{s.path}:{s.line}")
def test_it_keeps_the_canary_out_of_each_log_call_site(console, site):
    """The call site's logger, level and format, with every argument and an extra field
    holding the canaries, inside an exception whose message holds them too."""
    logger = logging.getLogger(site.logger)
    placeholders = len(re.findall(r"%[sdrifx]", site.message.replace("%%", "")))
    args = tuple(CANARIES if "%s" in site.message or "%r" in site.message else 1 for _ in range(placeholders))
    message = site.message if placeholders else site.message + " %s"
    args = args or (CANARIES,)
    try:
        raise RuntimeError(f"forced failure with {CANARIES}")
    except RuntimeError:
        level = "error" if site.level == "exception" else site.level
        getattr(logger, level)(message, *args, exc_info=True, extra={"canary": CANARIES, "nested": {"k": [CANARIES]}})

    output = console.getvalue()
    assert site.logger in output, "the line was not written"
    assert "[REDACTED]" in output
    assert_no_canary(output, f"the log line of {site.path}:{site.line}")


@pytest.fixture
def mails_to_admins(settings):
    settings.ADMINS = [("Ops", "ops@example.org")]
    return mail.outbox


@pytest.mark.django_db
def test_it_keeps_the_canary_out_of_a_server_error_log_and_the_mail_to_admins(
    console, mails_to_admins, alice, client, monkeypatch
):
    """GIVEN a portal view that fails with secrets in its message and its local variables
    WHEN Django logs the 500 (django.request) and mails ADMINS
    THEN neither the JSON line nor the mail holds a canary."""

    def explode(request, *args, **kwargs):
        secret_access_key = AWS_SECRET  # noqa: F841  (in the frame, as a view would hold it)
        raise RuntimeError(f"forced failure with {CANARIES}")

    monkeypatch.setattr("environments.views.selectors.memberships_for_user", explode)
    client.raise_request_exception = False
    client.force_login(alice)

    response = client.get(reverse("home"), {"q": AWS_SECRET})

    assert response.status_code == 500
    output = console.getvalue()
    assert '"logger": "django.request"' in output and "forced failure" in output
    assert_no_canary(output, "the log")
    assert len(mails_to_admins) == 1
    message = mails_to_admins[0]
    assert "forced failure" in message.body
    assert_no_canary(message.subject + message.body + "".join(str(a) for a in message.alternatives), "the mail")


@pytest.mark.django_db
def test_it_keeps_the_canary_out_of_the_data_plane_apis_error_log(console, environment, alice, monkeypatch):
    from keys.services import api_keys, records

    _, api_key = api_keys.api_key_create(environment=environment, name="canary", actor=alice)

    def explode(**kwargs):
        raise RuntimeError(f"forced failure with {CANARIES}")

    monkeypatch.setattr(records, "record_read", explode)
    response = Client().get(
        f"/api/v1/environments/{environment.public_id}/records/{ACCESS_KEY_ID}",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )

    assert response.status_code == 500
    output = console.getvalue()
    assert "data-plane API error" in output
    assert_no_canary(output, "the API's log")
    assert api_key.split("_", 2)[2] not in output


@pytest.mark.django_db
def test_it_keeps_the_canary_out_of_the_data_planes_inaccessible_log(console, environment, monkeypatch):
    from keys import kms
    from keys.services import records

    registration = environment.key_registrations.get()
    error = kms.KmsPermanentError(
        reason=CANARIES, code="AccessDeniedException", http_status=400, operation="Decrypt", message=CANARIES
    )

    def fail(**kwargs):
        raise RuntimeError(f"forced failure with {CANARIES}")

    monkeypatch.setattr("keys.services.validation.registration_mark_inaccessible", fail)
    if hasattr(records, "registration_mark_inaccessible"):  # imported at module level
        monkeypatch.setattr(records, "registration_mark_inaccessible", fail)
    records._mark_inaccessible(registration, error)

    output = console.getvalue()
    assert "marking it inaccessible" in output and "could not mark registration" in output
    assert_no_canary(output, "the data plane's log")


@pytest.mark.django_db
def test_it_keeps_the_canary_out_of_the_access_log_of_a_path_holding_one(console, client):
    client.get(f"/environments/{ACCESS_KEY_ID}/{AWS_SECRET}/")
    output = console.getvalue()
    assert '"logger": "portal.request"' in output
    assert_no_canary(output, "the access log")


@pytest.mark.django_db
@pytest.mark.parametrize("prefix", ["/v1", "/apiv1/v1", "/api;x/v1", "", "/api%20/v1"])
def test_it_keeps_record_keys_of_mistyped_api_paths_out_of_the_portals_log_lines(console, client, settings, prefix):
    """A client with a wrong base URL reaches the portal's handler, which logs the path
    (portal.request, and django.request's "Not Found"): whatever follows /records/ is
    left out (found by a newcomer trial, which saw the key in both lines)."""
    settings.ADMINS = [("Ops", "ops@example.org")]
    key = "national-id:canary-7c41d2"
    response = client.get(f"{prefix}/environments/1f9e/records/{key}", HTTP_AUTHORIZATION="Bearer byok_x")
    batch = client.get(f"{prefix}/environments/1f9e/records/batch")

    assert response.status_code == batch.status_code == 404
    output = console.getvalue()
    assert '"logger": "portal.request"' in output and '"logger": "django.request"' in output
    assert "/records/\u2026" in output or "/records/…" in output
    assert "/records/batch" in output  # a route, not a key: kept
    assert "canary-7c41d2" not in output


def test_it_redacts_through_the_handlers_settings_configure():
    from django.conf import settings

    handlers = settings.LOGGING["handlers"]
    for name, handler in handlers.items():
        assert "redact" in handler.get("filters", []), f"handler {name} does not redact"
    assert portal_logging.RedactingFilter.__module__ == "portal.logging"


def test_it_redacts_a_celery_workers_own_log_handlers():
    """A worker logs through the handlers Celery installs (text lines); portal/celery.py
    gives them the same filters on Celery's after_setup_logger signal."""
    from celery.signals import after_setup_logger

    import portal.celery  # noqa: F401  (connects the receivers)

    logger = logging.Logger("celery-worker-test")
    buffer = io.StringIO()
    logger.addHandler(logging.StreamHandler(buffer))
    after_setup_logger.send(sender=None, logger=logger, loglevel=logging.INFO, logfile=None, format="", colorize=False)

    logger.warning("task failed: %s", CANARIES)

    assert "task failed" in buffer.getvalue()
    assert_no_canary(buffer.getvalue(), "a worker's log")


# ---------------------------------------------------------------------------
# The development server's request lines (make run): no record key
# ---------------------------------------------------------------------------

RECORD_KEY_CANARY = "customer:CANARY-record-key-42"


def _runserver_logs(requestline: str, status: str) -> None:
    """What ``manage.py runserver`` does after answering a request (Django's
    ``WSGIRequestHandler.log_message``, called by ``http.server``'s ``log_request``)."""
    from django.core.servers.basehttp import WSGIRequestHandler

    handler = WSGIRequestHandler.__new__(WSGIRequestHandler)
    handler.request = None
    handler.requestline = requestline
    handler.log_message('"%s" %s %s', requestline, status, "15")


@pytest.mark.parametrize(("requestline", "status", "logged"), [
    (f"PUT /api/v1/environments/env_1/records/{RECORD_KEY_CANARY} HTTP/1.1", "200",
     '"PUT /api/v1/environments/env_1/records/\u2026 HTTP/1.1" 200 15'),
    (f"GET /api/v1/environments/env_1/records/{RECORD_KEY_CANARY}/a b\"c?x={RECORD_KEY_CANARY} HTTP/1.1", "404",
     '"GET /api/v1/environments/env_1/records/\u2026?\u2026 HTTP/1.1" 404 15'),
    ("POST /api/v1/environments/env_1/records/batch HTTP/1.1", "200",
     '"POST /api/v1/environments/env_1/records/batch HTTP/1.1" 200 15'),
    ("GET /environments/env_1/ HTTP/1.1", "200", '"GET /environments/env_1/ HTTP/1.1" 200 15'),
])
def test_it_keeps_record_keys_out_of_the_development_servers_request_lines(console, requestline, status, logged):
    _runserver_logs(requestline, status)
    [line] = [entry for entry in _lines(console) if entry["logger"] == "django.server"]
    assert line["message"] == logged
    assert "CANARY" not in console.getvalue()


def test_it_keeps_record_keys_out_of_the_development_servers_bad_request_lines(console):
    """``http.server`` logs a request it cannot parse as ``code 400, message Bad request
    syntax ('<raw line>')``, through the same ``log_message``."""
    from django.core.servers.basehttp import WSGIRequestHandler

    handler = WSGIRequestHandler.__new__(WSGIRequestHandler)
    handler.request = None
    handler.requestline = ""
    handler.log_message("code %d, message %s", 400,
                        f"Bad request syntax ('PUT /api/v1/environments/env_1/records/{RECORD_KEY_CANARY}')")
    assert "CANARY" not in console.getvalue()
    assert "/records/\u2026" in console.getvalue()


def test_the_console_fixture_gives_every_handler_its_stream_back():
    """A handler shared by two loggers (root and django.server) once came back writing to
    None, and every later test printed "Logging error"."""
    from tests.conftest import json_console_to

    handlers = {
        id(h): h
        for logger in [logging.getLogger(), logging.getLogger("django.server")]
        for h in logger.handlers
        # The project's JSON console (pytest adds handlers of its own, such as a log file
        # handler whose stream is None once closed).
        if type(h) is logging.StreamHandler and isinstance(h.formatter, JsonFormatter)
    }
    before = {key: h.stream for key, h in handlers.items()}
    assert {id(h) for h in logging.getLogger("django.server").handlers} & set(handlers)
    buffer = io.StringIO()
    with json_console_to(buffer):
        logging.getLogger("django.server").warning("through the buffer")
    assert "through the buffer" in buffer.getvalue()
    assert {key: h.stream for key, h in handlers.items()} == before
    assert all(stream is not None for stream in before.values())
