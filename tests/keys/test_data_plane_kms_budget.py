"""The data plane's KMS Decrypt (a data-key cache miss inside an API request) has its own,
short budget: ``settings.DATA_PLANE_KMS_CONNECT_TIMEOUT_SECONDS`` / ``..._READ_TIMEOUT_SECONDS``
and ``keys.services.records.DATA_PLANE_KMS_MAX_ATTEMPTS`` attempts, through the same
``kms.KmsClientOptions`` eager validation uses (``INLINE_KMS_OPTIONS``).

Before: a KMS that accepted the connection and never answered held every request that
missed the cache 30.1 s (three botocore attempts of 10 s) before 503 key_unavailable."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from keys import cache, kms
from keys.services import records
from tests.factories import error_of
from tests.support import hung_endpoint



@pytest.fixture
def hung_kms(settings):
    """A KMS endpoint that accepts every connection and never answers; yields the connections
    it accepted (one per HTTP attempt botocore made). Set as AWS_KMS_ENDPOINT_URL only when
    the test calls the returned function (after the record was written under moto)."""
    with hung_endpoint() as (url, accepted):

        def switch_to_it() -> list[socket.socket]:
            settings.AWS_KMS_ENDPOINT_URL = url
            kms.clear_clients()
            return accepted

        yield switch_to_it
    kms.clear_clients()


def test_it_gives_the_data_plane_decrypt_its_own_short_timeouts_and_two_attempts(
    api, byok, settings, built_clients
):
    """The loader of the data-key cache builds its KMS client with the data-plane settings,
    shorter than validation's (KMS_CONNECT/READ_TIMEOUT_SECONDS), and at most 2 attempts."""
    settings.DATA_PLANE_KMS_CONNECT_TIMEOUT_SECONDS = 0.7
    settings.DATA_PLANE_KMS_READ_TIMEOUT_SECONDS = 1.3
    api.put("r1", {"body": 1})
    cache.clear()
    kms.clear_clients()
    built_clients.clear()

    assert api.get("r1").status_code == 200

    assert built_clients == [("kms", kms.KmsClientOptions(connect_timeout=0.7, read_timeout=1.3, max_attempts=2))]
    assert records.DATA_PLANE_KMS_MAX_ATTEMPTS == 2


def test_it_defaults_to_a_budget_shorter_than_validations():
    from django.conf import settings

    assert settings.DATA_PLANE_KMS_CONNECT_TIMEOUT_SECONDS < settings.KMS_CONNECT_TIMEOUT_SECONDS
    assert settings.DATA_PLANE_KMS_READ_TIMEOUT_SECONDS < settings.KMS_READ_TIMEOUT_SECONDS


def test_it_answers_503_key_unavailable_unreachable_when_kms_never_answers_a_cache_miss(
    api, byok, settings, hung_kms
):
    """GIVEN a record under an active BYOK version, an empty data-key cache and a KMS that
    accepts the connection and never answers
    WHEN the application reads the record
    THEN it gets 503 key_unavailable (reason unreachable, Retry-After) after at most the
    data plane's attempts, within a generous bound derived from the settings."""
    settings.DATA_PLANE_KMS_CONNECT_TIMEOUT_SECONDS = 1.0
    settings.DATA_PLANE_KMS_READ_TIMEOUT_SECONDS = 1.0
    api.put("r1", {"body": 1})
    cache.clear()
    accepted = hung_kms()
    budget = records.DATA_PLANE_KMS_MAX_ATTEMPTS * (
        settings.DATA_PLANE_KMS_CONNECT_TIMEOUT_SECONDS + settings.DATA_PLANE_KMS_READ_TIMEOUT_SECONDS
    )

    started = time.monotonic()
    got = api.get("r1")
    elapsed = time.monotonic() - started

    assert got.status_code == 503
    assert error_of(got)["code"] == "key_unavailable" and error_of(got)["reason"] == "unreachable"
    assert int(got["Retry-After"]) > 0
    assert 1 <= len(accepted) <= records.DATA_PLANE_KMS_MAX_ATTEMPTS
    # Generous (three times the budget plus backoff slack), far below the 30 s it took before.
    assert elapsed < 3 * budget + 5
