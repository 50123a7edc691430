"""Project-level endpoints: health, favicon, the 500 handler."""

import sys
from functools import cache

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.http import require_safe

from . import outages


def _database_ok() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, connection.vendor
    except Exception as e:  # any driver error means "unreachable" to a health probe
        outages.database_unreachable(e)
        return False, type(e).__name__


def _broker_ok() -> tuple[bool, str]:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return True, "eager (no broker configured)"
    from kombu import Connection

    try:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
            # One retry at once, not after kombu's default 2 s pause: a refused connection
            # answers in milliseconds, and a probe slower than its load balancer's timeout
            # would mark the service down, which "degraded" exists to avoid.
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        return True, "reachable"
    except Exception as e:  # kombu raises many kinds; all mean unreachable
        outages.broker_unreachable(type(e).__name__)
        return False, type(e).__name__


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """``{"status", "database": {...}, "broker": {...}}``: 200 ``ok`` when both are
    reachable; 200 ``degraded`` when only the broker is not (pages and the data plane work;
    validations wait to be queued), so a load balancer or compose keeps the web service
    in; 503 ``unavailable`` with ``Retry-After`` when the database is not. Outages are
    logged once per interval, never mailed (``portal.outages``)."""
    db_ok, db_detail = _database_ok()
    broker_ok, broker_detail = _broker_ok()
    body = {
        "status": "unavailable" if not db_ok else "ok" if broker_ok else "degraded",
        "database": {"ok": db_ok, "detail": db_detail},
        "broker": {"ok": broker_ok, "detail": broker_detail},
    }
    if db_ok:
        return JsonResponse(body)
    response = JsonResponse(body, status=503, headers={"Retry-After": str(outages.RETRY_AFTER_SECONDS)})
    # No django.request ERROR line (and mail to ADMINS) per probe: portal.outages logged it.
    response._has_been_logged = True
    return response


_DATABASE_DOWN_PAGE = (
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Service unavailable</title></head>"
    "<body><h1>Service unavailable</h1><p>The portal cannot reach its database right now. Nothing was lost; "
    "please try again in a few seconds.</p></body></html>"
)


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500`` of the portal: a database that cannot be reached (the driver's
    ``OperationalError`` / ``InterfaceError``, from a view or a middleware such as the
    session's) is an outage, not a bug: 503 with ``Retry-After``, logged once per interval
    by ``portal.outages`` (no ``django.request`` ERROR line, no mail to ADMINS per page).
    The page is plain HTML: the site's templates read the signed-in user, i.e. the database.
    Anything else is Django's own 500 (logged and mailed as a bug)."""
    error = sys.exc_info()[1]
    if isinstance(error, outages.DATABASE_ERRORS):
        outages.database_unreachable(error)
        response = HttpResponse(
            _DATABASE_DOWN_PAGE, status=503, headers={"Retry-After": str(outages.RETRY_AFTER_SECONDS)}
        )
        response._has_been_logged = True
        return response
    return defaults.server_error(request)


@cache
def _favicon() -> bytes:
    return (settings.BASE_DIR / "static" / "favicon.ico").read_bytes()


@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """``/favicon.ico``: browsers ask for it on every page (Django admin's included), so it
    is served here rather than answering 404 each time; cached for a day."""
    response = HttpResponse(_favicon(), content_type="image/x-icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response
