"""Prometheus metrics of the portal (prometheus-client), served at ``/metrics``
(``portal.metrics_view``, bearer token ``METRICS_TOKEN``).

What is counted, and where::

    byok_kms_calls_total{operation, outcome}                keys.kms._call (every KMS call)
    byok_kms_call_duration_seconds{operation}               keys.kms._call (histogram)
    byok_data_key_cache_events_total{event}                 keys.cache (hit, miss, eviction, load_failure)
    byok_validation_runs_total{outcome, trigger}            keys.services.validation._finish_run
    byok_api_requests_total{method, route, status_class}    keys.api.views (data-plane requests)
    byok_api_request_duration_seconds{method, route, status_class}   keys.api.views (histogram)

plus, computed from the database at each scrape (``portal.metrics_view``)::

    byok_reencryption_records_remaining                     records not under their environment's active version
    byok_reencryption_jobs{state}                           re-encryption jobs by status

``operation`` is the KMS operation name (``Decrypt``, ``DescribeKey``, ``GenerateDataKey``),
``outcome`` of a KMS call ``ok``, ``permanent`` or ``transient`` (``keys.kms``'s two kinds
of error), ``route`` a URL name (``record``, ``records_batch``, ``records_find``,
``openapi``, ``unknown``), ``status_class`` ``2xx`` … ``5xx``. Labels are small, fixed
vocabularies: never put a record key, an id, an ARN or anything secret in one (each label
value is a new time series, and a scrape is readable by whoever holds the token).

One registry per process, or many processes
    Without ``PROMETHEUS_MULTIPROC_DIR`` the metrics live in this process's default
    registry: right for one process (``runserver``, one gunicorn worker). gunicorn with
    several workers answers each scrape from whichever worker gets it, so set
    ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory writable by the workers, the same
    for all of them, emptied before gunicorn starts: prometheus-client's multiprocess mode
    then keeps each process's values in a file there and every scrape sums all of them
    (``MultiProcessCollector``). Only counters and histograms are kept that way; the gauges
    are computed from the database at scrape time, so no "live gauge" clean-up
    (``mark_process_dead``) is needed when a worker exits. prometheus-client reads the
    variable itself, at import: it must be in the environment before the process starts.
    Celery workers count what they do (validation runs, their KMS calls) in their own
    processes: with eager tasks (the embedded default) that is the web process.

The older counter API (``increment``, ``value``, ``snapshot``, ``reset``) still works on
top of these metrics.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# prometheus-client picks multiprocess mode when the variable is *present*, even empty, and
# then writes its files into the working directory: an empty value (docker/.env.example
# lists it empty) must mean "unset". This runs before prometheus_client is imported.
for _name in (MULTIPROCESS_ENV, MULTIPROCESS_ENV.lower()):
    if _name in os.environ and not os.environ[_name].strip():
        del os.environ[_name]
if os.environ.get(MULTIPROCESS_ENV) and not os.path.isdir(os.environ[MULTIPROCESS_ENV]):
    raise RuntimeError(
        f"{MULTIPROCESS_ENV}={os.environ[MULTIPROCESS_ENV]!r} is not a directory: create it (empty, writable by "
        "every worker) before starting the processes, or unset it."
    )

import prometheus_client  # noqa: E402  (after the environment is settled)
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

# ``*_created`` series double a scrape's size and nobody here graphs them.
prometheus_client.disable_created_metrics()

CONTENT_TYPE = CONTENT_TYPE_LATEST

# KMS answers Decrypt in milliseconds; retries and timeouts (3 s connect, 10 s read) take longer.
KMS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

KMS_CALLS = Counter(
    "byok_kms_calls", "KMS API calls, by operation and outcome (ok, permanent, transient).", ["operation", "outcome"]
)
KMS_LATENCY = Histogram(
    "byok_kms_call_duration_seconds",
    "Time of one KMS API call, botocore's retries included, by operation.",
    ["operation"],
    buckets=KMS_BUCKETS,
)
DATA_KEY_CACHE = Counter(
    "byok_data_key_cache_events", "Data-key cache events: hit, miss, eviction, load_failure.", ["event"]
)
VALIDATION_RUNS = Counter(
    "byok_validation_runs", "Finished validation runs, by outcome and trigger.", ["outcome", "trigger"]
)
API_REQUESTS = Counter(
    "byok_api_requests", "Data-plane API requests, by method, route and status class.", ["method", "route", "status_class"]
)
API_LATENCY = Histogram(
    "byok_api_request_duration_seconds",
    "Time to answer one data-plane API request, by method, route and status class.",
    ["method", "route", "status_class"],
    buckets=API_BUCKETS,
)

# The counter API's names (keys.cache, bench/) -> metric.
_lock = threading.Lock()
_counters: dict[str, Counter] = {
    "kms_calls": KMS_CALLS,
    "data_key_cache": DATA_KEY_CACHE,
    "validation_runs": VALIDATION_RUNS,
    "api_requests": API_REQUESTS,
}
_histograms: tuple[Histogram, ...] = (KMS_LATENCY, API_LATENCY)

# HTTP methods the API knows; anything else a client sends is counted as "other" so that a
# client cannot mint time series.
_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"})


def multiprocess_mode() -> bool:
    """True when prometheus-client keeps values in ``PROMETHEUS_MULTIPROC_DIR`` files."""
    return bool(os.environ.get(MULTIPROCESS_ENV))


# ---------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------


def kms_call_observed(*, operation: str, outcome: str, seconds: float) -> None:
    """One KMS call ended: ``outcome`` is ``ok``, ``permanent`` or ``transient``."""
    KMS_CALLS.labels(operation=operation, outcome=outcome).inc()
    KMS_LATENCY.labels(operation=operation).observe(seconds)


def validation_run_finished(*, outcome: str, trigger: str) -> None:
    """A validation run ended with ``outcome`` (passed, failed, unverified)."""
    VALIDATION_RUNS.labels(outcome=outcome, trigger=trigger).inc()


def api_request_observed(*, method: str, route: str, status: int, seconds: float) -> None:
    """One data-plane request was answered. ``route`` is a URL name, never a path."""
    key = (method if method in _METHODS else "other", route, status // 100)
    children = _api_children.get(key)
    if children is None:
        labels = {"method": key[0], "route": route, "status_class": f"{key[2]}xx"}
        children = _api_children[key] = (API_REQUESTS.labels(**labels), API_LATENCY.labels(**labels))
    children[0].inc()
    children[1].observe(seconds)


# (method, route, status // 100) -> the two labelled series of api_request_observed: one
# dict look-up per request instead of prometheus-client's labels() twice (the data plane
# answers thousands a second). The label values are the fixed vocabularies above, so the
# dict stays small; reset() empties it with the series.
_api_children: dict[tuple[str, str, int], tuple] = {}


# ---------------------------------------------------------------------------
# The counter API (kept for keys.cache, bench/ and tests)
# ---------------------------------------------------------------------------


def _counter(name: str, labels: dict[str, str]) -> Counter:
    counter = _counters.get(name)
    if counter is None:
        with _lock:
            counter = _counters.get(name)
            if counter is None:
                # A name this module does not know yet: its first use fixes its labels.
                counter = Counter(f"byok_{name}", f"{name} (keys.metrics.increment)", sorted(labels))
                _counters[name] = counter
    return counter


def increment(name: str, amount: int = 1, **labels: str) -> None:
    """Add ``amount`` to the counter ``name`` (``kms_calls``, ``data_key_cache``,
    ``validation_runs``, ``api_requests``, or a new name) with these labels."""
    counter = _counter(name, labels)
    (counter.labels(**labels) if labels else counter).inc(amount)


def value(name: str, **labels: str) -> int | float:
    """This process's current value of one counter (0 if never incremented)."""
    counter = _counters.get(name)
    if counter is None:
        return 0
    for sample in _samples(counter):
        if sample.name.endswith("_total") and sample.labels == labels:
            return _number(sample.value)
    return 0


def snapshot() -> dict[str, int | float]:
    """This process's counters as ``{'name{label="value",…}': count}``, sorted by name."""
    out = {}
    for name, counter in sorted(_counters.items()):
        for sample in _samples(counter):
            if sample.name.endswith("_total"):
                text = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{name}{{{text}}}" if text else name] = _number(sample.value)
    return dict(sorted(out.items()))


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _samples(metric) -> Iterable:
    for family in metric.collect():
        yield from family.samples


def reset() -> None:
    """Forget every labelled series of this process (tests). A no-op in multiprocess mode,
    where values live in files that prometheus-client does not clear."""
    if multiprocess_mode():
        return
    _api_children.clear()
    for metric in (*_counters.values(), *_histograms):
        metric.clear()


def _reset_after_fork() -> None:
    # A forked worker must not report its parent's counts as its own (default registry; in
    # multiprocess mode prometheus-client starts a new file per pid by itself).
    global _lock
    _lock = threading.Lock()
    reset()


os.register_at_fork(after_in_child=_reset_after_fork)


# ---------------------------------------------------------------------------
# Exposition
# ---------------------------------------------------------------------------


class _Scrape:
    """What one scrape collects: this process's registry (or every process's files in
    multiprocess mode) followed by ``extra`` collectors (e.g. database gauges)."""

    def __init__(self, extra: Iterable) -> None:
        self.extra = list(extra)

    def collect(self):
        base = MultiProcessCollector(None) if multiprocess_mode() else REGISTRY
        yield from base.collect()
        for collector in self.extra:
            yield from collector.collect()


def exposition(extra: Iterable = ()) -> bytes:
    """The Prometheus text format of every metric, ``extra`` collectors last."""
    return generate_latest(_Scrape(extra))
