"""``GET /metrics``: the Prometheus scrape endpoint (``keys.metrics``).

Access: ``METRICS_TOKEN`` unset = the endpoint does not exist (404); set = only
``Authorization: Bearer <METRICS_TOKEN>`` opens it (401 otherwise), compared in constant
time. A scrape holds counts and timings by fixed labels only: no record key, id, ARN or
secret.

Besides the process metrics, each scrape counts from the database (two small grouped
queries, cheap with the ``record_by_version`` index):

* ``byok_reencryption_records_remaining`` — records not under their environment's active
  key version, across all environments (what re-encryption still has to move);
* ``byok_reencryption_jobs{state}`` — re-encryption jobs by status.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from django.conf import settings
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from prometheus_client.core import GaugeMetricFamily

from keys import metrics, models
from keys.models import KeyRegistration, Record

from . import outages

log = logging.getLogger(__name__)


class ReencryptionCollector:
    """Re-encryption progress, counted at scrape time (bounded labels: job states)."""

    def collect(self):
        try:
            # Records under any version that is not active: an index range per such version
            # (record_by_version), so the cost follows what remains, not the table's size.
            not_active = KeyRegistration.objects.exclude(status=KeyRegistration.Status.ACTIVE)
            remaining = Record.objects.filter(registration__in=not_active).count()
            jobs = self._jobs_by_state()
        except outages.DATABASE_ERRORS as e:  # an outage: said once per interval
            outages.database_unreachable(e)
            return
        except Exception:  # a scrape must answer whatever else failed; that is a bug
            log.warning("metrics: re-encryption progress could not be counted", exc_info=True)
            return
        gauge = GaugeMetricFamily(
            "byok_reencryption_records_remaining",
            "Records not under their environment's active key version (all environments).",
        )
        gauge.add_metric([], remaining)
        yield gauge
        if jobs is not None:
            family = GaugeMetricFamily("byok_reencryption_jobs", "Re-encryption jobs by state.", labels=["state"])
            for state, count in jobs.items():
                family.add_metric([state], count)
            yield family

    @staticmethod
    def _jobs_by_state() -> dict[str, int] | None:
        job_model = getattr(models, "ReencryptionJob", None)
        if job_model is None:
            return None
        counts = dict(job_model.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
        return {state: counts.get(state, 0) for state in job_model.Status.values}


def _token_matches(presented: str, expected: str) -> bool:
    # Digests first: compare_digest is constant-time only for inputs of equal length.
    return hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition; see the module docstring for access."""
    token = getattr(settings, "METRICS_TOKEN", "")
    if not token:
        return HttpResponse("Not found.\n", status=404, content_type="text/plain")
    if request.method not in ("GET", "HEAD"):
        return HttpResponse("Use GET.\n", status=405, content_type="text/plain", headers={"Allow": "GET, HEAD"})
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not _token_matches(presented.strip(), token):
        return HttpResponse(
            "Send Authorization: Bearer <METRICS_TOKEN>.\n", status=401, content_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    response = HttpResponse(metrics.exposition([ReencryptionCollector()]), content_type=metrics.CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response
