"""Data-plane benchmark: gunicorn + PostgreSQL + a moto server as KMS, all on 127.0.0.1.

Run from the repository root (``make bench`` does)::

    .venv/bin/python -m bench.bench_dataplane [--quick] [--seconds 10] [--rss-requests 100000]

Prints figures and ratios; it is not a test and asserts nothing. Four parts:

0. Statements each request sends to PostgreSQL (GET, PUT, DELETE, batch and find of 100),
   counted at the driver (tests/statements.py) through portal.wsgi.application.
1. Single-record GET and PUT requests/s and p50/p99 latency at 32 connections, on
   production's worker model (sync, 2 x cores + 1 processes; ``--worker-class``,
   ``--workers``, ``--threads`` to compare others), for a
   platform-managed and a BYOK environment (data key cached), against three baselines on
   the same server in the same run, all on the lean /api/ handler (bench/api_views.py):
   bare Django (no middleware, no database), bare + one SELECT by key, bare + one
   INSERT … ON CONFLICT DO UPDATE; and bare Django through the portal's middleware for
   reference. Through the front proxy (docker/nginx, HTTPS) when nginx is installed, then
   directly; the headline figures are the proxy's. Each mix runs once per round, in
   ``--rounds`` interleaved rounds (3; 1 with ``--quick``), and its median round is kept
   (every round's req/s is in the JSON under ``rounds_rps``).
2. Cold cache: fresh workers, 64 concurrent GETs for one BYOK environment; KMS Decrypt
   calls counted per worker process (single-flight: at most one per process).
3. Batch: 10,000 records of 1 KiB through POST …/records/batch (1,000 per request), then
   read back through POST …/records/find, on part 1's worker model; records/s over HTTP
   (median of three passes), and in process (the services alone) for comparison.
4. RSS (VmRSS, and the peak VmHWM) of one gunicorn worker after 1,000 and after 100,000
   requests (``rss_start_kib``, ``rss_end_kib`` in the JSON).

Every figure goes to test-output/bench/dataplane.json, with the crypto figures of
bench_crypto.measure() and the load average before and after (the machine may be shared).

It uses its own database (``byok_bench``, or ``BENCH_DATABASE_URL``; dropped and created afresh, dropped at the end),
a generated sealing key, and fake AWS credentials for the moto server.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench import loadgen  # noqa: E402

VENV_BIN = Path(sys.executable).parent
DB_NAME = "byok_bench"
# Server logs of the last run (test-output/ is git-ignored).
LOG_DIR = BASE_DIR / "test-output" / "bench"
REGION = "eu-west-1"
RECORD_BODY = {"data": "x" * 1000}  # about 1 KiB of JSON per record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


# ---------------------------------------------------------------------------
# Environment, database, KMS emulator
# ---------------------------------------------------------------------------


def configure_environment(kms_port: int) -> None:
    database_url = os.environ.get("BENCH_DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{DB_NAME}")
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-secret-key",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_COOKIES": "false",
            "SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": database_url,
            "SEALING_KEYS": "bench:" + base64.b64encode(os.urandom(32)).decode(),
            "AWS_KMS_ENDPOINT_URL": f"http://127.0.0.1:{kms_port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            "LOG_LEVEL": "WARNING",
            # The per-key bucket still runs on every request, but never refuses: one API key
            # sends far more than the default 6,000 a minute here, and 429s would measure
            # the refusal path (part 4 answered 429 to most of its 100,000 requests).
            "API_RATE_LIMIT_PER_MINUTE": "100000000",
            "PYTHONPATH": str(BASE_DIR),
        }
    )
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.pop("REDIS_URL", None)


def recreate_database() -> None:
    import psycopg

    url = os.environ["DATABASE_URL"]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database() -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    url = os.environ["DATABASE_URL"]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


class Process:
    """A child process in its own process group, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None, pass_fds=()) -> None:
        self.log = open(log, "w")
        self.popen = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, cwd=BASE_DIR, env=env or os.environ.copy(),
            start_new_session=True, pass_fds=pass_fds,
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self.log.close()

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.popen.pid}/task/{self.popen.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []


def start_kms_emulator(tmp: Path) -> tuple[Process, int]:
    """moto in server mode on a free loopback port. Another program may take the port
    between choosing and binding it (moto then exits): try another."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    for old in LOG_DIR.glob("*.log"):
        old.unlink()
    for attempt in range(5):
        port = free_port()
        moto = Process([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], LOG_DIR / f"moto-{attempt}.log")
        wait_for_port(port)
        time.sleep(0.5)
        if moto.popen.poll() is None:
            return moto, port
        moto.stop()
    raise RuntimeError("could not start the KMS emulator")


# ---------------------------------------------------------------------------
# Seeding
# ---------------------------------------------------------------------------


def seed(kms_port: int) -> dict:
    """An organization with a platform-managed and a BYOK environment (moto server KMS), an
    API key for each, and 1,000 records of 1 KiB in each."""
    import boto3
    from django.contrib.auth import get_user_model

    from environments.models import Membership, Organization
    from environments.services import environment_create
    from keys.clock import now
    from keys.models import KeyRegistration
    from keys.services import api_keys, records, registrations, sealing

    user = get_user_model().objects.create_user("bench", "bench@example.org", "bench-password-1")
    org = Organization.objects.create(name="Bench Corp")
    Membership.objects.create(user=user, organization=org, role=Membership.Role.OWNER)
    managed = environment_create(organization=org, name="managed", actor=user)
    byok = environment_create(organization=org, name="byok", actor=user)

    admin = boto3.client("kms", region_name=REGION, endpoint_url=f"http://127.0.0.1:{kms_port}")
    metadata = admin.create_key(Description="bench", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    blob = admin.generate_data_key_without_plaintext(KeyId=metadata["Arn"], KeySpec="AES_256")["CiphertextBlob"]
    v1 = byok.key_registrations.get()
    registrations.registration_transition(registration=v1, to=KeyRegistration.Status.DECRYPT_ONLY, actor_label="bench")
    registration = KeyRegistration(
        environment=byok, version=2, kind=KeyRegistration.Kind.BYOK, status=KeyRegistration.Status.ACTIVE,
        kms_key_arn=metadata["Arn"], region=REGION, account_id=metadata["AWSAccountId"], encrypted_data_key=blob,
        access_key_id_last4="MPLE", activated_at=now(),
    )
    registration.sealed_access_key_id = sealing.seal_field(registration, "sealed_access_key_id", b"AKIAIOSFODNN7EXAMPLE")
    registration.sealed_secret_access_key = sealing.seal_field(registration, "sealed_secret_access_key", b"bench-secret")
    registration.save()

    out = {}
    for environment in (managed, byok):
        _, api_key = api_keys.api_key_create(environment=environment, name="bench", actor=user)
        records.records_put_batch(environment=environment, records=[(f"bench-{i}", RECORD_BODY) for i in range(1000)])
        out[environment.name] = {"id": str(environment.public_id), "api_key": api_key}
    return out


# ---------------------------------------------------------------------------
# gunicorn
# ---------------------------------------------------------------------------


class Server:
    def __init__(self, tmp: Path, *, workers: int, threads: int, name: str, worker_class: str = "gthread") -> None:
        # The listening socket is bound here and handed to gunicorn (fd://), so no other
        # program on the machine can take the port between choosing and binding it.
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(2048)
        self.port = self.socket.getsockname()[1]
        self.stats_dir = tmp / f"stats-{name}"
        self.stats_dir.mkdir()
        env = os.environ | {
            "BENCH_BIND": f"fd://{self.socket.fileno()}", "BENCH_WORKERS": str(workers),
            "BENCH_THREADS": str(threads), "BENCH_STATS_DIR": str(self.stats_dir),
            "BENCH_WORKER_CLASS": worker_class,
        }
        self.workers = workers
        self.process = Process(
            [str(VENV_BIN / "gunicorn"), "-c", "bench/gunicorn_conf.py", "portal.wsgi:application"],
            LOG_DIR / f"gunicorn-{name}.log", env, pass_fds=(self.socket.fileno(),),
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_for_workers()

    def _wait_for_workers(self) -> None:
        # Each worker imports Django on boot; wait until all of them answer.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.popen.poll() is not None:
                raise RuntimeError(f"gunicorn exited: see {self.process.log.name}")
            pids = set(self.process.children())
            if len(pids) == self.workers and all(_booted(pid) for pid in pids):
                break
            time.sleep(0.2)
        for _ in range(50):
            request(self.url, "GET", "/bench/hello")

    def worker_pids(self) -> list[int]:
        return self.process.children()

    def stop(self) -> list[dict]:
        self.process.stop()
        self.socket.close()
        return [json.loads(p.read_text()) for p in sorted(self.stats_dir.glob("worker-*.json"))]


def _booted(pid: int) -> bool:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
    return "_psycopg" in maps or "psycopg_binary" in maps


def request(url: str, method: str, path: str, body: bytes | None = None, api_key: str = "") -> tuple[int, bytes]:
    if url.startswith("https://"):  # the front proxy's self-signed certificate
        conn = http.client.HTTPSConnection(url.removeprefix("https://"), timeout=60, context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def expect_ok(url: str, mix: loadgen.Mix) -> None:
    """One request of the mix must answer 2xx, or the figures would measure error pages."""
    if mix.kind == "hello":
        status, data = request(url, "GET", mix.path)
    elif mix.kind == "put":
        status, data = request(url, "PUT", f"{mix.path}/bench-0", mix.body.encode(), mix.api_key)
    else:
        status, data = request(url, "GET", f"{mix.path}/bench-0", api_key=mix.api_key)
    if not 200 <= status < 300:
        raise SystemExit(f"{mix.kind} {mix.path} answered {status}: {data[:300]!r}; not benchmarking error pages")


def memory_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


# ---------------------------------------------------------------------------
# The four parts
# ---------------------------------------------------------------------------


# Every figure of the run, written to test-output/bench/dataplane.json at the end.
RESULTS: dict = {}
TARGETS = {
    "get_vs_bare": 0.6, "get_vs_select": 0.85, "put_vs_bare": 0.5, "put_vs_upsert": 0.8,
    "p99_ms": 50, "batch_write_rps": 30_000, "find_rps": 40_000,
}


class Front:
    """nginx from docker/nginx (the production template, rendered by its own entry point)
    in front of a gunicorn, over HTTPS with a throw-away self-signed certificate."""

    def __init__(self, tmp: Path, upstream_port: int) -> None:
        self.directory = tmp / "front"
        self.directory.mkdir()
        self.directory.chmod(0o755)
        certificate, key = self.directory / "cert.pem", self.directory / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-keyout", str(key), "-out", str(certificate)], check=True, capture_output=True,
        )
        http_port, self.port = free_port(), free_port()
        env = os.environ | {
            "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin",
            "NGINX_PREFIX": f"{self.directory}/", "PROXY_HTTP_LISTEN": f"127.0.0.1:{http_port}",
            "PROXY_HTTPS_LISTEN": f"127.0.0.1:{self.port}", "PROXY_UPSTREAM": f"127.0.0.1:{upstream_port}",
            "PROXY_TLS_CERTIFICATE": str(certificate), "PROXY_TLS_CERTIFICATE_KEY": str(key),
        }
        self.process = Process([str(BASE_DIR / "docker" / "nginx" / "entrypoint.sh")], LOG_DIR / "nginx.log", env)
        wait_for_port(self.port)
        self.url = f"https://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.stop()

    @staticmethod
    def available() -> bool:
        import shutil

        return (BASE_DIR / "docker" / "nginx" / "entrypoint.sh").exists() and bool(
            shutil.which("nginx", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        )


def part1_single_records(tmp: Path, envs: dict, args) -> None:
    workers, threads = args.workers, args.threads
    model = f"{workers} workers x {threads} threads" if args.worker_class == "gthread" else f"{args.worker_class}, {workers} workers"
    print(f"\n== 1. Single-record requests, gunicorn ({model}), 32 connections ==")
    RESULTS["gunicorn"] = {"worker_class": args.worker_class, "workers": workers, "threads": threads, "rounds": args.rounds, "seconds": args.seconds}
    server = Server(tmp, workers=workers, threads=threads, name="single", worker_class=args.worker_class)
    body = json.dumps({"body": RECORD_BODY})
    managed = f"/api/v1/environments/{envs['managed']['id']}/records"
    byok = f"/api/v1/environments/{envs['byok']['id']}/records"
    mixes = {
        "bare": ("bare Django, no middleware (/api/bench/hello)", loadgen.Mix("hello", "/api/bench/hello")),
        "select": ("bare + one SELECT by key", loadgen.Mix("get", "/api/bench/select")),
        "upsert": ("bare + one INSERT ON CONFLICT UPDATE", loadgen.Mix("put", "/api/bench/upsert", body=body)),
        "get": ("GET record, managed key", loadgen.Mix("get", managed, envs["managed"]["api_key"])),
        "put": ("PUT record, managed key", loadgen.Mix("put", managed, envs["managed"]["api_key"], body)),
        "get_byok": ("GET record, BYOK key", loadgen.Mix("get", byok, envs["byok"]["api_key"])),
        "put_byok": ("PUT record, BYOK key", loadgen.Mix("put", byok, envs["byok"]["api_key"], body)),
        "portal_hello": ("bare Django JSON through the portal's middleware", loadgen.Mix("hello", "/bench/hello")),
    }
    fronts = [] if args.proxy_only else [("direct", server.url)]
    front = None
    if Front.available() and not args.no_proxy:
        front = Front(tmp, server.port)
        fronts.insert(0, ("proxy", front.url))
    try:
        for where, url in fronts:
            for _label, mix in mixes.values():
                expect_ok(url, mix)
            # Interleaved rounds: every mix once per round, the median round kept per mix, so
            # a load that drifts during the run (a shared machine) weighs on all of them
            # alike instead of on whichever ran while it lasted.
            rounds: dict[str, list[loadgen.LoadResult]] = {name: [] for name in mixes}
            for _round in range(args.rounds):
                for name, (_label, mix) in mixes.items():
                    loadgen.run(url, mix, connections=32, seconds=1, tool=args.tool)  # warm-up
                    rounds[name].append(loadgen.run(url, mix, connections=32, seconds=args.seconds, tool=args.tool))
            results = {name: _median_result(runs) for name, runs in rounds.items()}
            RESULTS.setdefault("rounds_rps", {})[where] = {n: [round(r.rps) for r in runs] for n, runs in rounds.items()}
            _report_single(where, mixes, results)
    finally:
        if front is not None:
            front.stop()
        server.stop()


def _median_result(runs: list[loadgen.LoadResult]) -> loadgen.LoadResult:
    """The run with the median requests/s (the upper one of an even count)."""
    return sorted(runs, key=lambda r: r.rps)[len(runs) // 2]


def _report_single(where: str, mixes: dict, results: dict) -> None:
    bare, select, upsert = results["bare"].rps, results["select"].rps, results["upsert"].rps
    print(f"-- {where} ({'nginx from docker/nginx, HTTPS, in front of gunicorn' if where == 'proxy' else 'gunicorn'}) --")
    print(f"{'endpoint':50} {'req/s':>8} {'vs bare':>8} {'vs bare+SQL':>11} {'p50 ms':>7} {'p99 ms':>7} {'err':>5}  tool")
    for name, (label, _) in mixes.items():
        r = results[name]
        against = select if name.startswith("get") else upsert if name.startswith("put") else None
        print(f"{label:50} {r.rps:8.0f} {r.rps / bare:8.2f} "
              + (f"{r.rps / against:11.2f}" if against else f"{'':11}")
              + f" {r.p50_ms:7.1f} {r.p99_ms:7.1f} {r.errors:5d}  {r.tool}")
    figures = {
        "bare_rps": round(bare), "select_rps": round(select), "upsert_rps": round(upsert),
        "get_rps": round(results["get"].rps), "put_rps": round(results["put"].rps),
        "get_byok_rps": round(results["get_byok"].rps), "put_byok_rps": round(results["put_byok"].rps),
        "portal_bare_rps": round(results["portal_hello"].rps),
        "get_vs_bare": round(results["get"].rps / bare, 3), "put_vs_bare": round(results["put"].rps / bare, 3),
        "get_vs_select": round(results["get"].rps / select, 3), "put_vs_upsert": round(results["put"].rps / upsert, 3),
        "p99_ms": {name: round(r.p99_ms, 1) for name, r in results.items()},
        "p50_ms": {name: round(r.p50_ms, 1) for name, r in results.items()},
        "errors": {name: r.errors for name, r in results.items()},
        "tool": results["bare"].tool,
    }
    RESULTS.setdefault("single", {})[where] = figures
    # The headline figures are the deployed set-up's: through the proxy when there is one.
    if where == "proxy" or "proxy" not in RESULTS["single"]:
        RESULTS.update({k: v for k, v in figures.items() if k != "tool"})
        RESULTS["measured_through"] = where


def count_statements_per_request(envs: dict) -> None:
    """Statements each request sends to PostgreSQL, counted at the driver
    (tests/statements.py) through portal.wsgi.application in this process, steady state."""
    import io

    from django.db import connection

    from portal import wsgi
    from tests.statements import count_statements

    connection.settings_dict["CONN_MAX_AGE"] = 300
    env = envs["managed"]
    base = f"/api/v1/environments/{env['id']}/records"
    body = json.dumps({"body": RECORD_BODY}).encode()
    batch = json.dumps({"records": [{"record_key": f"q-{i}", "body": RECORD_BODY} for i in range(100)]}).encode()
    find = json.dumps({"record_keys": [f"q-{i}" for i in range(100)]}).encode()
    requests_ = {
        "get": ("GET", f"{base}/bench-1", b""), "put": ("PUT", f"{base}/bench-1", body),
        "delete": ("DELETE", f"{base}/q-0", b""), "batch_100": ("POST", f"{base}/batch", batch),
        "find_100": ("POST", f"{base}/find", find),
    }

    def call(method: str, path: str, data: bytes) -> int:
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1", "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.input": io.BytesIO(data), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
            "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
            "HTTP_AUTHORIZATION": f"Bearer {env['api_key']}", "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(data)),
        }
        status: list[int] = []
        chunks = wsgi.application(environ, lambda s, h, e=None: status.append(int(s.split()[0])))
        b"".join(chunks)
        chunks.close()
        return status[0]

    counts = {}
    for name, (method, path, data) in requests_.items():
        call(method, path, data)  # warm: data key, last_used_at
        if name == "delete":
            call("POST", f"{base}/batch", batch)
        with count_statements() as sent:
            status = call(method, path, data)
        counts[name] = len(sent)
        assert status < 300, (name, status)
    RESULTS["queries_per_request"] = counts
    print("\nstatements sent to PostgreSQL per request (driver-level count, steady state): "
          + ", ".join(f"{k} {v}" for k, v in counts.items()))


def part2_cold_cache(tmp: Path, envs: dict, args) -> None:
    # 4 x 8 threads: 64 requests at once still meet 8 at a time in each process's cache,
    # and the database sees at most 32 connections (other work may share the server).
    workers, threads, concurrency = 4, 8, 64
    print(f"\n== 2. Cold cache: {concurrency} concurrent GETs, one BYOK environment, "
          f"{workers} fresh workers x {threads} threads, moto server as KMS ==")
    server = Server(tmp, workers=workers, threads=threads, name="cold")
    path = f"/api/v1/environments/{envs['byok']['id']}/records/bench-1"
    statuses: list[int] = []
    barrier = threading.Barrier(concurrency)
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        status, _ = request(server.url, "GET", path, api_key=envs["byok"]["api_key"])
        with lock:
            statuses.append(status)

    started = time.monotonic()
    threads_ = [threading.Thread(target=one) for _ in range(concurrency)]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    elapsed = time.monotonic() - started
    stats = server.stop()
    ok = sum(1 for s in statuses if s == 200)
    print(f"{ok}/{concurrency} answered 200 in {elapsed * 1000:.0f} ms"
          + ("" if ok == concurrency else f"  (statuses: {sorted(set(statuses))})"))
    print(f"{'worker pid':>10} {'requests':>9} {'KMS Decrypt':>12} {'misses':>7} {'waits':>6} {'hits':>5}")
    total = 0
    for s in stats:
        c = s["cache"] or {}
        served = c.get("hits", 0) + c.get("misses", 0) + c.get("waits", 0)
        total += c.get("kms_decrypts", 0)
        print(f"{s['pid']:>10} {served:>9} {c.get('kms_decrypts', 0):>12} {c.get('misses', 0):>7} "
              f"{c.get('waits', 0):>6} {c.get('hits', 0):>5}")
    RESULTS["cold_cache"] = {
        "requests": concurrency, "ok": ok, "processes": len(stats), "kms_decrypts": total,
        "kms_decrypts_per_process": [s["cache"].get("kms_decrypts", 0) if s["cache"] else 0 for s in stats],
    }
    print(f"KMS Decrypt calls in all: {total} for {concurrency} requests over {len(stats)} processes "
          f"(at most one per process that served a request)")


def part3_batch(tmp: Path, envs: dict, args) -> None:
    total, per_request = 10_000, 1_000
    print(f"\n== 3. Batch: {total:,} records of 1 KiB, {per_request:,} per request (BYOK environment, key cached) ==")
    env = envs["byok"]
    base = f"/api/v1/environments/{env['id']}/records"
    batches = [
        json.dumps({"records": [{"record_key": f"batch-{i}", "body": RECORD_BODY}
                                for i in range(start, start + per_request)]}).encode()
        for start in range(0, total, per_request)
    ]
    finds = [
        json.dumps({"record_keys": [f"batch-{i}" for i in range(start, start + per_request)]}).encode()
        for start in range(0, total, per_request)
    ]
    print(f"request body: {len(batches[0]) / 1024:.0f} KiB per batch of {per_request:,}")
    # Production's worker model, as part 1 (a gthread worker could take both connections and
    # serve them on one core). A pass is only ten requests: each figure is the median of
    # three passes, so that a process's first request (its data key, its prepared
    # statements) does not decide it.
    server = Server(tmp, workers=args.workers, threads=args.threads, name="batch", worker_class=args.worker_class)
    try:
        expect_ok(server.url, loadgen.Mix("get", base, env["api_key"]))  # warms a worker and its cache
        for label, path, bodies in (("batch write", "/batch", batches), ("find (read)", "/find", finds)):
            for connections in (1, 2):
                passes = sorted(
                    (_post_all(server.url, base + path, bodies, env["api_key"], connections) for _ in range(3)),
                    key=lambda figures: figures[0],
                )
                rate, errors = passes[1]
                if connections == 2:
                    RESULTS["batch_write_rps" if path == "/batch" else "find_rps"] = round(rate)
                print(f"{label:12} over HTTP, {connections} connection(s): {rate:9,.0f} records/s"
                      + (f"  ({errors} errors)" if errors else ""))
    finally:
        server.stop()
    _in_process(envs)


def _post_all(url: str, path: str, bodies: list[bytes], api_key: str, connections: int) -> tuple[float, int]:
    queue = list(bodies)
    lock = threading.Lock()
    errors = [0]
    records = [0]

    def worker() -> None:
        host = url.removeprefix("http://")
        conn = http.client.HTTPConnection(host, timeout=120)
        while True:
            with lock:
                if not queue:
                    break
                body = queue.pop()
            try:
                conn.request("POST", path, body=body,
                             headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                with lock:
                    errors[0] += 1
                conn.close()
                conn = http.client.HTTPConnection(host, timeout=120)
                continue
            with lock:
                if response.status != 200:
                    errors[0] += 1
                else:
                    payload = json.loads(data)
                    records[0] += payload.get("count", len(payload.get("records", [])))
        conn.close()

    started = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(connections)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return records[0] / (time.monotonic() - started), errors[0]


def _in_process(envs: dict) -> None:
    from environments.models import Environment
    from keys.services import records

    environment = Environment.objects.get(public_id=envs["byok"]["id"])
    items = [(f"inproc-{i}", RECORD_BODY) for i in range(10_000)]
    keys = [k for k, _ in items]
    records.records_find(environment=environment, record_keys=["bench-1"])  # warm the cache
    started = time.monotonic()
    for start in range(0, len(items), 1000):
        records.records_put_batch(environment=environment, records=items[start:start + 1000])
    write = len(items) / (time.monotonic() - started)
    started = time.monotonic()
    for start in range(0, len(keys), 1000):
        records.records_find(environment=environment, record_keys=keys[start:start + 1000])
    read = len(keys) / (time.monotonic() - started)
    RESULTS["in_process"] = {"batch_write_rps": round(write), "find_rps": round(read)}
    print(f"in process (services only, no HTTP/JSON parsing): write {write:9,.0f} records/s, "
          f"find {read:9,.0f} records/s")


def part4_rss(tmp: Path, envs: dict, args) -> None:
    print("\n== 4. Peak RSS of one gunicorn worker (1 worker x 8 threads), 3 GETs : 1 PUT over 1,000 keys ==")
    server = Server(tmp, workers=1, threads=8, name="rss")
    env = envs["byok"]
    mix = loadgen.Mix("mix", f"/api/v1/environments/{env['id']}/records", env["api_key"], json.dumps({"body": RECORD_BODY}))
    try:
        expect_ok(server.url, loadgen.Mix("put", mix.path, mix.api_key, mix.body))
        (pid,) = server.worker_pids()
        after_boot = memory_kib(pid)
        # The first 1,000 exactly (Python client, counted); then wrk in 10 s slices until
        # the target (wrk stops on time, not on a count).
        done = loadgen.run(server.url, mix, connections=8, seconds=120, limit=1_000, tool="python").requests
        first = memory_kib(pid)
        target = args.rss_requests
        deadline = time.monotonic() + args.rss_seconds
        while done < target and time.monotonic() < deadline:
            result = loadgen.run(server.url, mix, connections=8, seconds=10, tool=args.tool)
            done += result.requests
            if result.errors:
                print(f"({result.errors} errors in a slice)")
        last = memory_kib(pid)
        print(f"{'after':>16} {'VmRSS MiB':>10} {'VmHWM (peak) MiB':>17}")
        print(f"{'boot':>16} {after_boot['VmRSS'] / 1024:10.1f} {after_boot['VmHWM'] / 1024:17.1f}")
        print(f"{'1,000 requests':>16} {first['VmRSS'] / 1024:10.1f} {first['VmHWM'] / 1024:17.1f}")
        print(f"{f'{done:,} requests':>16} {last['VmRSS'] / 1024:10.1f} {last['VmHWM'] / 1024:17.1f}")
        if done < target:
            print(f"(stopped at {done:,} of {target:,} requests: the {args.rss_seconds:.0f} s budget ran out)")
        print(f"peak growth from 1,000 to {done:,} requests: {(last['VmHWM'] - first['VmHWM']) / 1024:+.1f} MiB")
        RESULTS["rss"] = {"requests": done, "vmhwm_growth_mib": round((last["VmHWM"] - first["VmHWM"]) / 1024, 1)}
        # Flat RSS (issue 12): the worker's resident set after the first 1,000 requests
        # (warm: Django, the data key and the connection loaded) and after all of them.
        RESULTS.update(
            rss_boot_kib=after_boot["VmRSS"], rss_start_kib=first["VmRSS"], rss_end_kib=last["VmRSS"],
            rss_requests=done,
        )
    finally:
        server.stop()


# ---------------------------------------------------------------------------


def write_results() -> None:
    """test-output/bench/dataplane.json: every figure of this run, and the targets."""
    RESULTS["targets"] = TARGETS
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    path = LOG_DIR / "dataplane.json"
    path.write_text(json.dumps(RESULTS, indent=2, sort_keys=True) + "\n")
    print(f"\nfigures written to {path}")
    for name, target in TARGETS.items():
        value = RESULTS.get(name)
        if name == "p99_ms":
            value = max(RESULTS.get("p99_ms", {}).get(k, 0) for k in ("get", "put")) if RESULTS.get("p99_ms") else None
            verdict = "met" if value is not None and value <= target else "missed"
        else:
            verdict = "met" if value is not None and value >= target else "missed"
        print(f"target {name:16} {target!s:>8}: {value!s:>10}  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="duration of each part-1 load (s)")
    parser.add_argument("--rss-requests", type=int, default=100_000)
    parser.add_argument("--rss-seconds", type=float, default=540, help="time budget of part 4 (s)")
    parser.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--quick", action="store_true", help="3 s loads, 20,000 requests for RSS")
    parser.add_argument("--parts", default="1234")
    parser.add_argument("--no-proxy", action="store_true", help="measure gunicorn directly only")
    parser.add_argument("--proxy-only", action="store_true", help="measure through the front proxy only")
    parser.add_argument("--no-crypto", action="store_true", help="skip bench_crypto.measure()")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of part 1 (median kept)")
    # Part 1's default is production's model (docker/gunicorn.conf.py: sync, 2 x cores + 1).
    parser.add_argument("--worker-class", default="sync", help="gunicorn worker class of part 1 (sync, gthread)")
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1) + 1, help="gunicorn workers of part 1")
    parser.add_argument("--threads", type=int, default=None, help="gthread threads per worker of part 1 (default 16)")
    args = parser.parse_args()
    if args.threads is None:
        args.threads = 16 if args.worker_class == "gthread" else 1
    if args.worker_class == "sync" and args.threads != 1:
        parser.error("sync workers have one thread (gunicorn would run gthread instead)")
    if args.quick:
        args.seconds, args.rss_requests, args.rounds = 3, 20_000, 1

    with tempfile.TemporaryDirectory(prefix="byok-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"(server logs: {LOG_DIR})")
        moto, kms_port = start_kms_emulator(tmp)
        configure_environment(kms_port)
        try:
            recreate_database()
            import django

            django.setup()
            from django.core.management import call_command
            from django.db import connection

            call_command("migrate", verbosity=0)
            envs = seed(kms_port)
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                pg = cursor.fetchone()[0]
            tool = "wrk" if (args.tool == "wrk" or (args.tool == "auto" and loadgen.WRK)) else "python threads"
            print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, PostgreSQL {pg}, "
                  f"load generator: {tool}; everything on 127.0.0.1")
            parts = {"1": part1_single_records, "2": part2_cold_cache, "3": part3_batch, "4": part4_rss}
            RESULTS.update(load_average_before=list(os.getloadavg()), cpus=os.cpu_count(), postgresql=pg,
                           started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            count_statements_per_request(envs)
            for key in args.parts:
                parts[key](tmp, envs, args)
            if not args.no_crypto:
                from bench import bench_crypto

                RESULTS.update(bench_crypto.measure())
            RESULTS["load_average_after"] = list(os.getloadavg())
            write_results()
        finally:
            moto.stop()
            try:
                drop_database()
            except Exception as e:  # the figures are printed already; say why cleanup failed
                print(f"(could not drop the bench database: {e})")


if __name__ == "__main__":
    main()
