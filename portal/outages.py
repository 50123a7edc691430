"""Outages answered as outages: what is logged, and how often, when a dependency fails.

* Database unreachable (``OperationalError`` / ``InterfaceError`` from the driver): the
  API and ``/healthz`` answer 503 ``service_unavailable`` with ``Retry-After``; this
  process logs one WARNING per ``LOG_INTERVAL_SECONDS`` saying so (how many requests were
  refused since the last line), never a line or an error mail per request. An outage is
  not a bug: nothing here is logged at ERROR, so ``mail_admins`` never fires for it.
* Broker unreachable (seen by ``/healthz``): still 200, ``"status": "degraded"`` — the
  portal and the data plane work without it — and one WARNING per interval.
* ``key_unavailable`` (KMS refuses or cannot be reached, a version is inaccessible): one
  WARNING per environment and reason per interval, with the environment's public id and
  the reason, never the record key (customer data, docs/architecture.md, "Invariants", 1).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import InterfaceError, OperationalError

log = logging.getLogger("portal.outages")

RETRY_AFTER_SECONDS = 5
# What "the database cannot be reached" looks like from Django: the driver's errors, wrapped.
DATABASE_ERRORS = (OperationalError, InterfaceError)
LOG_INTERVAL_SECONDS = 60.0

_lock = threading.Lock()
# key -> (monotonic time of the last line, occurrences since)
_last: dict[tuple[str, ...], list[float]] = {}


def _due(key: tuple[str, ...]) -> int | None:
    """The number of occurrences to report if a line for ``key`` is due now, else None."""
    now = time.monotonic()
    with _lock:
        entry = _last.get(key)
        if entry is None or now - entry[0] >= LOG_INTERVAL_SECONDS:
            count = 1 if entry is None else int(entry[1]) + 1
            _last[key] = [now, 0]
            return count
        entry[1] += 1
        return None


def database_unreachable(error: BaseException) -> None:
    """A request found the database unreachable (logged at most once per interval)."""
    count = _due(("database",))
    if count is not None:
        log.warning(
            "database unreachable (%s); answering 503 service_unavailable (%d request(s) since the last line)",
            type(error).__name__, count, extra={"outage": "database", "error_type": type(error).__name__},
        )


def broker_unreachable(error_type: str) -> None:
    """``/healthz`` found the Celery broker unreachable (logged at most once per interval).
    The web service still answers (healthz says ``degraded``): validations wait to be queued."""
    count = _due(("broker",))
    if count is not None:
        log.warning(
            "broker unreachable (%s); validations cannot be queued (%d probe(s) since the last line)",
            error_type, count, extra={"outage": "broker", "error_type": error_type},
        )


def key_unavailable(*, environment: Any, reason: str) -> None:
    """A data-plane request got ``key_unavailable`` for ``reason``."""
    public_id = str(environment.public_id) if environment is not None else "-"
    count = _due(("key", public_id, reason))
    if count is not None:
        log.warning(
            "key unavailable for environment %s: %s (%d request(s) since the last line)", public_id, reason, count,
            extra={"outage": "key_unavailable", "environment": public_id, "reason": reason},
        )


def reset() -> None:
    """Forget every interval (tests)."""
    with _lock:
        _last.clear()
