"""Per-process counters of the data plane: KMS calls, data-key cache events.

Plain, thread-safe integer counters in this process's memory. Nothing is exported yet;
a later issue exposes them (e.g. a Prometheus text endpoint). Names and labels::

    kms_calls{operation="Decrypt", outcome="ok" | "permanent" | "transient"}
    data_key_cache{event="hit" | "miss" | "eviction" | "load_failure"}

Labels are small, fixed vocabularies: never put a record key, an id or anything secret in
one. Each gunicorn worker and Celery worker has its own counters (like the data-key cache).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict

_Key = tuple[str, tuple[tuple[str, str], ...]]

_lock = threading.Lock()
_counters: defaultdict[_Key, int] = defaultdict(int)


def _key(name: str, labels: dict[str, str]) -> _Key:
    return name, tuple(sorted(labels.items()))


def increment(name: str, amount: int = 1, **labels: str) -> None:
    """Add ``amount`` to the counter ``name`` with these labels."""
    key = _key(name, labels)
    with _lock:
        _counters[key] += amount


def value(name: str, **labels: str) -> int:
    """The current value of one counter (0 if never incremented)."""
    with _lock:
        return _counters.get(_key(name, labels), 0)


def snapshot() -> dict[str, int]:
    """Every counter as ``{'name{label="value",…}': count}``, sorted by name."""
    with _lock:
        items = list(_counters.items())
    out = {}
    for (name, labels), count in sorted(items):
        text = ",".join(f'{k}="{v}"' for k, v in labels)
        out[f"{name}{{{text}}}" if text else name] = count
    return out


def reset() -> None:
    """Forget every counter (tests; a forked child starting afresh)."""
    with _lock:
        _counters.clear()


def _reset_after_fork() -> None:
    # A forked worker must not report its parent's counts as its own, and the parent's
    # lock may have been held by another thread at fork time.
    global _lock
    _lock = threading.Lock()
    _counters.clear()


os.register_at_fork(after_in_child=_reset_after_fork)
