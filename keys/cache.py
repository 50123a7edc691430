"""The data-key cache: plaintext data keys in this process's memory, for at most the TTL.

What it holds
    One entry per key registration (key version), keyed by the registration's database id:
    the plaintext data key in a ``bytearray``, the ``crypto.RecordCipher`` made from it
    (its own copy of the data key and the AES-GCM contexts of the subkeys it derived: one
    per epoch of at most 2**28 records, and those of other epochs it decrypted), the
    registration's ``generation`` when the key was loaded, and the expiry time
    (``clock() + settings.DATA_KEY_CACHE_TTL_SECONDS``). The cipher shares the entry's TTL,
    eviction and wiping.
    Per process and in memory only: never Django's cache framework, Redis or the database
    (docs/architecture.md, "Invariants", 2). Each gunicorn worker, Celery worker and shell has its own.

How a caller uses it
    ::

        with get_cache().data_key_for(registration, loader=load) as data_key:   # read-only
            ...
        lease = get_cache().lease(registration, loader=load)                      # or the cipher
        try:
            envelope = lease.cipher.encrypt(plaintext=..., ...)
        finally:
            lease.release()

    The view is released when the block ends, so a reference kept by mistake cannot read
    the key afterwards. Entries are reference-counted: an entry evicted while a request is
    still encrypting with it is wiped when that request's block ends, never under it.

Loading (a miss)
    The cache does not know how a data key is produced: the caller passes a ``loader``
    (``registration -> bytearray``), or the cache was made with one. The records service
    passes ``keys.services.records.load_data_key``, which does this:
    ``managed`` versions unseal ``sealed_data_key`` with the sealing key; ``byok`` versions
    call KMS ``Decrypt`` with the registration's sealed IAM credentials, its KMS key ARN,
    encrypted data key and encryption context. The result must be 32 bytes. At most one
    load per (registration, generation) is in flight however many threads miss at once
    (single-flight): the first thread loads, the others wait on its ``threading.Event`` and
    get the same data key or the same exception. A failed load is never cached as a data
    key. A *transient* failure (the loader's exception says ``permanent = False``: KMS or
    STS throttling, timeout, unreachable) is held for ``TRANSIENT_FAILURE_HOLD_SECONDS``:
    lookups of that (registration, generation) meanwhile get the same exception at once
    instead of each waiting out another KMS attempt (seconds, when KMS hangs), so a KMS
    outage of one customer cannot take every web thread, and a throttled KMS is not called
    harder (AWS asks for back-off: https://docs.aws.amazon.com/kms/latest/developerguide/throttling.html).
    A new generation (the version changed) is not held. Any other failure is not held:
    the next request tries again.

Expiry and wiping
    An entry past its expiry is evicted by the lookup that finds it, by a sweep that runs at
    most once a second on any lookup, and by a daemon reaper thread (the process-wide cache
    only) that sweeps every second, so an unused plaintext does not outlive the TTL by more
    than about a second. Evicted plaintext is overwritten with zeros (``crypto.wipe``), and
    the entry's cipher is wiped with it (``RecordCipher.wipe``: its copy of the data key
    zeroed, its subkey contexts dropped).

Cross-process eviction (why a state change takes effect on the very next request)
    Plaintext never leaves the process, so there is nothing to broadcast; instead every
    data-plane request already loads the ``KeyRegistration`` row it is about to use, with
    the query that finds the key version (the environment's active version for a write;
    ``select_related`` from the record for a read; the versions of the records found, for
    ``find``). That row carries ``status`` and ``generation``: no extra query. ``keys.services.registrations.registration_transition`` bumps ``generation`` on every
    status change, and ``registration_replace_credentials`` bumps it too, in the same
    UPDATE. The cache then:

    * refuses any version whose status is not ``active`` or ``decrypt_only``
      (:class:`KeyVersionNotUsable`) and evicts its entry, and
    * evicts an entry whose ``generation`` is older than the row's, and loads afresh.

    So when any process — a web worker answering a KMS refusal, a Celery worker's periodic
    re-validation, an admin action — changes a registration, every other process stops
    using its cached plaintext on its own next request for that registration, not at TTL
    expiry; a process that gets no such request drops it at TTL. An entry *newer* than the
    row (the row was read just before another thread reloaded) is used: it was loaded under
    a later, usable state.

Counters for metrics: :meth:`DataKeyCache.stats` (hits, misses, waits, evictions, loads,
load_failures, kms_decrypts) and ``keys.metrics`` (``data_key_cache{event=…}``; KMS calls
are counted by ``keys.kms`` itself).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from keys import crypto, metrics
from keys.models import KeyRegistration

Clock = Callable[[], float]
Loader = Callable[[KeyRegistration], bytearray]

# How often expired entries are swept at the latest (seconds).
SWEEP_INTERVAL_SECONDS = 1.0
# How long a transient load failure is answered again without loading (seconds): shorter
# than the Retry-After the data plane sends for it (5 s), so a recovered KMS is seen soon.
TRANSIENT_FAILURE_HOLD_SECONDS = 2.0


class KeyVersionNotUsable(Exception):
    """The key version's status does not let the data plane use it (not ``active`` or
    ``decrypt_only``). ``status`` is the status; ``reason`` the inaccessible reason, or the
    status when there is none."""

    def __init__(self, registration: KeyRegistration) -> None:
        self.status = registration.status
        self.reason = registration.inaccessible_reason or registration.status
        super().__init__(f"Key version {registration.version} is {registration.get_status_display().lower()}.")


class DataKeyUnreadable(Exception):
    """The data key could not be produced for a reason on the platform's side, not KMS's:
    ``reason`` is ``credentials_unreadable`` (sealed IAM credentials cannot be unsealed),
    ``sealing_key_unavailable`` (a managed data key sealed under a missing sealing key or
    damaged) or ``invalid_data_key`` (the plaintext is not 32 bytes)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@sensitive_variables("data_key")
def _cipher(data_key: bytearray) -> crypto.RecordCipher:
    """The record cipher of a freshly loaded data key; on failure the key is wiped."""
    try:
        return crypto.RecordCipher(data_key)
    except BaseException:
        crypto.wipe(data_key)
        raise


def _wipe(entry: _Entry) -> None:
    crypto.wipe(entry.data_key)
    entry.cipher.wipe()


# ---------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Entry:
    registration_id: int
    generation: int
    data_key: bytearray = field(repr=False)
    cipher: crypto.RecordCipher = field(repr=False)
    expires_at: float
    users: int = 0
    evicted: bool = False


class _Flight:
    """One load in progress; waiters block on ``done`` and read ``entry`` or ``error``."""

    __slots__ = ("done", "entry", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.entry: _Entry | None = None
        self.error: BaseException | None = None


class Lease:
    """One use of a cached data key. ``data_key`` is a read-only view, valid until
    :meth:`release` (prefer :meth:`DataKeyCache.data_key_for`, which releases for you)."""

    __slots__ = ("_cache", "_entry", "_view")

    def __init__(self, cache: DataKeyCache, entry: _Entry) -> None:
        self._cache = cache
        self._entry = entry
        self._view: memoryview | None = memoryview(entry.data_key).toreadonly()

    @property
    def data_key(self) -> memoryview:
        if self._view is None:
            raise ValueError("This data-key lease was released.")
        return self._view

    @property
    def cipher(self) -> crypto.RecordCipher:
        """The record cipher cached beside the data key (same TTL, eviction and wiping)."""
        if self._view is None:
            raise ValueError("This data-key lease was released.")
        return self._entry.cipher

    @property
    def generation(self) -> int:
        return self._entry.generation

    def release(self) -> None:
        if self._view is None:
            return
        self._view.release()
        self._view = None
        self._cache._release(self._entry)

    def __enter__(self) -> memoryview:
        return self.data_key

    def __exit__(self, *exc: object) -> None:
        self.release()


class DataKeyCache:
    """Plaintext data keys by registration id; see the module docstring.

    ``ttl_seconds`` defaults to ``settings.DATA_KEY_CACHE_TTL_SECONDS``; ``clock`` returns
    seconds (monotonic; tests inject a fake one); ``loader`` produces a data key for a
    registration when a lookup passes none (the process-wide cache has none: the records
    service passes its own); ``reaper`` starts a daemon thread
    that sweeps expired entries every second (the process-wide cache does).
    """

    def __init__(
        self,
        *,
        ttl_seconds: float | None = None,
        clock: Clock = time.monotonic,
        loader: Loader | None = None,
        reaper: bool = False,
        failure_hold_seconds: float = TRANSIENT_FAILURE_HOLD_SECONDS,
    ) -> None:
        self.ttl_seconds = float(settings.DATA_KEY_CACHE_TTL_SECONDS if ttl_seconds is None else ttl_seconds)
        self._clock = clock
        self._loader = loader
        # One lock guards entries, flights, reference counts and counters; it is never
        # held during a load (KMS calls take milliseconds to seconds).
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}
        self._flights: dict[tuple[int, int], _Flight] = {}
        # (registration id, generation) -> (clock time until which it is held, the failure)
        self._held: dict[tuple[int, int], tuple[float, BaseException]] = {}
        self.failure_hold_seconds = failure_hold_seconds
        self._next_sweep = 0.0
        self._stats = dict.fromkeys(
            ("hits", "misses", "waits", "evictions", "loads", "load_failures", "held_failures", "kms_decrypts"), 0
        )
        self._reaper_wanted = reaper
        self._reaper: threading.Thread | None = None
        self._closed = threading.Event()

    # --- using a data key ---------------------------------------------------

    @contextmanager
    def data_key_for(self, registration: KeyRegistration, *, loader: Loader | None = None) -> Iterator[memoryview]:
        """``with cache.data_key_for(registration) as data_key:`` — a read-only view of the
        plaintext data key, released when the block ends.

        Raises :class:`KeyVersionNotUsable` for a version that is not active/decrypt-only,
        and whatever the loader raises on a miss (``kms.KmsPermanentError``,
        ``kms.KmsTransientError``, :class:`DataKeyUnreadable`).
        """
        lease = self.lease(registration, loader=loader)
        try:
            yield lease.data_key
        finally:
            lease.release()

    def lease(self, registration: KeyRegistration, *, loader: Loader | None = None) -> Lease:
        """Like :meth:`data_key_for`, for callers that need the lease object; call
        ``release()`` when done."""
        registration_id, generation = registration.pk, registration.generation
        if not registration.can_decrypt:
            self._evict_if_not_newer(registration_id, generation)
            raise KeyVersionNotUsable(registration)
        while True:
            with self._lock:
                now = self._clock()
                if now >= self._next_sweep:
                    self._sweep_locked(now)
                entry = self._entries.get(registration_id)
                if entry is not None and (entry.generation < generation or entry.expires_at <= now):
                    self._evict_locked(entry)
                    entry = None
                if entry is not None:
                    self._count("hits", "hit")
                    return self._lease_locked(entry)
                flight_key = (registration_id, generation)
                held = self._held.get(flight_key)
                if held is not None:
                    if held[0] > now:
                        self._stats["held_failures"] += 1
                        # Without its last traceback: raising one instance again adds the new
                        # frames to the old (thousands of requests in a hold would keep every
                        # one of their frames, API keys and record keys among their locals).
                        raise held[1].with_traceback(None)
                    del self._held[flight_key]
                flight = self._flights.get(flight_key)
                if flight is None:
                    flight = self._flights[flight_key] = _Flight()
                    self._count("misses", "miss")
                    leader = True
                else:
                    self._stats["waits"] += 1
                    leader = False
            if leader:
                return self._load(registration, flight, flight_key, loader or self._loader)
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            with self._lock:
                assert flight.entry is not None
                if not flight.entry.evicted:
                    return self._lease_locked(flight.entry)
            # Evicted between the load and this thread waking up (a newer generation
            # arrived, or it expired): look again.

    def lease_cached(self, registration_id: int, generation: int) -> Lease | None:
        """A lease on the data key of ``registration_id`` if this cache holds it unexpired at
        exactly ``generation``; else None, and nothing is loaded (no KMS call, no unsealing).

        For the one-statement PUT (``keys.services.records.record_put_guarded``), which
        encrypts under the version it last saw active, by id alone, and lets the write's
        guard (status and generation in SQL) say whether that version still is: a miss, an
        expired entry or another generation sends it down the path that reads the key
        version and may load it."""
        with self._lock:
            entry = self._entries.get(registration_id)
            if entry is None or entry.generation != generation or entry.expires_at <= self._clock():
                return None
            self._count("hits", "hit")
            return self._lease_locked(entry)

    def _load(
        self, registration: KeyRegistration, flight: _Flight, flight_key: tuple[int, int], loader: Loader | None
    ) -> Lease:
        if registration.is_byok:
            with self._lock:
                self._stats["kms_decrypts"] += 1
        try:
            if loader is None:
                raise TypeError("This data-key cache has no loader: pass one to lease() or to the cache.")
            data_key = loader(registration)
            cipher = _cipher(data_key)
        except BaseException as e:
            # Never cached as a key: the flight goes away; a transient failure is held briefly.
            with self._lock:
                self._flights.pop(flight_key, None)
                self._count("load_failures", "load_failure")
                if getattr(e, "permanent", None) is False and self.failure_hold_seconds > 0:
                    self._held[flight_key] = (self._clock() + self.failure_hold_seconds, e)
            flight.error = e
            flight.done.set()
            raise
        with self._lock:
            entry = _Entry(
                registration_id=registration.pk,
                generation=registration.generation,
                data_key=data_key,
                cipher=cipher,
                expires_at=self._clock() + self.ttl_seconds,
            )
            self._flights.pop(flight_key, None)
            self._stats["loads"] += 1
            current = self._entries.get(entry.registration_id)
            if current is not None and current.generation > entry.generation:
                # A newer generation was cached meanwhile: this one serves only its flight.
                entry.evicted = True
            else:
                if current is not None:
                    self._evict_locked(current)
                self._entries[entry.registration_id] = entry
            lease = self._lease_locked(entry)
            flight.entry = entry
        flight.done.set()
        self._start_reaper()
        return lease

    def _lease_locked(self, entry: _Entry) -> Lease:
        entry.users += 1
        return Lease(self, entry)

    def _release(self, entry: _Entry) -> None:
        with self._lock:
            entry.users -= 1
            if entry.evicted and entry.users == 0:
                _wipe(entry)

    # --- eviction -------------------------------------------------------------

    def evict(self, registration_id: int) -> bool:
        """Drop (and wipe, once unused) the entry of ``registration_id``; True if there was one."""
        with self._lock:
            entry = self._entries.get(registration_id)
            if entry is None:
                return False
            self._evict_locked(entry)
            return True

    def _evict_if_not_newer(self, registration_id: int, generation: int) -> None:
        with self._lock:
            entry = self._entries.get(registration_id)
            if entry is not None and entry.generation <= generation:
                self._evict_locked(entry)

    def clear(self) -> None:
        """Drop and wipe every entry, and forget held failures."""
        with self._lock:
            self._held.clear()
            for entry in list(self._entries.values()):
                self._evict_locked(entry)

    def sweep(self) -> int:
        """Evict every expired entry now; returns how many."""
        with self._lock:
            return self._sweep_locked(self._clock())

    def _sweep_locked(self, now: float) -> int:
        self._next_sweep = now + min(SWEEP_INTERVAL_SECONDS, self.ttl_seconds)
        expired = [e for e in self._entries.values() if e.expires_at <= now]
        for entry in expired:
            self._evict_locked(entry)
        for key in [k for k, (until, _) in self._held.items() if until <= now]:
            del self._held[key]
        return len(expired)

    def _evict_locked(self, entry: _Entry) -> None:
        if self._entries.get(entry.registration_id) is entry:
            del self._entries[entry.registration_id]
        if entry.evicted:
            return
        entry.evicted = True
        self._count("evictions", "eviction")
        if entry.users == 0:
            _wipe(entry)

    # --- the reaper -------------------------------------------------------------

    def _start_reaper(self) -> None:
        if not self._reaper_wanted or self._reaper is not None:
            return
        with self._lock:
            if self._reaper is not None:
                return
            self._reaper = threading.Thread(target=self._reap, name="data-key-cache-reaper", daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        interval = min(SWEEP_INTERVAL_SECONDS, self.ttl_seconds)
        while not self._closed.wait(interval):
            self.sweep()

    def close(self) -> None:
        """Stop the reaper and wipe everything (tests; process shutdown)."""
        self._closed.set()
        self.clear()

    # --- introspection ----------------------------------------------------------

    def _count(self, stat: str, event: str) -> None:
        self._stats[stat] += 1
        metrics.increment("data_key_cache", event=event)

    def stats(self) -> dict[str, int]:
        """Counters since this cache was made: ``hits``, ``misses`` (lookups that started a
        load), ``waits`` (lookups that joined a load in flight), ``evictions``, ``loads``
        (successful), ``load_failures``, ``held_failures`` (lookups answered with a held
        transient failure), ``kms_decrypts`` (KMS Decrypt attempts), and
        ``size`` (entries held now)."""
        with self._lock:
            return {**self._stats, "size": len(self._entries)}

    def generation_of(self, registration_id: int) -> int | None:
        """The generation of the cached entry, or None if there is none (tests, support)."""
        with self._lock:
            entry = self._entries.get(registration_id)
            return entry.generation if entry is not None else None

    def __contains__(self, registration_id: object) -> bool:
        with self._lock:
            return registration_id in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# ---------------------------------------------------------------------------
# The process-wide cache
# ---------------------------------------------------------------------------

_cache: DataKeyCache | None = None
_cache_lock = threading.Lock()


def get_cache() -> DataKeyCache:
    """This process's data-key cache (made on first use, with a reaper thread)."""
    global _cache
    if _cache is None:
        with _cache_lock:
            if _cache is None:
                _cache = DataKeyCache(reaper=True)
    return _cache


def set_cache(cache: DataKeyCache | None) -> DataKeyCache | None:
    """Replace the process-wide cache (tests inject one with a fake clock); the old one is
    closed (wiped). Returns the old one."""
    global _cache
    with _cache_lock:
        old, _cache = _cache, cache
    if old is not None and old is not cache:
        old.close()
    return old


def evict(registration_id: int) -> bool:
    """Evict one registration from this process's cache (see :meth:`DataKeyCache.evict`)."""
    return get_cache().evict(registration_id)


def clear() -> None:
    """Wipe this process's cache."""
    if _cache is not None:
        _cache.clear()


def stats() -> dict[str, int]:
    """This process's cache counters (see :meth:`DataKeyCache.stats`)."""
    return get_cache().stats()


def _reset_after_fork() -> None:
    # A forked child (gunicorn worker, Celery prefork child) starts with an empty cache of
    # its own: the parent's reaper thread does not exist there and its lock may have been
    # held at fork time. The inherited copies of the parent's plaintext are wiped.
    global _cache, _cache_lock
    old, _cache, _cache_lock = _cache, None, threading.Lock()
    if old is not None:
        for entry in old._entries.values():
            _wipe(entry)


os.register_at_fork(after_in_child=_reset_after_fork)
