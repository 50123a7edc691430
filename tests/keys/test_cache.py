"""Tests of keys/cache.py, the data-key cache: TTL, single-flight, failures, generation
eviction, wiping, and eviction across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db.models import F

from keys import cache, kms, metrics
from keys.services import records
from keys.services import registrations
from keys.cache import DataKeyCache, KeyVersionNotUsable
from keys.models import KeyRegistration
from tests.support import FakeClock, database_url, wait_for

Status = KeyRegistration.Status
BASE_DIR = Path(__file__).resolve().parents[2]


class CountingLoader:
    """A loader that returns a fresh 32-byte key per call and remembers what it gave."""

    def __init__(self, delay: float = 0.0, error: BaseException | None = None) -> None:
        self.calls = 0
        self.delay = delay
        self.error = error
        self.given: list[bytearray] = []
        self._lock = threading.Lock()

    def __call__(self, registration: KeyRegistration) -> bytearray:
        with self._lock:
            self.calls += 1
            n = self.calls
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        key = bytearray([n]) * 32
        self.given.append(key)
        return key


def registration(pk: int = 1, *, generation: int = 1, status: str = Status.ACTIVE, kind: str = "managed") -> KeyRegistration:
    """An unsaved registration: the cache needs only id, generation, status and kind."""
    return KeyRegistration(pk=pk, version=1, generation=generation, status=status, kind=kind)


def run_threads(n: int, target) -> list:
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target()
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def read_key(data_key_cache: DataKeyCache, reg: KeyRegistration) -> bytes:
    with data_key_cache.data_key_for(reg) as data_key:
        return bytes(data_key)


# ---------------------------------------------------------------------------
# Hits, TTL and wiping
# ---------------------------------------------------------------------------


def test_it_loads_once_and_then_serves_from_memory():
    loader = CountingLoader()
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=FakeClock(), loader=loader)

    first = read_key(data_key_cache, registration())
    second = read_key(data_key_cache, registration())

    assert first == second == bytes([1]) * 32
    assert loader.calls == 1
    stats = data_key_cache.stats()
    assert (stats["hits"], stats["misses"], stats["loads"], stats["size"]) == (1, 1, 1, 1)


def test_it_reads_the_ttl_from_settings(settings):
    settings.DATA_KEY_CACHE_TTL_SECONDS = 17
    assert DataKeyCache().ttl_seconds == 17


def test_it_reloads_exactly_once_after_the_ttl_and_wipes_the_expired_key():
    clock = FakeClock()
    loader = CountingLoader()
    data_key_cache = DataKeyCache(ttl_seconds=300, clock=clock, loader=loader)
    read_key(data_key_cache, registration())

    clock.advance(299.9)
    read_key(data_key_cache, registration())
    assert loader.calls == 1

    clock.advance(0.1)
    results = run_threads(16, lambda: read_key(data_key_cache, registration()))

    assert loader.calls == 2
    assert set(results) == {bytes([2]) * 32}
    assert loader.given[0] == bytearray(32)  # the expired plaintext was overwritten
    assert data_key_cache.stats()["evictions"] == 1


def test_it_hands_out_a_read_only_view_that_dies_with_the_block():
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=FakeClock(), loader=CountingLoader())

    with data_key_cache.data_key_for(registration()) as data_key:
        with pytest.raises(TypeError):
            data_key[0] = 0
        kept = data_key

    with pytest.raises(ValueError):
        bytes(kept)


def test_it_keeps_an_evicted_key_intact_until_its_last_user_is_done():
    loader = CountingLoader()
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=FakeClock(), loader=loader)

    with data_key_cache.data_key_for(registration()) as data_key:
        assert data_key_cache.evict(1) is True
        assert bytes(data_key) == bytes([1]) * 32  # still usable by the request holding it
        assert 1 not in data_key_cache

    assert loader.given[0] == bytearray(32)


def test_it_sweeps_expired_entries_in_the_background_without_any_lookup():
    loader = CountingLoader()
    # A fake clock: with a real one and a 0.2 s TTL, a loaded machine could let the reaper
    # sweep the entry before the first check below. The reaper still wakes on real time
    # (every second at most) and reads this clock.
    clock = FakeClock()
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=clock, loader=loader, reaper=True)
    try:
        read_key(data_key_cache, registration())
        assert 1 in data_key_cache

        clock.advance(61)
        wait_for(lambda: 1 not in data_key_cache, timeout=30, what="the reaper to sweep the expired entry", interval=0.05)

        assert loader.given[0] == bytearray(32)
    finally:
        data_key_cache.close()


def test_it_evicts_and_clears_on_request():
    loader = CountingLoader()
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=FakeClock(), loader=loader)
    read_key(data_key_cache, registration(1))
    read_key(data_key_cache, registration(2))

    assert data_key_cache.evict(1) is True
    assert data_key_cache.evict(1) is False
    data_key_cache.clear()

    assert len(data_key_cache) == 0
    assert all(key == bytearray(32) for key in loader.given)


# ---------------------------------------------------------------------------
# Single flight and failures
# ---------------------------------------------------------------------------


def test_it_loads_once_for_64_threads_missing_at_once():
    loader = CountingLoader(delay=0.2)
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=FakeClock(), loader=loader)

    results = run_threads(64, lambda: read_key(data_key_cache, registration()))

    assert loader.calls == 1
    assert set(results) == {bytes([1]) * 32}
    stats = data_key_cache.stats()
    assert stats["misses"] + stats["waits"] + stats["hits"] == 64
    assert stats["misses"] == 1


def test_it_calls_kms_decrypt_once_for_64_threads_on_a_cold_cache(byok, monkeypatch):  # noqa: F811
    """GIVEN a BYOK key version and an empty cache
    WHEN 64 threads need its data key at the same moment
    THEN KMS Decrypt is called exactly once and every thread gets the same data key."""
    real_decrypt = kms.decrypt
    calls: list[str] = []

    def slow_decrypt(**kwargs):
        calls.append(kwargs["kms_key_arn"])
        time.sleep(0.2)
        return real_decrypt(**kwargs)

    monkeypatch.setattr(kms, "decrypt", slow_decrypt)
    metrics.reset()
    # The loader the records service gives the cache: unseal the credentials, call KMS.
    data_key_cache = DataKeyCache(ttl_seconds=60, loader=records.load_data_key)

    results = run_threads(64, lambda: read_key(data_key_cache, byok.registration))

    assert calls == [byok.kms_key_arn]
    assert set(results) == {byok.plaintext_data_key()}
    assert data_key_cache.stats()["kms_decrypts"] == 1
    assert metrics.value("kms_calls", operation="Decrypt", outcome="ok") == 1


def test_it_gives_every_waiter_the_same_error_and_never_caches_it():
    error = kms.KmsTransientError("throttled", operation="Decrypt", message="throttled")
    loader = CountingLoader(delay=0.2, error=error)
    clock = FakeClock()
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=clock, loader=loader)

    results = run_threads(64, lambda: read_key(data_key_cache, registration()))

    assert loader.calls == 1
    assert all(result is error for result in results)
    assert len(data_key_cache) == 0

    loader.error = None
    clock.advance(cache.TRANSIENT_FAILURE_HOLD_SECONDS)
    assert read_key(data_key_cache, registration()) == bytes([2]) * 32
    assert loader.calls == 2
    assert data_key_cache.stats()["load_failures"] == 1


def test_it_holds_a_transient_failure_briefly_so_a_hung_kms_is_not_waited_on_by_every_request():
    """KMS hanging costs one load's timeout per hold, not one per request (each a web thread)."""
    error = kms.KmsTransientError("unreachable", operation="Decrypt", message="timed out")
    loader = CountingLoader(error=error)
    clock = FakeClock()
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=clock, loader=loader)

    with pytest.raises(kms.KmsTransientError):
        read_key(data_key_cache, registration())
    clock.advance(cache.TRANSIENT_FAILURE_HOLD_SECONDS - 0.1)
    for _ in range(5):
        with pytest.raises(kms.KmsTransientError) as held:
            read_key(data_key_cache, registration())
        assert held.value is error
    assert loader.calls == 1
    assert data_key_cache.stats()["held_failures"] == 5
    for _ in range(100):
        with pytest.raises(kms.KmsTransientError):
            read_key(data_key_cache, registration())
    assert _frames(error.__traceback__) < 20  # not 100 requests' worth of frames kept alive

    # Another generation (the version changed: new credentials, say) is not held.
    loader.error = None
    assert read_key(data_key_cache, registration(generation=2)) == bytes([2]) * 32
    assert loader.calls == 2

    # Past the hold, the same generation is loaded again.
    loader.error = error
    clock.advance(0.2)
    with pytest.raises(kms.KmsTransientError):
        read_key(data_key_cache, registration(generation=3))
    clock.advance(cache.TRANSIENT_FAILURE_HOLD_SECONDS)
    loader.error = None
    assert read_key(data_key_cache, registration(generation=3)) == bytes([4]) * 32
    assert loader.calls == 4


def _frames(traceback) -> int:
    count = 0
    while traceback is not None:
        count, traceback = count + 1, traceback.tb_next
    return count


def test_it_does_not_hold_a_transient_failure_when_told_not_to():
    loader = CountingLoader(error=kms.KmsTransientError("throttled", operation="Decrypt", message="throttled"))
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=FakeClock(), loader=loader, failure_hold_seconds=0)
    for _ in range(3):
        with pytest.raises(kms.KmsTransientError):
            read_key(data_key_cache, registration())
    assert loader.calls == 3


def test_it_retries_after_a_permanent_failure_too():
    loader = CountingLoader(error=kms.KmsPermanentError("disabled", operation="Decrypt", message="disabled"))
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=FakeClock(), loader=loader)
    for _ in range(3):
        with pytest.raises(kms.KmsPermanentError):
            read_key(data_key_cache, registration())
    assert loader.calls == 3


# ---------------------------------------------------------------------------
# Generation and status
# ---------------------------------------------------------------------------


def test_it_evicts_an_entry_when_the_registration_generation_moves_on():
    loader = CountingLoader()
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=FakeClock(), loader=loader)
    read_key(data_key_cache, registration(generation=1))

    assert read_key(data_key_cache, registration(generation=2)) == bytes([2]) * 32

    assert loader.calls == 2
    assert loader.given[0] == bytearray(32)
    assert data_key_cache.generation_of(1) == 2


def test_it_serves_a_newer_entry_to_a_request_holding_a_slightly_older_row():
    loader = CountingLoader()
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=FakeClock(), loader=loader)
    read_key(data_key_cache, registration(generation=5))

    read_key(data_key_cache, registration(generation=4))

    assert loader.calls == 1
    assert data_key_cache.generation_of(1) == 5


@pytest.mark.parametrize("status", [Status.INACCESSIBLE, Status.RETIRED, Status.VALID, Status.PENDING_VALIDATION])
def test_it_refuses_a_version_that_is_not_active_or_decrypt_only_and_drops_its_key(status):
    loader = CountingLoader()
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=FakeClock(), loader=loader)
    read_key(data_key_cache, registration(generation=1))

    with pytest.raises(KeyVersionNotUsable):
        read_key(data_key_cache, registration(generation=2, status=status))

    assert 1 not in data_key_cache
    assert loader.given[0] == bytearray(32)
    assert loader.calls == 1


def test_it_evicts_on_a_real_state_change_through_the_services(environment, byok, monkeypatch):  # noqa: F811
    """GIVEN a BYOK data key cached by a write
    WHEN KMS Decrypt is counted and the version's credentials are replaced (generation bump)
    THEN the next read decrypts again; and after it is made inaccessible, reads are refused."""
    real_decrypt = kms.decrypt
    calls: list[int] = []
    monkeypatch.setattr(kms, "decrypt", lambda **kw: calls.append(1) or real_decrypt(**kw))
    monkeypatch.setattr("keys.tasks.validate_registration.delay", lambda *a, **k: None)
    records.record_put(environment=environment, record_key="r1", body=1)
    records.record_get(environment=environment, record_key="r1")
    assert len(calls) == 1

    registrations.registration_replace_credentials(
        registration=byok.registration, actor=None, access_key_id="AKIANEWKEY0000000001", secret_access_key="new-secret"
    )
    records.record_get(environment=environment, record_key="r1")
    assert len(calls) == 2

    from keys.services.validation import registration_mark_inaccessible

    byok.registration.refresh_from_db()
    registration_mark_inaccessible(registration=byok.registration, reason="disabled", actor_label="test")
    with pytest.raises(records.KeyUnavailable) as raised:
        records.record_get(environment=environment, record_key="r1")
    assert raised.value.reason == "disabled"
    assert byok.registration.pk not in cache.get_cache()
    assert len(calls) == 2


# ---------------------------------------------------------------------------
# Across processes
# ---------------------------------------------------------------------------

# A second process: Django set up against the same (test) database; it answers each
# "read" line on stdin by reading record "r1" through its own data-key cache.
CHILD = r"""
import json, os, sys, time
import django
django.setup()
from environments.models import Environment
from keys import cache
from keys.services import records
environment = Environment.objects.get(public_id=sys.argv[1])
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    started = time.monotonic()
    try:
        value = records.record_get(environment=environment, record_key="r1")
        answer = {"ok": True, "body": value.body}
    except records.KeyUnavailable as e:
        answer = {"ok": False, "reason": e.reason}
    answer["ms"] = round((time.monotonic() - started) * 1000, 1)
    answer["stats"] = cache.stats()
    answer["pid"] = os.getpid()
    print(json.dumps(answer), flush=True)
"""


class Child:
    def __init__(self, tmp_path: Path, environment) -> None:
        script = tmp_path / "child.py"
        script.write_text(CHILD)
        env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "portal.settings",
               "PYTHONPATH": str(BASE_DIR), "LOG_LEVEL": "WARNING"}
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(environment.public_id)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=BASE_DIR, env=env,
        )
        assert json.loads(self.process.stdout.readline()) == {"ready": True}

    def read(self) -> dict:
        self.process.stdin.write("read\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(10)


@pytest.mark.django_db(transaction=True)
def test_it_stops_using_the_key_in_another_process_on_its_next_request(environment, tmp_path, settings):
    """GIVEN a second process that has the environment's data key cached (a hit proves it)
    WHEN this process makes the key version inaccessible
    THEN the other process refuses its very next read, at once (a generous tenth of its
    TTL), without waiting for the TTL; and when access is restored it loads the key again."""
    from keys.services.validation import registration_mark_inaccessible, registration_restore

    records.record_put(environment=environment, record_key="r1", body={"n": 1})
    child = Child(tmp_path, environment)
    try:
        assert child.read()["ok"] is True
        warm = child.read()
        assert warm["ok"] is True and warm["stats"]["hits"] == 1 and warm["stats"]["size"] == 1
        assert warm["pid"] != os.getpid()

        registration = environment.key_registrations.get(status=Status.ACTIVE)
        changed_at = time.monotonic()
        registration_mark_inaccessible(registration=registration, reason="disabled", actor_label="test")
        refused = child.read()
        elapsed = time.monotonic() - changed_at

        assert refused["ok"] is False and refused["reason"] == "disabled"
        assert refused["stats"]["evictions"] == 1 and refused["stats"]["size"] == 0
        assert elapsed < settings.DATA_KEY_CACHE_TTL_SECONDS / 10, f"{elapsed:.1f} s"  # a loaded machine is slow, not 30 s slow

        registration.refresh_from_db()
        registration_restore(registration=registration, actor_label="test")
        again = child.read()
        assert again["ok"] is True and again["stats"]["loads"] == 2
    finally:
        child.stop()


@pytest.mark.django_db(transaction=True)
def test_it_reloads_in_another_process_after_a_generation_bump(environment, tmp_path):
    records.record_put(environment=environment, record_key="r1", body=1)
    child = Child(tmp_path, environment)
    try:
        child.read()
        assert child.read()["stats"]["loads"] == 1

        KeyRegistration.objects.filter(environment=environment, status=Status.ACTIVE).update(
            generation=F("generation") + 1
        )
        answer = child.read()

        assert answer["ok"] is True
        assert answer["stats"]["loads"] == 2 and answer["stats"]["evictions"] == 1
    finally:
        child.stop()


# ---------------------------------------------------------------------------
# The record cipher beside the data key
# ---------------------------------------------------------------------------

ENVIRONMENT_ID = "5b0c1c9e-6f6e-4d2a-9d38-3f1f6a0d2b7e"


def encrypt_with(data_key_cache: DataKeyCache, reg: KeyRegistration, record_key: str = "customer/1") -> bytes:
    lease = data_key_cache.lease(reg)
    try:
        return lease.cipher.encrypt(plaintext=b"{}", environment_id=ENVIRONMENT_ID, record_key=record_key, key_version=1)
    finally:
        lease.release()


def cipher_of(data_key_cache: DataKeyCache, reg: KeyRegistration):
    lease = data_key_cache.lease(reg)
    try:
        return lease.cipher
    finally:
        lease.release()


def test_it_keeps_one_cipher_per_load_so_the_subkey_is_derived_once():
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=FakeClock(), loader=CountingLoader())

    envelopes = [encrypt_with(data_key_cache, registration(), f"customer/{n}") for n in range(50)]

    cipher = cipher_of(data_key_cache, registration())
    assert cipher.epochs == 1
    assert len({envelope[8:24] for envelope in envelopes}) == 1  # one epoch salt
    assert len({envelope[24:36] for envelope in envelopes}) == 50  # fresh nonces
    assert cipher.decrypt(envelope=envelopes[7], environment_id=ENVIRONMENT_ID, record_key="customer/7", key_version=1) == b"{}"


def test_it_makes_a_new_cipher_and_epoch_when_the_data_key_is_loaded_again():
    clock = FakeClock()
    data_key_cache = DataKeyCache(ttl_seconds=300, clock=clock, loader=CountingLoader())
    first_cipher = cipher_of(data_key_cache, registration())
    first = encrypt_with(data_key_cache, registration())

    clock.advance(300)
    second = encrypt_with(data_key_cache, registration())

    assert cipher_of(data_key_cache, registration()) is not first_cipher
    assert first[8:24] != second[8:24]


def test_it_wipes_the_cipher_with_the_data_key_on_eviction_expiry_and_clear():
    clock = FakeClock()
    loader = CountingLoader()
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=clock, loader=loader)
    evicted = cipher_of(data_key_cache, registration(1))
    encrypt_with(data_key_cache, registration(1))
    expired = cipher_of(data_key_cache, registration(2))
    cleared = cipher_of(data_key_cache, registration(3))
    assert not (evicted.wiped or expired.wiped or cleared.wiped)

    data_key_cache.evict(1)
    assert evicted.wiped and loader.given[0] == bytearray(32)
    assert evicted._contexts == {}  # the derived subkey contexts are dropped too

    clock.advance(60)
    data_key_cache.sweep()
    assert expired.wiped and loader.given[1] == bytearray(32)

    data_key_cache.clear()
    assert cleared.wiped and loader.given[2] == bytearray(32)
    with pytest.raises(ValueError):
        evicted.encrypt(plaintext=b"", environment_id=ENVIRONMENT_ID, record_key="k", key_version=1)


def test_it_keeps_an_evicted_cipher_usable_until_its_last_user_is_done():
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=FakeClock(), loader=CountingLoader())
    lease = data_key_cache.lease(registration())

    data_key_cache.evict(1)
    envelope = lease.cipher.encrypt(plaintext=b"{}", environment_id=ENVIRONMENT_ID, record_key="k", key_version=1)
    cipher = lease.cipher
    assert not cipher.wiped
    lease.release()

    assert cipher.wiped
    assert envelope[:4] == b"BKR\x02"
    with pytest.raises(ValueError):
        lease.cipher  # noqa: B018 - released leases refuse to hand the cipher out


def test_it_wipes_the_ciphers_a_forked_child_inherits():
    data_key_cache = DataKeyCache(ttl_seconds=60, clock=FakeClock(), loader=CountingLoader())
    previous = cache.set_cache(data_key_cache)
    try:
        cipher = cipher_of(data_key_cache, registration())
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:  # keys.cache's os.register_at_fork hook has run in this child
                os.write(write_end, b"1" if cipher.wiped else b"0")
            finally:
                os._exit(0)
        os.close(write_end)
        answer = os.read(read_end, 1)
        os.close(read_end)
        os.waitpid(pid, 0)
        assert not cipher.wiped  # the parent's is untouched
    finally:
        cache.set_cache(previous)

    assert answer == b"1"
