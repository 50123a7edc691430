"""Project-level endpoints: health, favicon."""

from functools import cache

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET, require_safe


def _database_ok() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, connection.vendor
    except Exception as e:  # any driver error means "unreachable" to a health probe
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


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 with ``{"database": {...}, "broker": {...}}`` when both are reachable, else 503."""
    db_ok, db_detail = _database_ok()
    broker_ok, broker_detail = _broker_ok()
    body = {
        "status": "ok" if db_ok and broker_ok else "unavailable",
        "database": {"ok": db_ok, "detail": db_detail},
        "broker": {"ok": broker_ok, "detail": broker_detail},
    }
    return JsonResponse(body, status=200 if db_ok and broker_ok else 503)


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
