"""Project-level endpoints: health, favicon."""

from functools import cache

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
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
            conn.ensure_connection(max_retries=1, timeout=2)
        return True, "reachable"
    except Exception as e:  # kombu raises many kinds; all mean unreachable
        return False, type(e).__name__


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """200 with ``{"database": {...}, "broker": {...}}`` when both are reachable, else 503
    with ``Retry-After`` (``portal.outages``: logged once per interval, never mailed)."""
    db_ok, db_detail = _database_ok()
    broker_ok, broker_detail = _broker_ok()
    body = {
        "status": "ok" if db_ok and broker_ok else "unavailable",
        "database": {"ok": db_ok, "detail": db_detail},
        "broker": {"ok": broker_ok, "detail": broker_detail},
    }
    if db_ok and broker_ok:
        return JsonResponse(body)
    response = JsonResponse(body, status=503, headers={"Retry-After": str(outages.RETRY_AFTER_SECONDS)})
    # No django.request ERROR line (and mail to ADMINS) per probe: portal.outages logged it.
    response._has_been_logged = True
    return response


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
