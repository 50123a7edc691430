"""Bench-only views (bench/urls.py): never mounted in production."""

import os

from django.http import HttpRequest, JsonResponse


def hello(request: HttpRequest) -> JsonResponse:
    """The baseline: a bare Django JSON answer through the same middleware, no database."""
    return JsonResponse({"hello": "world"})


def stats(request: HttpRequest) -> JsonResponse:
    """The answering worker's pid, data-key cache counters and memory (no secrets)."""
    return JsonResponse(worker_stats())


def worker_stats() -> dict:
    from keys import cache, metrics

    return {
        "pid": os.getpid(),
        "cache": cache._cache.stats() if cache._cache is not None else None,
        "metrics": metrics.snapshot(),
        "memory": memory(os.getpid()),
    }


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB, from /proc."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0])
    return out
