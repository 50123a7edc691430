"""The Prometheus endpoint /metrics (portal/metrics_view.py) and what keys/metrics.py counts.

Counters are per process and never reset between tests, so each test compares a scrape
after its requests with one before them."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from keys import metrics
from keys.models import KeyRegistration, Record
from keys.services import api_keys, records
from tests.factories import ACCESS_KEY_ID, SECRET_ACCESS_KEY

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-token-for-tests-0123456789abcdef"
RECORD_KEY = "customer:canary-7f3a9c"
BODY_CANARY = "Zq7vXw3Kp9Lm2Rt8Yb4Nc6Hd1Jf5Gs0Ae"

# Every label value a byok_* series may carry: fixed vocabularies only.
ALLOWED_LABEL_VALUES = {
    "operation": {"Decrypt", "DescribeKey", "GenerateDataKey", "AssumeRole", "GetCallerIdentity"},
    "outcome": {"ok", "permanent", "transient", "passed", "failed", "unverified"},
    "event": {"hit", "miss", "eviction", "load_failure"},
    "trigger": {"registration", "manual", "credentials", "periodic"},
    "method": {"GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "other"},
    "route": {"record", "records_batch", "records_find", "openapi", "unknown"},
    "status_class": {"1xx", "2xx", "3xx", "4xx", "5xx"},
    "state": {"queued", "running", "paused", "cancelled", "done", "failed"},
}


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client) -> str:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return response.content.decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of a scrape."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def sample(scraped: dict, name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def api_key(environment, alice) -> str:
    _, key = api_keys.api_key_create(environment=environment, name="metrics", actor=alice)
    return key


# ---------------------------------------------------------------------------
# Access
# ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_404_while_no_metrics_token_is_set(client, settings):
    settings.METRICS_TOKEN = ""

    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
     f"Token {TOKEN}", TOKEN],
)
def test_it_answers_401_without_the_right_bearer_token(client, metrics_token, header):
    extra = {} if header is None else {"HTTP_AUTHORIZATION": header}

    response = client.get("/metrics", **extra)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"byok_" not in response.content


@pytest.mark.django_db
def test_it_answers_the_right_token_in_any_case_of_the_scheme(client, metrics_token):
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"bearer {TOKEN}").status_code == 200


@pytest.mark.django_db
def test_it_compares_the_token_in_constant_time(client, metrics_token, monkeypatch):
    import portal.metrics_view as view

    compared = []
    real = view.hmac.compare_digest
    monkeypatch.setattr(view.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))

    client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")

    assert len(compared) == 1
    assert len(compared[0][0]) == len(compared[0][1]) == 32  # digests: no length leak


@pytest.mark.django_db
def test_it_answers_405_to_a_post_with_the_token(client, metrics_token):
    response = client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 405


# ---------------------------------------------------------------------------
# What is counted
# ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_counts_data_plane_requests_kms_calls_and_data_key_cache_events(
    client, metrics_token, environment, byok, api_key  # noqa: F811
):
    """GIVEN a BYOK environment (moto) and an empty data-key cache
    WHEN an application PUTs a record, GETs it and asks for one that does not exist
    THEN the scrape shows the requests by method/route/status class with latency buckets,
    one KMS Decrypt (the miss) with its latency, one cache miss and hits; and nothing secret."""
    before = samples(scrape(client))
    base = f"/api/v1/environments/{environment.public_id}/records"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}

    put = client.put(f"{base}/{RECORD_KEY}", json.dumps({"body": {"note": BODY_CANARY}}), content_type="application/json", **auth)
    got = client.get(f"{base}/{RECORD_KEY}", **auth)
    missing = client.get(f"{base}/no-such-record", **auth)
    text = scrape(client)
    after = samples(text)

    assert (put.status_code, got.status_code, missing.status_code) == (200, 200, 404)

    def moved(name, **labels):
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("byok_api_requests_total", method="PUT", route="record", status_class="2xx") == 1
    assert moved("byok_api_requests_total", method="GET", route="record", status_class="2xx") == 1
    assert moved("byok_api_requests_total", method="GET", route="record", status_class="4xx") == 1
    assert moved("byok_api_request_duration_seconds_count", method="PUT", route="record", status_class="2xx") == 1
    assert moved("byok_api_request_duration_seconds_bucket", method="PUT", route="record", status_class="2xx", le="+Inf") == 1
    assert ("byok_api_request_duration_seconds_bucket", (("le", "0.005"), ("method", "PUT"), ("route", "record"), ("status_class", "2xx"))) in after

    assert moved("byok_kms_calls_total", operation="Decrypt", outcome="ok") == 1
    assert moved("byok_kms_call_duration_seconds_count", operation="Decrypt") == 1
    assert moved("byok_kms_call_duration_seconds_sum", operation="Decrypt") > 0
    for bucket in metrics.KMS_BUCKETS:
        assert ("byok_kms_call_duration_seconds_bucket", (("le", str(bucket)), ("operation", "Decrypt"))) in after

    assert moved("byok_data_key_cache_events_total", event="miss") == 1
    assert moved("byok_data_key_cache_events_total", event="hit") >= 1

    data_key = byok.plaintext_data_key()
    for secret in (
        api_key, api_key.split("_", 2)[2], RECORD_KEY, "no-such-record", str(environment.public_id), BODY_CANARY,
        SECRET_ACCESS_KEY, ACCESS_KEY_ID, byok.kms_key_arn, base64.b64encode(data_key).decode(), data_key.hex(),
        TOKEN,
    ):
        assert secret not in text, secret


@pytest.mark.django_db
def test_it_counts_a_kms_refusal_as_a_permanent_outcome(client, metrics_token, byok, monkeypatch):  # noqa: F811
    import botocore.exceptions

    from keys import kms

    before = samples(scrape(client))
    error = botocore.exceptions.ClientError(
        {"Error": {"Code": "DisabledException", "Message": "disabled"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
        "Decrypt",
    )
    kms_client = kms.client(region="eu-west-1", credentials=kms.KmsCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY))
    monkeypatch.setattr(kms, "client", lambda **kwargs: kms_client)
    monkeypatch.setattr(kms_client, "decrypt", lambda **kwargs: (_ for _ in ()).throw(error))

    with pytest.raises(kms.KmsPermanentError):
        kms.decrypt(
            region="eu-west-1", credentials=kms.KmsCredentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY),
            kms_key_arn=byok.kms_key_arn, ciphertext_blob=byok.encrypted_data_key,
        )
    after = samples(scrape(client))

    assert sample(after, "byok_kms_calls_total", operation="Decrypt", outcome="permanent") - sample(
        before, "byok_kms_calls_total", operation="Decrypt", outcome="permanent"
    ) == 1


@pytest.mark.django_db
def test_it_counts_validation_outcomes_by_trigger(client, metrics_token, byok):  # noqa: F811
    from keys.services.validation import registration_validate

    before = samples(scrape(client))

    run = registration_validate(registration_id=byok.registration.pk, trigger="manual")
    after = samples(scrape(client))

    name = "byok_validation_runs_total"
    assert sample(after, name, outcome=run.outcome, trigger="manual") - sample(before, name, outcome=run.outcome, trigger="manual") == 1
    assert sample(after, "byok_kms_calls_total", operation="DescribeKey", outcome="ok") > sample(
        before, "byok_kms_calls_total", operation="DescribeKey", outcome="ok"
    )


@pytest.mark.django_db
def test_it_reports_records_left_to_re_encrypt_and_jobs_by_state(client, metrics_token, environment, byok):  # noqa: F811
    """GIVEN 3 records written under the platform-managed version 1, then BYOK version 2
    activated (version 1 decrypt-only), and 2 records written under version 2
    THEN 3 records remain to be re-encrypted; a queued job shows under its state."""
    managed = environment.key_registrations.get(version=1)
    assert managed.status == KeyRegistration.Status.DECRYPT_ONLY
    Record.objects.bulk_create(
        [Record(environment=environment, record_key=f"old-{i}", ciphertext=b"x", registration=managed, key_version=1) for i in range(3)]
    )
    for i in range(2):
        records.record_put(environment=environment, record_key=f"new-{i}", body=i)
    from keys.models import ReencryptionJob

    ReencryptionJob.objects.create(environment=environment, target=byok.registration, status=ReencryptionJob.Status.QUEUED)

    after = samples(scrape(client))

    assert sample(after, "byok_reencryption_records_remaining") == 3
    assert sample(after, "byok_reencryption_jobs", state="queued") == 1
    assert sample(after, "byok_reencryption_jobs", state="running") == 0


@pytest.mark.django_db
def test_it_labels_every_series_with_fixed_vocabularies_only(client, metrics_token, environment, byok, api_key):  # noqa: F811
    base = f"/api/v1/environments/{environment.public_id}/records"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}
    client.put(f"{base}/{RECORD_KEY}", json.dumps({"body": 1}), content_type="application/json", **auth)
    client.generic("BREW", f"{base}/{RECORD_KEY}", **auth)
    client.get(f"/api/v1/{RECORD_KEY}/nowhere", **auth)
    client.get("/api/v1/openapi.json")

    scraped = samples(scrape(client))

    seen = {}
    for name, labels in scraped:
        if not name.startswith("byok_"):
            continue
        for label, value in labels:
            if label != "le":
                seen.setdefault(label, set()).add(value)
                assert value in ALLOWED_LABEL_VALUES[label], (name, label, value)
    assert "other" in seen["method"] and "unknown" in seen["route"] and "openapi" in seen["route"]


def test_it_keeps_the_counter_api_working_on_top_of_prometheus():
    metrics.increment("data_key_cache", event="eviction")
    before = metrics.value("data_key_cache", event="eviction")

    metrics.increment("data_key_cache", 2, event="eviction")

    assert metrics.value("data_key_cache", event="eviction") == before + 2
    assert metrics.snapshot()['data_key_cache{event="eviction"}'] == before + 2
    assert metrics.value("never_counted", x="y") == 0


def test_it_sums_every_process_in_multiprocess_mode(tmp_path):
    """GIVEN PROMETHEUS_MULTIPROC_DIR shared by two worker processes that each call KMS once
    THEN a third process's exposition counts both calls, with histogram buckets."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    worker = (
        "from keys import metrics; assert metrics.multiprocess_mode(); "
        "metrics.kms_call_observed(operation='Decrypt', outcome='ok', seconds=0.02)"
    )
    for _ in range(2):
        subprocess.run([sys.executable, "-c", worker], env=env, check=True, cwd=ROOT, timeout=60)

    scraped = subprocess.run(
        [sys.executable, "-c", "import sys; from keys import metrics; sys.stdout.write(metrics.exposition().decode())"],
        env=env, check=True, cwd=ROOT, timeout=60, capture_output=True, text=True,
    ).stdout

    values = samples(scraped)
    assert sample(values, "byok_kms_calls_total", operation="Decrypt", outcome="ok") == 2
    assert sample(values, "byok_kms_call_duration_seconds_bucket", operation="Decrypt", le="0.025") == 2
    assert sample(values, "byok_kms_call_duration_seconds_bucket", operation="Decrypt", le="0.01") == 0


def test_it_treats_an_empty_prometheus_multiproc_dir_as_unset(tmp_path):
    """docker/.env.example lists the variable empty: prometheus-client alone would then write
    its files into the working directory."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": "", "PYTHONPATH": str(ROOT)}
    code = (
        "from keys import metrics; assert not metrics.multiprocess_mode(); "
        "metrics.kms_call_observed(operation='Decrypt', outcome='ok', seconds=0.01); "
        "assert b'byok_kms_calls_total' in metrics.exposition()"
    )

    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=tmp_path, timeout=60)

    assert list(tmp_path.iterdir()) == []


def test_it_refuses_to_start_with_a_prometheus_multiproc_dir_that_does_not_exist(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing"), "PYTHONPATH": str(ROOT)}

    result = subprocess.run(
        [sys.executable, "-c", "import keys.metrics"], env=env, cwd=ROOT, timeout=60, capture_output=True, text=True
    )

    assert result.returncode != 0
    assert "is not a directory" in result.stderr
