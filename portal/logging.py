"""Structured logs: one JSON object per line, a request id on every line, secrets redacted.

``settings.LOGGING`` wires these in::

    handler --filters--> RequestIdFilter (adds ``request_id``)
                         RedactingFilter (rewrites message, args, exception text, extras)
            --formatter--> JsonFormatter

The filters sit on the *handlers*, so every record a handler writes is redacted, whatever
logger it came from (including loggers that do not propagate). Redaction is a last line of
defence: code must still not log secrets (docs/architecture.md, "Invariants", 1). It rewrites anything
shaped like one of these (see ``SECRET_PATTERNS``):

=============================  ==========================================  ==================
what                           shape                                       becomes
=============================  ==========================================  ==================
sealed value                   ``sealed$1$<key_id>$<nonce>$<ciphertext>``  ``sealed$1$<key_id>$[REDACTED]``
API key                        ``byok_<8 hex>_<43 base64url>``             ``byok_<8 hex>_[REDACTED]``
base64 of 32 bytes (data key)  44 characters ending ``=``                  ``[REDACTED]``
AWS access key ID              ``AKIA``/``ASIA`` + 16                      ``AKIA************WXYZ``
AWS session token (STS)        its value after a name that carries it:     ``<SessionToken>[REDACTED]``
                               ``<SessionToken>``, ``X-Amz-Security-Token``
                               (header, canonical request, query),
                               ``SessionToken``/``session_token`` ``=``/``:``
AWS secret access key          40 characters of ``[A-Za-z0-9/+]``          ``[REDACTED]``
=============================  ==========================================  ==================

The request id lives in a context variable set by ``portal.middleware.RequestIdMiddleware``.
A Celery task carries the id of the request that enqueued it in a message header
(``before_task_publish``) and the worker sets the variable from it while the task runs
(``task_prerun`` / ``task_postrun``); the worker logs through ``settings.LOGGING`` too
(``setup_logging``), so its lines are the same JSON, with ``task_id`` and ``task_name``.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import logging.config
import re
import traceback
from collections.abc import Callable
from typing import Any

from django.conf import settings

REDACTED = "[REDACTED]"

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
# The portal request being handled (set beside request_id_var), whose sensitive POST fields
# are scrubbed from every line written meanwhile, also by loggers that do not attach it
# (django.template's DEBUG lines while the 500 report renders, for one).
request_var: contextvars.ContextVar[Any] = contextvars.ContextVar("request", default=None)
# (task id, task name) of the Celery task this worker thread runs, None outside one.
task_var: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("celery_task", default=None)
# The Celery message header that carries the request id from the web process to the worker.
REQUEST_ID_HEADER = "request_id"


def _mask_access_key_id(match: re.Match) -> str:
    # The prefix says what kind of key it is (AKIA long-term, ASIA temporary) and the last
    # four tell keys apart, as the portal shows them; the twelve between stay hidden.
    value = match.group(0)
    return value[:4] + "*" * 12 + value[-4:]


def _redact_aws_secret(match: re.Match) -> str:
    value = match.group(0)
    # Lower-case-only (hex digests, URL paths) or upper-case-only runs are not AWS secret
    # access keys: a random 40-character secret lacks either case with probability ~1e-9.
    if value.lower() == value or value.upper() == value:
        return value
    return REDACTED


# Order matters: sealed values and API keys first (their base64url parts may contain runs the
# later patterns would eat in part), the 44-character data key before the 40-character secret.
SECRET_PATTERNS: list[tuple[re.Pattern[str], str | Callable[[re.Match], str]]] = [
    (re.compile(r"(sealed\$\d+\$[A-Za-z0-9_-]{1,32}\$)[A-Za-z0-9_\-$=]+"), r"\1" + REDACTED),
    (re.compile(r"\b(byok_[0-9a-f]{8}_)[A-Za-z0-9_-]+"), r"\1" + REDACTED),
    # STS session tokens are long base64 with no shape of their own: found by what names them,
    # as botocore writes them at DEBUG (the AssumeRole response body, the signed request's
    # X-Amz-Security-Token header and canonical request) and as Python names them.
    (
        re.compile(
            r"(?i)((?:x-amz-security-token|session_?token)['\"]?\s*(?:[:=]|>)\s*b?['\"]?)[A-Za-z0-9+/=%]{16,}"
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{43}=(?![A-Za-z0-9+/=_-])"), REDACTED),
    (re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"), _mask_access_key_id),
    # "/" is both in the alphabet and the path separator: a secret may stand between two
    # slashes (a URL path) or after "=" (key=value), so neither blocks a match.
    (re.compile(r"(?<![A-Za-z0-9+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9+=])"), _redact_aws_secret),
]


# What every pattern of SECRET_PATTERNS needs somewhere in the text: "sealed$", "byok_",
# "AKIA"/"ASIA", or a run of 40 characters of the base64 alphabets (the data key's 43 + "=",
# the AWS secret's 40). Text without any of them is returned as it is after this one search
# instead of five (most log lines: an access line costs 63 µs with five, issue 12).
_MAY_HOLD_A_SECRET = re.compile(r"sealed\$|byok_|AKIA|ASIA|[A-Za-z0-9+/_-]{40}")


def redact(text: str) -> str:
    """``text`` with everything shaped like a secret (``SECRET_PATTERNS``) rewritten."""
    text = str(text)  # also lazy strings, which pass isinstance(…, str)
    if not _MAY_HOLD_A_SECRET.search(text):
        return text
    for pattern, replacement in SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# Posted values shorter than this are not scrubbed from reports: replacing "1" or "ok"
# everywhere would garble a report and hide nothing that identifies anyone.
MIN_SCRUBBED_LENGTH = 4


def sensitive_posted_values(request: Any) -> list[str]:
    """The raw values of the POST fields that ``request``'s view marked with
    ``sensitive_post_parameters`` (all of them for ``@sensitive_post_parameters()``), longest
    first, at least ``MIN_SCRUBBED_LENGTH`` characters; ``[]`` for anything else (no request,
    no mark, a body that cannot be parsed). Customer data such as the "Try it" page's record
    key and body has no shape to redact by: it is scrubbed by value."""
    names = getattr(request, "sensitive_post_parameters", None)
    if not names:
        return []
    try:
        posted = request.POST.lists()
    except Exception:  # an unreadable body: nothing of it reached the report either
        return []
    values = {v for name, vs in posted if names == "__ALL__" or name in names for v in vs if isinstance(v, str)}
    return sorted((v for v in values if len(v) >= MIN_SCRUBBED_LENGTH), key=len, reverse=True)


def scrub(text: str, values: list[str]) -> str:
    """``text`` with every occurrence of each of ``values`` replaced by ``[REDACTED]``."""
    for value in values:
        text = text.replace(value, REDACTED)
    return text


def redact_value(value: Any) -> Any:
    """Strings redacted; lists, tuples and dicts walked; other objects redacted through
    their ``repr`` only when it holds something secret-shaped (else returned as they are)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [redact_value(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break logging
        return f"<unrepresentable {type(value).__name__}>"
    redacted = redact(text)
    return value if redacted == text else redacted


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message", "asctime", "request_id", "taskName",
}


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` from the current request (``None`` outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get()
        task = task_var.get()
        if task is not None and not hasattr(record, "task_id"):
            record.task_id, record.task_name = task
        return True


class RedactingFilter(logging.Filter):
    """Rewrites secret-shaped text in the record's message, arguments, exception and stack
    text and ``extra`` fields, and the values of sensitive POST fields of the record's
    request (``sensitive_posted_values``). Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # wrong arguments for the format: keep what we can, redacted
            message = f"{record.msg!r} % {record.args!r}"
        # What the request's view marked sensitive goes too (Django's request loggers attach
        # the request; other lines written while it runs find it in request_var).
        posted = sensitive_posted_values(getattr(record, "request", None) or request_var.get())
        record.msg, record.args = redact(scrub(message, posted)), None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(scrub(record.exc_text, posted))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRIBUTES:
                setattr(record, name, redact_value(value))
        return True


# The development server's request line, ``"PUT /api/v1/environments/<id>/records/<key> HTTP/1.1"``:
# the target is whatever lies between the method and the last `` HTTP/x.y"`` (a record key is a
# ``<path:…>`` and, unencoded, may hold anything, even a space or a quote).
_SERVER_REQUEST_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>/api/.*) (?P<version>HTTP/\d(?:\.\d)?)"')
# The data plane's own routes under /records/ (keys/api/views.py), which hold no record key.
_RECORD_ROUTES = frozenset({"batch", "find"})
# Any path with a record key in it, API or not: a client with a wrong base URL
# (``/v1/environments/<id>/records/<key>``, ``/apiv1/…``) reaches the portal's handler, which
# logs the path (``portal.request``, ``django.request``'s "Not Found"). Up to the next space
# or quote; not the routes above, nor a key already elided (``…``).
_ANY_RECORD_PATH = re.compile(
    r"(/records/)(?!(?:" + "|".join(sorted(_RECORD_ROUTES)) + r")(?:[\s\"'?;]|$)|\u2026)[^\s\"']+"
)
ELIDED = "\u2026"


def _elide_api_target(target: str) -> str:
    """``/api/…/records/<key>?<query>`` -> ``/api/…/records/…?…``: the record key and the query
    string go, the route stays (``/records/batch`` and ``/records/find`` are kept)."""
    path, question, _ = target.partition("?")
    head, records, key = path.partition("/records/")
    if records and key not in _RECORD_ROUTES:
        path = f"{head}{records}{ELIDED}"
    return path + (f"?{ELIDED}" if question else "")


def elide_record_keys(text: str) -> str:
    """``text`` with the record key (and query string) of every data-plane path left out, as
    :func:`_elide_api_target` does. Record keys are customer data and never reach a log
    (issue 12, item 5); the API's own access log writes the route name instead."""
    text, lines = _SERVER_REQUEST_LINE.subn(
        lambda m: f'"{m["method"]} {_elide_api_target(m["target"])} {m["version"]}"', text
    )
    # Otherwise (a django.server "code 400, message Bad request syntax (…)" line): as in
    # any other log line, whatever follows /records/.
    return text if lines else elide_record_paths(text)


def elide_record_paths(text: str) -> str:
    """``text`` with whatever follows ``/records/`` in any path left out (``/records/…``),
    except the routes ``batch`` and ``find``: record keys never reach a log (issue 12,
    item 5), whichever handler a mistyped path reached."""
    return _ANY_RECORD_PATH.sub(lambda m: f"{m[1]}{ELIDED}", text) if "/records/" in text else text


class RecordPathFilter(logging.Filter):
    """On every handler: rewrites the message, and a ``path`` extra, with :meth:`elide`
    (:func:`elide_record_paths`). Never drops a record."""

    elide = staticmethod(elide_record_paths)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # RedactingFilter keeps what it can of a malformed record
            return True
        elided = self.elide(message)
        if elided != message:
            record.msg, record.args = elided, None
        path = getattr(record, "path", None)
        if isinstance(path, str):
            record.path = self.elide(path)
        return True


class ServerPathFilter(RecordPathFilter):
    """For the ``django.server`` logger (``manage.py runserver``'s request lines,
    ``"PUT /api/v1/environments/<id>/records/customer:42 HTTP/1.1" 200 15``): the same,
    with :func:`elide_record_keys`, which reads the request line whole (a record key there
    may hold a space or a quote) and drops its query string; the line keeps its method,
    route, status and size."""

    elide = staticmethod(elide_record_keys)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC), ``level``, ``logger``,
    ``message``, ``request_id``, then every ``extra`` field, then ``exception`` and
    ``stack`` when present. Values JSON cannot hold are written as ``str(value)``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and name not in entry:
                entry[name] = _jsonable(name, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _jsonable(name: str, value: Any) -> Any:
    if name == "request" and hasattr(value, "method") and hasattr(value, "path"):
        # django.request passes the HttpRequest: its method and path are what matter (the
        # path without a record key, as RecordPathFilter writes the message).
        return {"method": value.method, "path": elide_record_paths(value.path)}
    return value


def celery_logger_setup(logger: logging.Logger | None = None, **kwargs: Any) -> None:
    """Celery's ``after_setup_logger`` / ``after_setup_task_logger`` receiver: a worker
    replaces the root logger's handlers with its own (text format), so add the request id
    and redaction filters to those handlers too."""
    if logger is None:
        return
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
            handler.addFilter(RedactingFilter())


# Celery: the request id travels with the task; the worker logs JSON like the web.

_task_tokens: dict[str, tuple[contextvars.Token[str | None], contextvars.Token[tuple[str, str] | None]]] = {}


def celery_before_task_publish(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """``before_task_publish``: put the current request id (if any) in the message headers."""
    request_id = request_id_var.get()
    if headers is not None and request_id and REQUEST_ID_HEADER not in headers:
        headers[REQUEST_ID_HEADER] = request_id


def celery_task_prerun(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    """``task_prerun``: the task's request id (from its headers) and its id and name go into
    the context variables the log filter reads. An eager task (no message) keeps the
    caller's request id."""
    if task_id is None or task is None:
        return
    request = getattr(task, "request", None)
    request_id = getattr(request, REQUEST_ID_HEADER, None) or (getattr(request, "headers", None) or {}).get(
        REQUEST_ID_HEADER
    )
    if getattr(request, "is_eager", False):
        request_id = request_id or request_id_var.get()
    _task_tokens[task_id] = (request_id_var.set(request_id), task_var.set((task_id, task.name)))


def celery_task_postrun(task_id: str | None = None, **kwargs: Any) -> None:
    """``task_postrun``: restore the context variables ``celery_task_prerun`` set."""
    tokens = _task_tokens.pop(task_id, None) if task_id is not None else None
    if tokens is not None:
        request_token, task_token = tokens
        task_var.reset(task_token)
        request_id_var.reset(request_token)


def celery_setup_logging(loglevel: int | str | None = None, **kwargs: Any) -> None:
    """``setup_logging``: a worker configures logging from ``settings.LOGGING`` (JSON on
    stderr, request id, redaction) instead of installing its own text handlers; the
    worker's ``-l`` level still applies to the root logger."""
    logging.config.dictConfig(settings.LOGGING)
    # Python warnings (Celery's SecurityWarning, deprecations) become JSON lines too.
    logging.captureWarnings(True)
    if loglevel:
        logging.getLogger().setLevel(loglevel)
