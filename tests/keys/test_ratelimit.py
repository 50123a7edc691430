"""The data-plane rate limit (keys/ratelimit.py): token buckets per API key, in Redis or in
process memory; 429 ``rate_limited`` with ``Retry-After``; fail open when Redis is down.

Redis tests use a spare database (``SPARE_REDIS_URL``) and a key prefix of their own, and
delete only the keys under that prefix."""

from __future__ import annotations

import logging
import threading
import uuid

import pytest
import redis

from keys.api import ratelimit
from keys.api.ratelimit import LocalRateLimiter, RedisRateLimiter
from tests.factories import error_of
from tests.support import FakeClock

SPARE_REDIS_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(SPARE_REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client):
    """A key prefix no one else uses; its keys are deleted afterwards."""
    prefix = f"test:ratelimit:{uuid.uuid4().hex}"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}:*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture(params=["local", "redis"])
def make_limiter(request, redis_client, prefix):
    """Both implementations, with a fake clock."""

    def make(per_minute: int, clock: FakeClock):
        if request.param == "local":
            return LocalRateLimiter(per_minute=per_minute, clock=clock)
        return RedisRateLimiter(per_minute=per_minute, client=redis_client, prefix=prefix, clock=clock)

    return make


@pytest.fixture
def fresh_limiter():
    """Each test builds the process-wide limiter from its own settings."""
    ratelimit._limiter = None
    yield
    ratelimit._limiter = None


# ---------------------------------------------------------------------------
# The token bucket (both implementations)
# ---------------------------------------------------------------------------


def test_it_allows_a_minutes_worth_at_once_then_refuses_with_retry_after(make_limiter):
    clock = FakeClock(start=1_000_000.0)
    limiter = make_limiter(60, clock)

    decisions = [limiter.hit("k1") for _ in range(61)]

    assert all(d.allowed for d in decisions[:60])
    assert [d.remaining for d in decisions[:3]] == [59, 58, 57]
    refused = decisions[60]
    assert not refused.allowed
    assert refused.retry_after == 1 and refused.limit == 60


def test_it_refills_at_the_per_second_rate(make_limiter):
    clock = FakeClock(start=1_000_000.0)
    limiter = make_limiter(120, clock)  # 2 tokens a second
    for _ in range(120):
        assert limiter.hit("k1").allowed
    assert not limiter.hit("k1").allowed

    clock.advance(1.0)

    assert limiter.hit("k1").allowed
    assert limiter.hit("k1").allowed
    assert not limiter.hit("k1").allowed


def test_it_says_how_many_seconds_until_the_next_token(make_limiter):
    clock = FakeClock(start=1_000_000.0)
    limiter = make_limiter(1, clock)  # one request a minute
    assert limiter.hit("k1").allowed

    assert limiter.hit("k1").retry_after == 60
    clock.advance(45.5)
    assert limiter.hit("k1").retry_after == 15
    clock.advance(14.5)
    assert limiter.hit("k1").allowed


def test_it_does_not_take_a_token_for_a_refused_request(make_limiter):
    clock = FakeClock(start=1_000_000.0)
    limiter = make_limiter(60, clock)
    for _ in range(60):
        limiter.hit("k1")
    for _ in range(100):  # a client hammering while refused
        assert not limiter.hit("k1").allowed

    clock.advance(1.0)

    assert limiter.hit("k1").allowed


def test_it_keeps_one_bucket_per_api_key(make_limiter):
    clock = FakeClock(start=1_000_000.0)
    limiter = make_limiter(2, clock)
    assert limiter.hit("k1").allowed and limiter.hit("k1").allowed
    assert not limiter.hit("k1").allowed

    assert limiter.hit("k2").allowed


def test_it_never_refills_past_the_limit(make_limiter):
    clock = FakeClock(start=1_000_000.0)
    limiter = make_limiter(10, clock)
    limiter.hit("k1")
    clock.advance(3600)

    allowed = sum(limiter.hit("k1").allowed for _ in range(20))

    assert allowed == 10


def test_it_refills_nothing_when_the_clock_goes_back(make_limiter):
    clock = FakeClock(start=1_000_000.0)
    limiter = make_limiter(2, clock)
    limiter.hit("k1"), limiter.hit("k1")
    clock.advance(-30)  # another host's clock, a little behind

    assert not limiter.hit("k1").allowed


# ---------------------------------------------------------------------------
# Redis specifics
# ---------------------------------------------------------------------------


def test_it_shares_one_bucket_between_processes_through_redis(redis_client, prefix):
    clock = FakeClock(start=1_000_000.0)
    web_1 = RedisRateLimiter(per_minute=3, client=redis_client, prefix=prefix, clock=clock)
    web_2 = RedisRateLimiter(per_minute=3, client=redis.Redis.from_url(SPARE_REDIS_URL), prefix=prefix, clock=clock)

    answers = [web_1.hit("k1").allowed, web_2.hit("k1").allowed, web_1.hit("k1").allowed, web_2.hit("k1").allowed]

    assert answers == [True, True, True, False]


def test_it_takes_exactly_the_limit_under_concurrent_requests(redis_client, prefix):
    limiter = RedisRateLimiter(per_minute=100, url=SPARE_REDIS_URL, prefix=prefix, clock=lambda: 5_000.0)
    allowed: list[bool] = []
    lock = threading.Lock()

    def hammer():
        for _ in range(15):
            decision = limiter.hit("k1")
            with lock:
                allowed.append(decision.allowed)

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(allowed) == 240 and sum(allowed) == 100


def test_it_lets_an_idle_bucket_expire_in_redis(redis_client, prefix):
    limiter = RedisRateLimiter(per_minute=600, client=redis_client, prefix=prefix, clock=FakeClock(start=1_000_000.0))

    limiter.hit("k1")

    ttl_ms = redis_client.pttl(f"{prefix}:k1")
    assert 0 < ttl_ms <= 61_000  # a full refill takes 60 s; one second of slack
    assert set(redis_client.hgetall(f"{prefix}:k1")) == {b"tokens", b"ts"}


def test_it_fails_open_with_one_warning_when_redis_is_unreachable(caplog):
    limiter = RedisRateLimiter(per_minute=1, url="redis://127.0.0.1:1/0", prefix="test:unreachable")

    with caplog.at_level(logging.WARNING, logger="keys.api.ratelimit"):
        decisions = [limiter.hit("k1") for _ in range(5)]

    assert all(d.allowed for d in decisions)
    warnings = [r for r in caplog.records if r.name == "keys.api.ratelimit"]
    assert len(warnings) == 1
    assert "fail open" in warnings[0].getMessage()


def test_it_does_not_ask_a_failing_redis_again_for_a_while(monkeypatch):
    limiter = RedisRateLimiter(per_minute=1, url=SPARE_REDIS_URL, prefix="test:failing")
    calls: list[int] = []

    def broken(**kwargs):
        calls.append(1)
        raise redis.ConnectionError("down")

    monkeypatch.setattr(limiter, "_script", broken)
    for _ in range(10):
        assert limiter.hit("k1").allowed
    assert len(calls) == 1

    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: 10**9)  # long after the pause
    limiter.hit("k1")
    assert len(calls) == 2


# ---------------------------------------------------------------------------
# The process-wide limiter, from settings
# ---------------------------------------------------------------------------


def test_it_uses_redis_when_redis_url_is_set_and_process_memory_otherwise(settings, fresh_limiter):
    settings.API_RATE_LIMIT_PER_MINUTE = 100
    settings.REDIS_URL = SPARE_REDIS_URL
    assert isinstance(ratelimit.get_limiter(), RedisRateLimiter)
    assert ratelimit.get_limiter() is ratelimit.get_limiter()

    settings.REDIS_URL = ""
    assert isinstance(ratelimit.get_limiter(), LocalRateLimiter)


def test_it_turns_the_limit_off_at_zero(settings, fresh_limiter):
    settings.API_RATE_LIMIT_PER_MINUTE = 0

    assert ratelimit.get_limiter() is None
    assert ratelimit.api_key_hit("abcd1234") is None


# ---------------------------------------------------------------------------
# Through the API
# ---------------------------------------------------------------------------


@pytest.fixture
def limited(db, settings, fresh_limiter, redis_client):
    """The API limited to 3 requests a minute per API key, in the spare Redis database.
    Buckets are named by API key prefix; the test's own are deleted afterwards."""
    settings.API_RATE_LIMIT_PER_MINUTE = 3
    settings.REDIS_URL = SPARE_REDIS_URL
    yield
    from keys.models import ApiKey

    for prefix in ApiKey.objects.values_list("prefix", flat=True):
        redis_client.delete(f"{ratelimit.KEY_PREFIX}:{prefix}")


def test_it_answers_429_rate_limited_with_retry_after_past_the_limit(api, limited):  # noqa: F811
    answers = [api.put("r1", {"body": i}).status_code for i in range(3)]

    refused = api.get("r1")

    assert answers == [200, 200, 200]
    assert refused.status_code == 429
    error = error_of(refused)
    assert error["code"] == "rate_limited" and "3 requests a minute" in error["message"]
    assert int(refused["Retry-After"]) == 20  # 3 a minute: one token every 20 s
    assert refused["Cache-Control"] == "no-store"


def test_it_limits_each_api_key_on_its_own(api, limited, client, environment, alice):  # noqa: F811
    from keys.services import api_keys

    for _ in range(3):
        api.get("nothing")
    assert api.get("nothing").status_code == 429
    _, other_key = api_keys.api_key_create(environment=environment, name="other", actor=alice)

    response = client.get(f"{api.base}/nothing", HTTP_AUTHORIZATION=f"Bearer {other_key}")

    assert response.status_code == 404


def test_it_does_not_count_requests_that_fail_authentication(api, limited, client):  # noqa: F811
    for _ in range(5):
        assert client.get(f"{api.base}/r1", HTTP_AUTHORIZATION="Bearer byok_00000000_" + "x" * 43).status_code == 401

    assert api.get("r1").status_code == 404


def test_it_serves_every_request_when_the_limit_is_off(api, settings, fresh_limiter):  # noqa: F811
    settings.API_RATE_LIMIT_PER_MINUTE = 0

    assert {api.get("r1").status_code for _ in range(10)} == {404}


def test_it_serves_requests_when_redis_is_down_and_logs_a_warning(api, settings, fresh_limiter, caplog):  # noqa: F811
    settings.API_RATE_LIMIT_PER_MINUTE = 1
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    with caplog.at_level(logging.WARNING, logger="keys.api.ratelimit"):
        answers = [api.put("r1", {"body": i}).status_code for i in range(3)]

    assert answers == [200, 200, 200]
    assert any("Redis unreachable" in r.getMessage() for r in caplog.records if r.name == "keys.api.ratelimit")


def test_it_limits_in_process_memory_without_redis(api, settings, fresh_limiter):  # noqa: F811
    settings.API_RATE_LIMIT_PER_MINUTE = 2
    settings.REDIS_URL = ""

    answers = [api.get("r1").status_code for _ in range(3)]

    assert answers == [404, 404, 429]


# DELETE: one statement that authenticates and deletes; the bucket is looked at before
# and charged after (keys/api/ratelimit.py, "DELETE: checked before, charged after").


def _wrong_secret(api_key: str) -> str:
    prefix = api_key.split("_")[1]
    return f"Bearer byok_{prefix}_" + "A" * 43


def test_it_deletes_nothing_and_takes_no_token_for_a_delete_with_a_wrong_secret(api, api_key, limited, client):  # noqa: F811
    assert api.put("r1", {"body": 1}).status_code == 200  # 1 of 3

    refused = [client.delete(f"{api.base}/r1", HTTP_AUTHORIZATION=_wrong_secret(api_key)).status_code for _ in range(5)]

    assert refused == [401] * 5
    assert api.get("r1").status_code == 200  # 2 of 3: the record is there, the bucket was not drained
    assert api.delete("r1").status_code == 204  # 3 of 3
    assert api.get("r1").status_code == 429


def test_it_answers_429_to_a_delete_over_the_limit_and_deletes_nothing(api, limited):  # noqa: F811
    assert [api.put("r1", {"body": i}).status_code for i in range(3)] == [200, 200, 200]

    refused = api.delete("r1")

    assert refused.status_code == 429 and error_of(refused)["code"] == "rate_limited"
    from keys.models import Record

    assert Record.objects.filter(record_key="r1").exists()


def test_it_answers_401_not_429_to_a_delete_with_a_wrong_secret_over_the_limit(api, api_key, limited, client):  # noqa: F811
    for i in range(3):
        api.put("r1", {"body": i})

    response = client.delete(f"{api.base}/r1", HTTP_AUTHORIZATION=_wrong_secret(api_key))

    assert response.status_code == 401


def test_it_takes_one_token_for_a_delete(api, limited):  # noqa: F811
    api.put("r1", {"body": 1})

    assert api.delete("r1").status_code == 204
    assert api.get("r1").status_code == 404  # 3 of 3
    assert api.get("r1").status_code == 429


def test_it_peeks_without_taking_a_token(make_limiter):
    clock = FakeClock()
    limiter = make_limiter(2, clock)

    peeks = [limiter.peek("k").allowed for _ in range(5)]
    hits = [limiter.hit("k").allowed for _ in range(3)]

    assert peeks == [True] * 5
    assert hits == [True, True, False]
    assert limiter.peek("k").allowed is False
    assert limiter.peek("k").retry_after == 30  # 2 a minute: one token every 30 s
