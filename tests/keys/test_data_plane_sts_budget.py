"""In role mode the data plane's cold data-key load calls STS AssumeRole before KMS Decrypt;
the AssumeRole gets the same short budget as the Decrypt (``keys.services.records.
data_plane_aws_options``: ``settings.DATA_PLANE_KMS_CONNECT_TIMEOUT_SECONDS`` /
``..._READ_TIMEOUT_SECONDS`` and ``DATA_PLANE_KMS_MAX_ATTEMPTS`` attempts), so a hung STS
answers 503 key_unavailable (reason ``sts_timeout``) with Retry-After in seconds.

Before: the data plane's AssumeRole used the STS client defaults (3 attempts of 3 s connect +
10 s read); an STS that accepted the connection and never answered held every request that
missed the cache about 30 s (measured 30.1 s by this module's hung-STS test)."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from keys import cache, kms, sts
from keys.cache import DataKeyCache
from keys.models import KeyRegistration
from keys.services import records
from tests.factories import error_of
from tests.support import hung_endpoint

from .test_cache import read_key, run_threads



@pytest.fixture
def role_byok(byok, settings):
    """The active BYOK version of ``byok`` (moto), switched to role mode: the data plane
    assumes a role of the key's account with the environment's external ID (moto's STS hands
    out credentials for any role, in the role's account) and decrypts with them."""
    settings.AWS_STS_ENDPOINT_URL = None
    KeyRegistration.objects.filter(pk=byok.registration.pk).update(
        access_mode=KeyRegistration.AccessMode.ROLE, role_arn=f"arn:aws:iam::{byok.registration.account_id}:role/byok-portal-access",
        sealed_access_key_id="", sealed_secret_access_key="",
    )
    byok.registration.refresh_from_db()
    assert byok.registration.environment.aws_external_id  # cached: a test's threads must not query
    sts.clear_clients()
    sts.role_sessions.clear()
    yield byok
    sts.role_sessions.clear()
    sts.clear_clients()


@pytest.fixture
def hung_sts(settings):
    """An STS endpoint that accepts every connection and never answers; yields the connections
    it accepted (one per HTTP attempt botocore made). Set as AWS_STS_ENDPOINT_URL, with no
    role session held, only when the test calls the returned function (after the record was
    written under moto)."""
    with hung_endpoint() as (url, accepted):

        def switch_to_it() -> list[socket.socket]:
            settings.AWS_STS_ENDPOINT_URL = url
            sts.clear_clients()
            sts.role_sessions.clear()
            cache.clear()
            return accepted

        yield switch_to_it
    sts.clear_clients()


def _short_budget(settings) -> float:
    """Set a 1 s + 1 s budget; return the worst case of one AWS call (attempts x (connect + read))."""
    settings.DATA_PLANE_KMS_CONNECT_TIMEOUT_SECONDS = 1.0
    settings.DATA_PLANE_KMS_READ_TIMEOUT_SECONDS = 1.0
    return records.DATA_PLANE_KMS_MAX_ATTEMPTS * 2.0


def test_it_gives_the_data_plane_assume_role_the_same_short_timeouts_and_attempts_as_its_decrypt(
    api, role_byok, settings, built_clients
):
    """A cold load in role mode builds one STS client and one KMS client, both with the
    data-plane settings and at most 2 attempts (not the STS client defaults)."""
    settings.DATA_PLANE_KMS_CONNECT_TIMEOUT_SECONDS = 0.7
    settings.DATA_PLANE_KMS_READ_TIMEOUT_SECONDS = 1.3
    assert api.put("r1", {"body": 1}).status_code == 200
    cache.clear()
    sts.role_sessions.clear()
    sts.clear_clients()
    kms.clear_clients()
    built_clients.clear()

    assert api.get("r1").status_code == 200

    short = sts.StsClientOptions(connect_timeout=0.7, read_timeout=1.3, max_attempts=2)
    assert built_clients == [("sts", short), ("kms", short)]
    assert short != sts.DEFAULT_OPTIONS


def test_it_answers_503_sts_timeout_with_retry_after_when_sts_never_answers_a_cache_miss(
    api, role_byok, settings, hung_sts, environment, caplog
):
    """GIVEN a record under an active role-mode version, an empty data-key cache, no role
    session held and an STS that accepts the connection and never answers
    WHEN the application reads the record
    THEN it gets 503 key_unavailable (reason sts_timeout, Retry-After) after at most the
    data plane's attempts, within a generous bound derived from the settings, and the
    answer and the log name neither the external ID nor the role's credentials."""
    budget = _short_budget(settings)
    assert api.put("r1", {"body": 1}).status_code == 200
    accepted = hung_sts()
    caplog.set_level(logging.INFO)

    started = time.monotonic()
    got = api.get("r1")
    elapsed = time.monotonic() - started

    assert got.status_code == 503
    assert error_of(got)["code"] == "key_unavailable" and error_of(got)["reason"] == sts.Reason.TIMEOUT
    assert int(got["Retry-After"]) > 0
    assert error_of(got)["message"].startswith("STS could not assume the role of version ")
    assert 1 <= len(accepted) <= records.DATA_PLANE_KMS_MAX_ATTEMPTS
    # Generous (three times the budget plus backoff slack), far below the 30 s it took before.
    assert elapsed < 3 * budget + 5
    assert environment.aws_external_id not in got.content.decode()
    assert environment.aws_external_id not in caplog.text
    # One line of our own per answer, not botocore's traceback of the failed refresh too.
    assert "Refreshing temporary credentials failed" not in caplog.text


def test_it_assumes_the_role_once_for_many_cold_requests_when_sts_never_answers(
    role_byok, settings, hung_sts
):
    """GIVEN an empty data-key cache and an STS that never answers
    WHEN 16 threads need the version's data key at the same moment
    THEN one load runs (one AssumeRole: at most the data plane's attempts reach STS, no
    KMS Decrypt), and every thread gets the same transient STS error within the budget."""
    budget = _short_budget(settings)
    accepted = hung_sts()
    data_key_cache = DataKeyCache(ttl_seconds=60, loader=records.load_data_key)

    started = time.monotonic()
    results = run_threads(16, lambda: read_key(data_key_cache, role_byok.registration))
    elapsed = time.monotonic() - started

    assert all(isinstance(r, sts.StsTransientError) and r.reason == sts.Reason.TIMEOUT for r in results)
    assert data_key_cache.stats()["kms_decrypts"] == 1
    assert data_key_cache.stats()["waits"] == 15
    assert 1 <= len(accepted) <= records.DATA_PLANE_KMS_MAX_ATTEMPTS
    assert elapsed < 3 * budget + 5


def test_it_assumes_the_role_and_decrypts_once_for_many_cold_requests(role_byok, monkeypatch):
    """GIVEN a role-mode version (moto) and an empty data-key cache
    WHEN 16 threads need its data key at the same moment
    THEN AssumeRole and KMS Decrypt are each called once, and every thread gets the data key."""
    calls: list[str] = []
    real_assume, real_decrypt = sts.role_sessions._assume, kms.decrypt

    def counted(name, real):
        def call(**kwargs):
            calls.append(name)
            time.sleep(0.2)  # long enough for every thread to join the flight
            return real(**kwargs)

        return call

    monkeypatch.setattr(sts.role_sessions, "_assume", counted("AssumeRole", real_assume))
    monkeypatch.setattr(kms, "decrypt", counted("Decrypt", real_decrypt))
    data_key_cache = DataKeyCache(ttl_seconds=60, loader=records.load_data_key)

    results = run_threads(16, lambda: read_key(data_key_cache, role_byok.registration))

    assert calls == ["AssumeRole", "Decrypt"]
    assert set(results) == {role_byok.plaintext_data_key()}
