"""What many test modules need and no test module should copy: free loopback ports,
waiting, child processes, the moto server, Redis database claims, the test database's URL
and a fake clock. Plain functions and classes, no fixtures (fixtures live in the
``conftest.py`` of the package that uses them)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REDIS = "redis://127.0.0.1:6379"
# Redis databases a test may claim for a broker of its own: 0 is everyone's default, 14
# the rate-limit tests' (tests/keys/test_ratelimit.py, which a claim's FLUSHDB would empty
# under them) and 15 the test settings' REDIS_URL. The first one that is empty and not
# claimed is taken.
SPARE_REDIS_DBS = range(8, 14)
CLAIM_KEY = "byok-portal-tests:worker-broker-claim"
STOP_SECONDS = 10
# free_port draws from here up to the start of the kernel's ephemeral range.
FIXED_PORTS_FROM = 20000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now, taken below the kernel's
    ephemeral range when there is room (20000 up to its start, 32768 by default). The
    caller binds it later (a child process, a server thread): a port from the ephemeral
    range could be handed meanwhile to another socket, the local end of any outgoing
    connection of either test process, say, and the bind then fails. Drawn with
    SystemRandom: pytest-randomly seeds ``random`` alike in every xdist worker."""
    low = _ephemeral_ports_start()
    if low - FIXED_PORTS_FROM >= 1000:
        draw = random.SystemRandom()
        for _ in range(50):
            port = draw.randrange(FIXED_PORTS_FROM, low)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_ports_start() -> int:
    """The first port of the kernel's ephemeral range (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stop_process(popen: subprocess.Popen, timeout: float = STOP_SECONDS) -> None:
    """SIGTERM (a warm shutdown), then SIGKILL if it has not stopped within ``timeout`` s."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout)


@dataclass
class Process:
    """A started child process whose output goes to ``log``."""

    name: str
    popen: subprocess.Popen
    log: Path

    def output(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:] if self.log.exists() else ""

    def assert_running(self) -> None:
        assert self.popen.poll() is None, f"{self.name} exited ({self.popen.returncode}):\n{self.output()}"

    def stop(self) -> None:
        stop_process(self.popen)


@dataclass
class Processes:
    """Started processes, stopped in reverse order by ``stop_all``."""

    directory: Path
    started: list[Process] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str]) -> Process:
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        process = Process(name, popen, log)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's ``ThreadedMotoServer`` on a free loopback port, in this process; yields its
    URL. Its IAM simulation is off until :func:`moto_iam` turns it on."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def moto_iam(url: str, *, enforced: bool) -> None:
    """Switch the moto server's IAM simulation on (every call checked against IAM) or off."""
    import requests

    response = requests.post(f"{url}/moto-api/reset-auth", data=b"0" if enforced else b"inf", timeout=5)
    response.raise_for_status()


@contextmanager
def claimed_redis_db(ttl_seconds: int = 900) -> Iterator[str]:
    """A Redis database for one test alone (a broker, say): empty, claimed with a key that
    expires, emptied afterwards; yields its URL. Fails the test if none is free."""
    import pytest
    import redis

    for db in SPARE_REDIS_DBS:
        client = redis.Redis.from_url(f"{REDIS}/{db}")
        if client.dbsize() == 0 and client.set(CLAIM_KEY, os.getpid(), nx=True, ex=ttl_seconds):
            try:
                yield f"{REDIS}/{db}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    pytest.fail(f"no empty Redis database among {list(SPARE_REDIS_DBS)} to claim")


def database_url() -> str:
    """The URL of the database Django is connected to (pytest-django's ``test_…`` one),
    for child processes that must share it."""
    from django.db import connection

    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class FakeClock:
    """A clock the test moves: call it for the time in seconds; ``advance`` moves it on."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextmanager
def hung_endpoint() -> Iterator[tuple[str, list[socket.socket]]]:
    """An HTTP endpoint on 127.0.0.1 that accepts every connection and never answers (a hung
    KMS, say): yields its URL and the connections it accepted, one per HTTP attempt a client
    made; every connection is closed on exit."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(connection)  # held open, never read from nor answered

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        server.close()


def at_once(actions: Sequence[Callable[[], Any]], *, refused: tuple[type[BaseException], ...] = ()) -> list[Any]:
    """Run each of ``actions`` in a thread of its own, all released together (a barrier),
    each on its own database connection (closed after). Returns, in the order they
    finished, what each returned, or the message of a ``refused`` exception it raised (any
    other exception is that thread's failure, not an outcome)."""
    from django.db import connection

    barrier = threading.Barrier(len(actions))
    outcomes: list[Any] = []

    def run(action: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            outcomes.append(action())
        except refused as e:
            outcomes.append(str(e))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(action,)) for action in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes
