"""Per-API-key request rate limit of the data-plane API (abuse protection).

A token bucket per API key: it holds at most ``API_RATE_LIMIT_PER_MINUTE`` tokens and
refills at ``API_RATE_LIMIT_PER_MINUTE / 60`` tokens per second; every request takes one.
So a client may send a minute's worth at once, then as fast as the refill allows. A request
finding less than one token is refused (``keys.api.views`` answers 429 ``rate_limited``) with
``retry_after``: the whole seconds until a token is there again. A refused request takes
nothing, so a client that backs off as told gets through. ``API_RATE_LIMIT_PER_MINUTE=0``
turns the limit off.

Where the buckets live
    ``REDIS_URL`` set (production): in Redis, one hash per API key
    (``byok:ratelimit:<API key prefix>``, fields ``tokens`` and ``ts``), read, refilled and
    taken from by one Lua script (:data:`TOKEN_BUCKET_LUA`), so that the web processes of
    every host share one bucket per API key and two requests cannot both take the last
    token. The key expires once a full bucket would have refilled, so idle API keys cost
    nothing. The time is the web process's clock (hosts keep theirs with NTP); a clock that
    is behind the stored ``ts`` refills nothing rather than a negative amount.

    ``REDIS_URL`` unset (the embedded default, tests without Redis): in this process's
    memory (:class:`LocalRateLimiter`). Each process then has buckets of its own: with N
    processes a client may get up to N times the limit. Good enough for one development
    process; production sets ``REDIS_URL``.

DELETE: checked before, charged after
    A DELETE is one SQL statement that authenticates the API key and deletes the record
    together (``keys.services.api_keys.api_key_record_delete``), so the bucket cannot be
    charged between the two. It is looked at first (:meth:`~LocalRateLimiter.peek`, which
    takes nothing): an empty bucket sends the request down the two-statement path
    (authenticate, then 429 from :func:`api_key_hit`, nothing deleted); otherwise the
    statement runs and, if the key authenticated, the request takes its token afterwards
    (:func:`api_key_hit`, whatever it answers: the record is gone). A request that fails
    authentication takes nothing, as everywhere else, so knowing a key's prefix does not
    let anyone drain its bucket. Concurrent DELETEs of one key may overdraw the bucket by
    at most their number (each looked before the others took); the bucket never goes
    below zero.

When Redis cannot be reached: fail open
    If Redis is configured but a call fails (connection refused, timeout, any Redis error),
    the request is allowed and a warning is logged (at most once every
    :data:`WARN_INTERVAL_SECONDS`); Redis is not asked again for
    :data:`RETRY_REDIS_AFTER_SECONDS`, so an outage does not add a timeout to every
    request. The reason: the limiter protects the platform from abuse, while refusing
    requests would take every customer's records offline because of a component that holds
    no customer data. An outage of the limiter costs protection for its duration, not
    availability. Socket timeouts are short (:data:`REDIS_TIMEOUT_SECONDS`) for the same
    reason.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from django.conf import settings

log = logging.getLogger(__name__)

Clock = Callable[[], float]

KEY_PREFIX = "byok:ratelimit"
# Seconds to wait for Redis: a limiter slower than the request it guards is worse than none.
REDIS_TIMEOUT_SECONDS = 0.25
# After a Redis failure, requests skip Redis (allowed) for this long.
RETRY_REDIS_AFTER_SECONDS = 5.0
# At most one "Redis unreachable" warning per this many seconds.
WARN_INTERVAL_SECONDS = 60.0
# In-process buckets kept at most (the least recently used are dropped beyond).
LOCAL_MAX_BUCKETS = 10_000

# A bucket this close to one token has one: refill arithmetic in floating point must not
# keep a client waiting for a rounding error.
EPSILON = 1e-9

# What both scripts start with: the arguments and the bucket as stored (nil when new).
READ_BUCKET_LUA = """
local EPSILON = 1e-9
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
"""

# KEYS[1] bucket; ARGV: capacity, refill per second, now (seconds, float).
# Returns {allowed (0/1), tokens left (string), seconds until one token (string)}: Lua
# numbers come back from Redis as integers, so the fractions travel as strings.
TOKEN_BUCKET_LUA = READ_BUCKET_LUA + """if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
  ts = now
end
local allowed = 0
local wait = 0
if tokens >= 1 - EPSILON then
  tokens = math.max(0, tokens - 1)
  allowed = 1
else
  wait = (1 - tokens) / rate
end
-- %.17g keeps every bit of a double (tostring keeps 14 digits: a bucket would lose
-- a little at every request).
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.17g', ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, string.format('%.17g', tokens), string.format('%.17g', wait)}
"""

# The same refill without taking or writing anything: would a request be allowed now?
PEEK_LUA = READ_BUCKET_LUA + """if tokens == nil or ts == nil then
  return {1, string.format('%.17g', capacity), '0'}
end
if now > ts then
  tokens = math.min(capacity, tokens + (now - ts) * rate)
end
if tokens >= 1 - EPSILON then
  return {1, string.format('%.17g', tokens), '0'}
end
return {0, string.format('%.17g', tokens), string.format('%.17g', (1 - tokens) / rate)}
"""


@dataclass(frozen=True)
class Decision:
    """The answer for one request: ``allowed``; ``limit`` (requests per minute);
    ``remaining`` (whole tokens left); ``retry_after`` (seconds, ≥ 1, when refused; else 0)."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: int = 0


def _retry_after(wait_seconds: float) -> int:
    return max(1, math.ceil(wait_seconds))


class LocalRateLimiter:
    """Token buckets in this process's memory (see the module docstring)."""

    def __init__(self, *, per_minute: int, clock: Clock = time.monotonic) -> None:
        self.limit = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, ts)

    def hit(self, key: str) -> Decision:
        with self._lock:
            now = self._clock()
            tokens, ts = self._buckets.pop(key, (float(self.limit), now))
            if now > ts:
                tokens, ts = min(float(self.limit), tokens + (now - ts) * self._rate), now
            allowed = tokens >= 1 - EPSILON
            if allowed:
                tokens = max(0.0, tokens - 1)
            self._buckets[key] = (tokens, ts)  # re-inserted last: dicts keep insertion order
            if len(self._buckets) > LOCAL_MAX_BUCKETS:
                del self._buckets[next(iter(self._buckets))]
        if allowed:
            return Decision(True, self.limit, int(tokens))
        return Decision(False, self.limit, 0, _retry_after((1 - tokens) / self._rate))

    def peek(self, key: str) -> Decision:
        """What :meth:`hit` would answer now, taking nothing."""
        with self._lock:
            now = self._clock()
            tokens, ts = self._buckets.get(key, (float(self.limit), now))
            if now > ts:
                tokens = min(float(self.limit), tokens + (now - ts) * self._rate)
        if tokens >= 1 - EPSILON:
            return Decision(True, self.limit, int(tokens))
        return Decision(False, self.limit, 0, _retry_after((1 - tokens) / self._rate))


class RedisRateLimiter:
    """Token buckets in Redis, shared by every process (see the module docstring).
    Fails open when Redis cannot be reached."""

    def __init__(
        self,
        *,
        per_minute: int,
        url: str | None = None,
        client: redis.Redis | None = None,
        prefix: str = KEY_PREFIX,
        clock: Clock = time.time,
    ) -> None:
        self.limit = per_minute
        self._rate = per_minute / 60.0
        self._prefix = prefix
        self._clock = clock
        self._client = client or redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        self._script = self._client.register_script(TOKEN_BUCKET_LUA)
        self._peek_script = self._client.register_script(PEEK_LUA)
        self._skip_until = 0.0
        self._warned_at = -math.inf

    def hit(self, key: str) -> Decision:
        return self._run(self._script, key)

    def peek(self, key: str) -> Decision:
        """What :meth:`hit` would answer now, taking nothing (fails open the same way)."""
        return self._run(self._peek_script, key)

    def _run(self, script, key: str) -> Decision:
        if time.monotonic() < self._skip_until:
            return Decision(True, self.limit, self.limit)
        try:
            allowed, tokens, wait = script(
                keys=[f"{self._prefix}:{key}"], args=[self.limit, repr(self._rate), repr(self._clock())]
            )
        except redis.RedisError as e:
            self._fail_open(e)
            return Decision(True, self.limit, self.limit)
        if int(allowed):
            return Decision(True, self.limit, int(float(tokens)))
        return Decision(False, self.limit, 0, _retry_after(float(wait)))

    def _fail_open(self, error: Exception) -> None:
        now = time.monotonic()
        self._skip_until = now + RETRY_REDIS_AFTER_SECONDS
        if now - self._warned_at >= WARN_INTERVAL_SECONDS:
            self._warned_at = now
            log.warning(
                "API rate limit not enforced: Redis unreachable (%s); requests are allowed "
                "(fail open) and Redis is tried again in %.0f s.",
                type(error).__name__, RETRY_REDIS_AFTER_SECONDS,
                extra={"error": type(error).__name__},
            )


RateLimiter = LocalRateLimiter | RedisRateLimiter

_limiter: tuple[tuple[str, int], RateLimiter] | None = None
_limiter_lock = threading.Lock()


def get_limiter() -> RateLimiter | None:
    """This process's limiter for the current settings (None when the limit is off)."""
    global _limiter
    per_minute = int(getattr(settings, "API_RATE_LIMIT_PER_MINUTE", 0) or 0)
    if per_minute <= 0:
        return None
    config = (getattr(settings, "REDIS_URL", "") or "", per_minute)
    current = _limiter
    if current is not None and current[0] == config:
        return current[1]
    with _limiter_lock:
        if _limiter is None or _limiter[0] != config:
            url = config[0]
            limiter = RedisRateLimiter(per_minute=per_minute, url=url) if url else LocalRateLimiter(per_minute=per_minute)
            _limiter = (config, limiter)
        return _limiter[1]


def api_key_hit(api_key_prefix: str) -> Decision | None:
    """Take one request from the bucket of the API key whose prefix is ``api_key_prefix``
    (public: 8 hex characters, unique across databases sharing a Redis); None when the
    limit is off."""
    limiter = get_limiter()
    return None if limiter is None else limiter.hit(api_key_prefix)


def api_key_peek(api_key_prefix: str) -> Decision | None:
    """What :func:`api_key_hit` would answer now, taking nothing; None when the limit is
    off (see "DELETE: checked before, charged after" above)."""
    limiter = get_limiter()
    return None if limiter is None else limiter.peek(api_key_prefix)
