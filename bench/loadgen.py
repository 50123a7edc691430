"""HTTP load for the data-plane benchmark: ``wrk`` (Debian package) when installed, else
a Python generator (threads with keep-alive ``http.client`` connections).

Both drive the same request mixes against 127.0.0.1 and report requests, requests/s and
latency percentiles. wrk is preferred: on a small machine a Python client competes with
the server for CPU and its own overhead shows in the latency.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

WRK = shutil.which("wrk")


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class Mix:
    """What to send. ``kind``: ``hello`` (GET a fixed path), ``get`` / ``put`` (a record
    among ``keys`` record keys ``bench-<n>``), ``mix`` (three GETs for one PUT)."""

    kind: str
    path: str  # /bench/hello or /api/v1/environments/<id>/records
    api_key: str = ""
    body: str = ""
    keys: int = 1000


# ---------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------

_LUA = r"""
local kind = "%(kind)s"
local base = "%(path)s"
local body = "%(body)s"
local nkeys = %(keys)d
local counter = 0
local headers = {["Authorization"] = "Bearer %(api_key)s", ["Content-Type"] = "application/json"}
local ids = 0

function setup(thread)
  ids = ids + 1
  thread:set("thread_id", ids)
end

function request()
  counter = counter + 1
  if kind == "hello" then
    return wrk.format("GET", base, nil, nil)
  end
  local k = (counter * 7919 + (thread_id or 0) * 104729) %% nkeys
  local path = base .. "/bench-" .. k
  if kind == "get" or (kind == "mix" and counter %% 4 ~= 0) then
    return wrk.format("GET", path, headers, nil)
  end
  return wrk.format("PUT", path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,"errors":%%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def _wrk(base_url: str, mix: Mix, *, connections: int, seconds: float, threads: int) -> LoadResult:
    lua = _LUA % {
        "kind": mix.kind, "path": mix.path, "body": mix.body.replace("\\", "\\\\").replace('"', '\\"'),
        "keys": mix.keys, "api_key": mix.api_key,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
        script = f.name
    try:
        out = subprocess.run(
            [WRK, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, int(seconds))}s",
             "--timeout", "10s", "-s", script, base_url + mix.path],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        os.unlink(script)
    line = next(text for text in out.splitlines() if text.startswith("BENCH_JSON "))
    data = json.loads(line.removeprefix("BENCH_JSON "))
    return LoadResult(
        requests=data["requests"], seconds=data["duration_us"] / 1e6, p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000, errors=data["errors"], tool="wrk",
    )


# ---------------------------------------------------------------------------
# Python fallback
# ---------------------------------------------------------------------------


def _python(base_url: str, mix: Mix, *, connections: int, seconds: float, limit: int) -> LoadResult:
    host = urlsplit(base_url)
    deadline = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections
    remaining = [limit or 10**12]
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {mix.api_key}", "Content-Type": "application/json"}
    body = mix.body.encode()

    def take() -> bool:
        with lock:
            if remaining[0] <= 0:
                return False
            remaining[0] -= 1
            return True

    def connect() -> http.client.HTTPConnection:
        if host.scheme == "https":  # the bench's front proxy, a self-signed certificate
            return http.client.HTTPSConnection(host.hostname, host.port, timeout=10, context=ssl._create_unverified_context())
        return http.client.HTTPConnection(host.hostname, host.port, timeout=10)

    def run(i: int) -> None:
        conn = connect()
        counter = 0
        while time.monotonic() < deadline and take():
            counter += 1
            key = (counter * 7919 + i * 104729) % mix.keys
            if mix.kind == "hello":
                method, path, data = "GET", mix.path, None
            elif mix.kind == "get" or (mix.kind == "mix" and counter % 4 != 0):
                method, path, data = "GET", f"{mix.path}/bench-{key}", None
            else:
                method, path, data = "PUT", f"{mix.path}/bench-{key}", body
            started = time.perf_counter()
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status >= 400:
                    errors[i] += 1
            except (OSError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn = connect()
            latencies[i].append(time.perf_counter() - started)
        conn.close()

    started = time.monotonic()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.monotonic() - started
    flat = sorted(x for per in latencies for x in per)
    return LoadResult(
        requests=len(flat), seconds=elapsed, p50_ms=_percentile(flat, 50) * 1000, p99_ms=_percentile(flat, 99) * 1000,
        errors=sum(errors), tool="python",
    )


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def run(base_url: str, mix: Mix, *, connections: int = 32, seconds: float = 10, limit: int = 0,
        threads: int = 2, tool: str = "auto") -> LoadResult:
    """Send ``mix`` for ``seconds`` over ``connections`` keep-alive connections; with
    ``limit``, stop after that many requests (Python client: wrk stops on time only)."""
    if not limit and ((tool == "auto" and WRK) or tool == "wrk"):
        return _wrk(base_url, mix, connections=connections, seconds=seconds, threads=threads)
    return _python(base_url, mix, connections=connections, seconds=seconds, limit=limit)
