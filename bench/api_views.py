"""Bench-only baselines on the lean /api/ handler (bench/api_urls.py): bare Django, with
no middleware, answering JSON, plus exactly one SQL statement. Never mounted in production.

* ``hello``: no database at all;
* ``select``: one ``SELECT ciphertext FROM keys_record WHERE environment = … AND record_key = …``,
  answering the stored bytes as they are (about as many as a GET of that record answers);
* ``upsert``: a PUT whose body (the same 1 KiB JSON a data-plane PUT sends) is read and
  stored as it is by one ``INSERT … ON CONFLICT (environment, record_key) DO UPDATE``.

They are what a data-plane GET and PUT cost at least on this stack: the same server,
handler, connection settings and driver, the same bytes in and out, without
authentication, JSON parsing, crypto or metrics.
"""

import functools
import os

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from keys.models import KeyRegistration, Record

BODY = os.urandom(1024)


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "world"})


def select(request: HttpRequest, record_key: str) -> HttpResponse:
    environment_id, _, _ = _target()
    with connection.cursor() as cursor:
        cursor.execute(_SELECT, [environment_id, record_key])
        row = cursor.fetchone()
    return HttpResponse(bytes(row[0]) if row else b"", content_type="application/octet-stream")


def upsert(request: HttpRequest, record_key: str) -> HttpResponse:
    environment_id, registration_id, version = _target()
    now = timezone.now()
    body = request.body or BODY  # a PUT's body as sent (a GET without one stores 1 KiB)
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT, [environment_id, registration_id, version, now, now, "baseline-" + record_key, body])
    return JsonResponse({"stored": True})


@functools.cache
def _target() -> tuple[int, int, int]:
    """The bench's managed environment and its active version (read once per process)."""
    registration = KeyRegistration.objects.filter(
        environment__name="managed", status=KeyRegistration.Status.ACTIVE
    ).order_by("pk").first()
    return registration.environment_id, registration.pk, registration.version


_SELECT = f"SELECT ciphertext FROM {Record._meta.db_table} WHERE environment_id = %s AND record_key = %s"
_UPSERT = (
    f"INSERT INTO {Record._meta.db_table} "
    "(environment_id, registration_id, key_version, created_at, updated_at, record_key, ciphertext) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (environment_id, record_key) DO UPDATE SET ciphertext = EXCLUDED.ciphertext, "
    "updated_at = EXCLUDED.updated_at"
)
