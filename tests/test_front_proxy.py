"""The production front, started the way production starts it: nginx rendered from
docker/nginx/nginx.conf.template by docker/nginx/entrypoint.sh, in front of gunicorn with
docker/gunicorn.conf.py, both on free loopback ports, against this run's PostgreSQL test
database. Slow and stalled clients must not reach gunicorn's workers; the proxy's body
limits must be the API's, with the API's JSON 413.

Every wait is bounded; every socket and process is closed or stopped by the fixture.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import connection

from keys.services import api_keys
from tests.conftest import PASSWORD
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "docker" / "nginx" / "entrypoint.sh"
GUNICORN_CONF = ROOT / "docker" / "gunicorn.conf.py"
GUNICORN = Path(sys.executable).parent / "gunicorn"
READY_SECONDS = 45
STALLED = 64
# A normal request must be answered within this while the stalled connections are open:
# generous (a TLS handshake and a request take well under 0.2 s here, but a loaded 2-core
# machine can be ten times slower), yet half of the 10 s after which nginx drops a stalled
# client, which is how long a request stuck behind them would wait.
BUDGET_SECONDS = 5.0

# Debian puts nginx in /usr/sbin, which is not on every user's PATH.
SEARCH_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin"

pytestmark = pytest.mark.skipif(
    shutil.which("nginx", path=SEARCH_PATH) is None,
    reason="nginx is not installed (./scripts/test.sh installs the Debian package)",
)


def _database_url() -> str:
    """The PostgreSQL test database pytest-django created for this run (``test_…``)."""
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (valid one day) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "fullchain.pem", directory / "privkey.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))
    return cert_path, key_path


@dataclass
class Front:
    https_url: str
    http_url: str
    gunicorn_url: str
    https_port: int
    gunicorn_port: int
    certificate: Path
    directory: Path
    processes: dict[str, subprocess.Popen]

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} ---\n{(self.directory / f'{name}.log').read_text(errors='replace')[-3000:]}"
            for name in self.processes
        )

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certificate))


def _start(name: str, args: list[str], env: dict[str, str], directory: Path) -> subprocess.Popen:
    log = open(directory / f"{name}.log", "w")
    try:
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def _stop(popen: subprocess.Popen) -> None:
    if popen.poll() is not None:
        return
    os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(5)


def _wait_until_healthy(url: str, front_processes: dict[str, subprocess.Popen], **kwargs) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        for name, popen in front_processes.items():
            assert popen.poll() is None, f"{name} exited with {popen.returncode}"
        try:
            if requests.get(f"{url}/healthz", timeout=2, **kwargs).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url}/healthz did not answer 200 within {READY_SECONDS} s")


@pytest.fixture
def front(transactional_db) -> Iterator[Front]:
    """GIVEN gunicorn (docker/gunicorn.conf.py, production settings) and nginx in front of it
    (the template compose uses, rendered by the proxy's own entry point).

    ``transactional_db``: what a test writes is committed, so gunicorn sees it; the processes
    are stopped before pytest-django empties the tables."""
    # nginx's workers run as www-data when the tests run as root: the prefix must be
    # reachable by them (pytest's tmp_path is private to its owner).
    directory = Path(tempfile.mkdtemp(prefix="byok-front-"))
    directory.chmod(0o755)
    certificate, private_key = _self_signed_certificate(directory)
    gunicorn_port, http_port, https_port = free_port(), free_port(), free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELERY_", "API_MAX_"))}
    app_env = base_env | {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "false",
        "SECRET_KEY": settings.SECRET_KEY,
        "SEALING_KEYS": ",".join(settings.SEALING_KEYS),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": _database_url(),
        "CONN_MAX_AGE": "0",
        "TRUSTED_PROXY_COUNT": "1",
        # Production's security settings (the test run's defaults turn some of them off).
        "SECURE_PROXY_SSL_HEADER": "false",
        "SECURE_SSL_REDIRECT": "true",
        "SECURE_COOKIES": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "GUNICORN_BIND": f"127.0.0.1:{gunicorn_port}",
    }
    app_env.pop("REDIS_URL", None)
    proxy_env = base_env | {
        "PATH": SEARCH_PATH,
        "NGINX_PREFIX": f"{directory}/",
        "PROXY_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "PROXY_HTTPS_LISTEN": f"127.0.0.1:{https_port}",
        "PROXY_UPSTREAM": f"127.0.0.1:{gunicorn_port}",
        "PROXY_TLS_CERTIFICATE": str(certificate),
        "PROXY_TLS_CERTIFICATE_KEY": str(private_key),
    }
    processes: dict[str, subprocess.Popen] = {}
    front = Front(
        https_url=f"https://127.0.0.1:{https_port}", http_url=f"http://127.0.0.1:{http_port}",
        gunicorn_url=f"http://127.0.0.1:{gunicorn_port}", https_port=https_port, gunicorn_port=gunicorn_port,
        certificate=certificate, directory=directory, processes=processes,
    )
    try:
        processes["gunicorn"] = _start(
            "gunicorn", [str(GUNICORN), "-c", str(GUNICORN_CONF), "portal.wsgi:application"], app_env, directory
        )
        processes["nginx"] = _start("nginx", [str(ENTRYPOINT)], proxy_env, directory)
        _wait_until_healthy(front.gunicorn_url, processes)
        _wait_until_healthy(front.https_url, processes, verify=str(certificate))
        yield front
    finally:
        for popen in reversed(processes.values()):
            _stop(popen)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def api(front, environment, alice):
    """An API key of ``environment`` and one record written through the proxy."""
    _, api_key = api_keys.api_key_create(environment=environment, name="front", actor=alice)
    url = f"{front.https_url}/api/v1/environments/{environment.public_id}/records"
    headers = {"Authorization": f"Bearer {api_key}"}
    response = requests.put(f"{url}/customer:42", json={"body": {"name": "Ada"}}, headers=headers,
                            verify=str(front.certificate), timeout=10)
    assert response.status_code == 200, response.text
    return url, headers


# ---------------------------------------------------------------------------
# Stalled connections
# ---------------------------------------------------------------------------


def _stalled_requests(path: str, count: int) -> list[bytes]:
    """Half send a whole header announcing a body that never comes; half stop in the header."""
    body_stall = (f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  "Content-Length: 1000\r\n\r\n{").encode()
    header_stall = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"
    return [body_stall if i % 2 == 0 else header_stall for i in range(count)]


def _open_stalled(port: int, requests_: list[bytes], tls: ssl.SSLContext | None) -> list[socket.socket]:
    opened = []
    try:
        for data in requests_:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
            opened.append(sock)
            sock.sendall(data)
    except BaseException:
        _close_all(opened)
        raise
    return opened


def _still_open(sock: socket.socket) -> bool:
    """Nothing answered and nothing closed: the peer is still waiting for the rest."""
    sock.setblocking(False)
    try:
        sock.recv(1)  # an answer, or b"" when closed
        return False
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def _close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        try:
            sock.close()
        except OSError:
            pass


def _timed_get(url: str, **kwargs) -> tuple[float, requests.Response]:
    started = time.monotonic()
    response = requests.get(url, timeout=3 * BUDGET_SECONDS, **kwargs)
    return time.monotonic() - started, response


def test_it_answers_healthz_and_the_api_within_a_second_while_64_connections_stall(front, api):
    """GIVEN 64 connections to the proxy that sent a header (or part of one) and then stall
    WHEN a client asks for /healthz and for a record
    THEN both answer 200 at once (within BUDGET_SECONDS), while the stalled connections are still open."""
    url, headers = api
    tls = front.tls_context()
    stalled = _open_stalled(front.https_port, _stalled_requests(f"{url.split(str(front.https_port))[1]}/stall", STALLED), tls)
    try:
        time.sleep(0.5)  # every stalled request has reached the proxy
        elapsed_health, health = _timed_get(f"{front.https_url}/healthz", verify=str(front.certificate))
        elapsed_record, record = _timed_get(f"{url}/customer:42", headers=headers, verify=str(front.certificate))
        still_open = sum(_still_open(sock) for sock in stalled)
    finally:
        _close_all(stalled)
    assert health.status_code == 200, front.logs()
    assert record.status_code == 200 and record.json()["body"] == {"name": "Ada"}, record.text
    assert elapsed_health < BUDGET_SECONDS, f"/healthz took {elapsed_health:.2f} s"
    assert elapsed_record < BUDGET_SECONDS, f"the record GET took {elapsed_record:.2f} s"
    assert still_open == STALLED, f"only {still_open} of {STALLED} stalled connections were still open"


def test_it_would_stall_gunicorn_without_the_proxy(front, api):
    """The same stalled connections sent to gunicorn directly take worker threads, and other
    clients go unanswered: of 8 GETs of /healthz sent at once, at least one gets no answer in
    3 s. (What the proxy test above is protecting against.)

    Why 8 probes and not one: gunicorn's workers share the listening socket, and a worker whose
    threads are all stalled still accepts connections, so the kernel may hand one worker most
    of the stalled ones and leave another worker free; a single probe can land on the free one
    (seen failing in full runs). Each probe lands on either worker, so 8 at once reach the
    stalled one unless the kernel hands every one of them to the free worker."""
    url, _ = api
    path = url.split(str(front.https_port))[1]
    stalled = _open_stalled(front.gunicorn_port, _stalled_requests(f"{path}/stall", 4 * STALLED), None)
    try:
        time.sleep(1.0)
        with ThreadPoolExecutor(max_workers=8) as pool:
            answered = list(pool.map(lambda _: _answers(f"{front.gunicorn_url}/healthz", timeout=3), range(8)))
        assert not all(answered), "every probe was answered: the stalled connections stalled nothing"
    finally:
        _close_all(stalled)
    # Once the stalled clients are gone, gunicorn answers again.
    _wait_until_healthy(front.gunicorn_url, front.processes)


def _answers(url: str, *, timeout: float) -> bool:
    """True if ``url`` answered within ``timeout`` seconds."""
    try:
        requests.get(url, timeout=timeout)
    except requests.exceptions.Timeout:
        return False
    return True


# ---------------------------------------------------------------------------
# Body limits
# ---------------------------------------------------------------------------


def test_it_refuses_a_2_mib_body_at_the_proxy_with_the_apps_json_413(front, api):
    url, headers = api
    body = json.dumps({"body": "x" * (2 * 1024 * 1024)}).encode()
    headers = headers | {"Content-Type": "application/json"}
    through_proxy = requests.put(f"{url}/big", data=body, headers=headers, verify=str(front.certificate), timeout=10)
    path = url.split(str(front.https_port))[1]
    from_app = requests.put(f"{front.gunicorn_url}{path}/big", data=body, headers=headers, timeout=10)

    assert from_app.status_code == 413
    assert through_proxy.status_code == 413
    assert through_proxy.headers["Content-Type"] == "application/json"
    assert through_proxy.headers["Cache-Control"] == "no-store"
    assert through_proxy.json() == from_app.json() == {"error": {
        "code": "body_too_large", "message": f"The request body may be at most {settings.API_MAX_BODY_BYTES} bytes.",
    }}
    # The proxy answered alone: the app sets X-Request-ID on every answer, nginx does not.
    assert "X-Request-ID" in from_app.headers
    assert "X-Request-ID" not in through_proxy.headers


CANARY = "canary-zqx987-ada.example.org"


def test_it_writes_no_record_key_to_its_logs_nor_a_body_to_disk_even_on_errors(front, api):
    """nginx's error log carries the request line (the path, so the record key) on every
    request-related line: a body spooled to a temporary file (over the default 128 KiB
    buffer), a body over the limit, an upstream that cannot be reached. None may say it.
    With gunicorn gone, the API's answer is JSON 503 service_unavailable, not nginx's HTML.
    (Where spooled bodies live, tmpfs, is compose's: tests/test_docker.py.)"""
    url, headers = api
    verify = str(front.certificate)
    json_headers = headers | {"Content-Type": "application/json"}
    spooled = b'{"body":"' + b"x" * (300 * 1024) + b'"}'
    too_big = b'{"body":"' + b"x" * (2 * 1024 * 1024) + b'"}'
    batch = json.dumps({"records": [{"record_key": CANARY + "-b", "body": "x" * (300 * 1024)}]}).encode()
    stored = requests.put(f"{url}/{CANARY}", data=spooled, headers=json_headers, verify=verify, timeout=20)
    batched = requests.post(f"{url}/batch", data=batch, headers=json_headers, verify=verify, timeout=20)
    refused = requests.put(f"{url}/{CANARY}", data=too_big, headers=json_headers, verify=verify, timeout=20)
    _stop(front.processes["gunicorn"])
    gone = requests.get(f"{url}/{CANARY}", headers=headers, verify=verify, timeout=20)
    gone_batch = requests.post(f"{url}/find", json={"record_keys": [CANARY]}, headers=headers, verify=verify, timeout=20)
    # A mistyped base URL reaches the portal's location: its path is not logged either.
    gone_mistyped = requests.get(f"{front.https_url}/v1/environments/x/records/{CANARY}", verify=verify, timeout=20)
    gone_health = requests.get(f"{front.http_url}/healthz", timeout=20)

    assert (stored.status_code, batched.status_code, refused.status_code) == (200, 200, 413)
    for answer in (gone, gone_batch):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Content-Type"] == "application/json"
        assert int(answer.headers["Retry-After"]) > 0
        assert answer.json()["error"]["code"] == "service_unavailable"
    assert gone_mistyped.status_code == 503 and "text/html" in gone_mistyped.headers["Content-Type"]
    assert gone_health.status_code == 503 and gone_health.json()["status"] == "unavailable"
    assert int(gone_mistyped.headers["Retry-After"]) > 0 and int(gone_health.headers["Retry-After"]) > 0
    nginx_log = (front.directory / "nginx.log").read_text(errors="replace")
    gunicorn_log = (front.directory / "gunicorn.log").read_text(errors="replace")
    assert " 503 " in nginx_log  # the access log does say what happened, without the path
    assert CANARY not in nginx_log and CANARY not in gunicorn_log, nginx_log[-2000:]
    assert list((front.directory / "body").iterdir()) == []  # spooled bodies are gone once answered


def test_it_lets_a_body_at_the_limit_through_to_the_app(front, api):
    url, headers = api
    # {"body":"xxx…"}: exactly API_MAX_BODY_BYTES bytes of request body, a smaller record.
    body = b'{"body":"' + b"x" * (settings.API_MAX_BODY_BYTES - 11) + b'"}'
    assert len(body) == settings.API_MAX_BODY_BYTES
    response = requests.put(f"{url}/at-limit", data=body, headers=headers | {"Content-Type": "application/json"},
                            verify=str(front.certificate), timeout=20)
    assert response.status_code == 200, response.text


def test_it_gives_batch_and_find_the_batch_limit(front, api):
    """Over API_MAX_BATCH_BODY_BYTES (announced by Content-Length), the proxy answers the
    batch limit's JSON 413 without reading the body; just over the record limit, it passes."""
    url, headers = api
    path = url.split(str(front.https_port))[1]
    limit = settings.API_MAX_BATCH_BODY_BYTES
    with socket.create_connection(("127.0.0.1", front.https_port), timeout=5) as raw:
        with front.tls_context().wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            sock.sendall((f"POST {path}/find HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {headers['Authorization']}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {limit + 1}\r\n\r\n").encode())
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(payload) == {"error": {
        "code": "body_too_large", "message": f"The request body may be at most {limit} bytes.",
    }}
    # Over the record limit, under the batch limit: the app gets it (and answers it).
    find = json.dumps({"record_keys": ["customer:42"], "padding": "x" * settings.API_MAX_BODY_BYTES}).encode()
    response = requests.post(f"{url}/find", data=find, headers=headers | {"Content-Type": "application/json"},
                             verify=str(front.certificate), timeout=20)
    assert response.status_code != 413, response.text
    assert "X-Request-ID" in response.headers


# ---------------------------------------------------------------------------
# Forwarded headers
# ---------------------------------------------------------------------------


def test_it_trusts_the_forwarded_scheme_from_the_proxy_only(front, api):
    """Production settings redirect plain HTTP to HTTPS. Through the proxy (TLS), the sign-in
    page answers 200; sent to gunicorn from another address with a forged
    ``X-Forwarded-Proto: https``, the request is still plain HTTP and is redirected."""
    through_proxy = requests.get(f"{front.https_url}/accounts/login/", verify=str(front.certificate),
                                 allow_redirects=False, timeout=10)
    assert through_proxy.status_code == 200, through_proxy.headers

    with socket.create_connection(("127.0.0.1", front.gunicorn_port), timeout=5, source_address=("127.0.0.2", 0)) as sock:
        sock.sendall(b"GET /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-Proto: https\r\n"
                     b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 301"), answer[:200]
    assert b"Location: https://127.0.0.1/accounts/login/" in answer


def test_it_redirects_plain_http_to_https_on_the_proxys_https_port_except_the_health_check(front):
    """The fixture's HTTPS port is not 443: the redirect keeps it (a redirect to
    https://127.0.0.1/ would reach nothing)."""
    health = requests.get(f"{front.http_url}/healthz", timeout=5)
    page = requests.get(f"{front.http_url}/accounts/login/?next=/", allow_redirects=False, timeout=5)
    assert health.status_code == 200
    assert page.status_code == 308
    assert page.headers["Location"] == f"https://127.0.0.1:{front.https_port}/accounts/login/?next=/"


def test_it_signs_in_through_the_proxy_on_a_port_other_than_443(front, alice):
    """A browser's sign-in POST carries ``Origin: https://127.0.0.1:<port>``; Django's CSRF
    check compares it with the Host the proxy passes, which must keep the port (with
    ``$host``, 403 "Origin checking failed")."""
    # The server's hashers are production's, which do not read the tests' fast MD5 hash.
    alice.password = make_password(PASSWORD, hasher="pbkdf2_sha256")
    alice.save(update_fields=["password"])
    origin = f"https://127.0.0.1:{front.https_port}"
    with requests.Session() as browser:
        # verify per request: requests lets REQUESTS_CA_BUNDLE override a session's verify.
        page = browser.get(f"{front.https_url}/accounts/login/", verify=str(front.certificate), timeout=10)
        assert page.status_code == 200, page.text[:500]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token is not None
        signed_in = browser.post(
            f"{front.https_url}/accounts/login/?next=/",
            data={"csrfmiddlewaretoken": token.group(1), "username": alice.username, "password": PASSWORD},
            headers={"Origin": origin, "Referer": f"{origin}/accounts/login/"},
            verify=str(front.certificate), allow_redirects=False, timeout=30,
        )
    assert signed_in.status_code == 302, (signed_in.status_code, signed_in.text[:500], front.logs())
    assert "sessionid" in signed_in.cookies


def test_it_signs_in_over_http2_on_a_port_other_than_443(front, alice, tmp_path):
    """Browsers speak HTTP/2 over TLS and send ``:authority`` rather than a Host header: the
    port must reach the app as well (curl plays the browser; requests speaks HTTP/1.1)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    alice.password = make_password(PASSWORD, hasher="pbkdf2_sha256")
    alice.save(update_fields=["password"])
    origin = f"https://127.0.0.1:{front.https_port}"
    jar = tmp_path / "cookies"
    base = [curl, "-sS", "--http2", "--cacert", str(front.certificate), "-b", str(jar), "-c", str(jar)]
    page = subprocess.run([*base, f"{front.https_url}/accounts/login/"], capture_output=True, text=True, timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.stdout)
    assert token is not None, (page.stdout[:500], page.stderr)
    signed_in = subprocess.run(
        [*base, "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "-H", f"Origin: {origin}",
         "--data-urlencode", f"csrfmiddlewaretoken={token.group(1)}", "--data-urlencode", f"username={alice.username}",
         "--data-urlencode", f"password={PASSWORD}", f"{front.https_url}/accounts/login/?next=/"],
        capture_output=True, text=True, timeout=30,
    )
    assert signed_in.stdout == "2 302", (signed_in.stdout, signed_in.stderr, front.logs())


def test_gunicorn_opens_no_control_socket(front):
    """gunicorn 25.1+ opens ~/.gunicorn/gunicorn.ctl by default, one path for every gunicorn
    of the user (the tests and the bench start several): production's config turns it off."""
    log = (front.directory / "gunicorn.log").read_text(errors="replace")
    assert "Booting worker" in log
    assert "Control socket" not in log
