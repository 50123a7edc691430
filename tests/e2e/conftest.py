"""Real processes for the end-to-end seed flow (``tests/e2e/test_seed_flow.py``).

* ``moto_server`` on a free loopback port: the customer's AWS (KMS and IAM), driven with
  the real AWS CLI (``.venv/bin/aws``);
* the portal under ``manage.py runserver --noreload --insecure`` (a real server process,
  DEBUG off; ``--insecure`` serves the static files, as a web server in front would);
* ``celery -A portal worker --beat --pool solo`` (validation, periodic re-validation,
  re-encryption) on a Redis database of its own;
* both against this pytest run's PostgreSQL *test* database, with the test settings'
  SECRET_KEY and SEALING_KEYS.

Every process is started by a fixture and always stopped (SIGTERM, then SIGKILL) before
pytest-django empties the tables; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from tests.support import Process, Processes, claimed_redis_db, database_url, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCREENSHOTS = ROOT / "test-output" / "e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]
READY_SECONDS = 45
# Short enough that the revocation bound (TTL + interval) is seconds, not minutes.
DATA_KEY_CACHE_TTL_SECONDS = 5
REVALIDATION_INTERVAL_SECONDS = 3
REGION = "eu-west-1"


def http_ok(url: str, process: Process) -> bool:
    process.assert_running()
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as e:
        return e.code < 500
    except OSError:
        return False


@pytest.fixture
def broker_url() -> Iterator[str]:
    """A Redis database for this test's broker alone: empty, claimed, emptied afterwards."""
    with claimed_redis_db() as url:
        yield url


@dataclass
class Stack:
    """The running product: the portal's URL, the emulator's URL, the processes."""

    portal_url: str
    moto_url: str
    server: Process
    worker: Process
    moto: Process
    directory: Path
    env: dict[str, str] = field(default_factory=dict)  # the portal processes' environment

    def logs(self) -> str:
        return "".join(p.log.read_text(errors="replace") for p in (self.server, self.worker))


def _quiet_aws_env() -> dict[str, str]:
    """The machine's environment without anything that could send a call to real AWS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELERY_"))}
    env.update({
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONUNBUFFERED": "1",
    })
    return env


@contextmanager
def running_stack(broker_url: str, tmp_path: Path, *,
                  platform: Callable[[str], dict[str, str]] | None = None) -> Iterator[Stack]:
    """Start moto, then the Celery worker (with beat) and the portal, all stopped on exit.

    ``platform(moto_url)``, when given, runs once moto answers and before the portal
    processes start; the variables it returns are added to their environment (the role
    flow creates the platform's own IAM user in the emulator there and hands the
    processes its access key, as the standard AWS credential chain would)."""
    processes = Processes(tmp_path)
    moto_port, portal_port = free_port(), free_port()
    moto_url, portal_url = f"http://127.0.0.1:{moto_port}", f"http://127.0.0.1:{portal_port}"
    env = {
        **_quiet_aws_env(),
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DEBUG": "false",
        "SECRET_KEY": settings.SECRET_KEY,
        "SEALING_KEYS": ",".join(settings.SEALING_KEYS),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_COOKIES": "false",
        "DATABASE_URL": database_url(),
        "CONN_MAX_AGE": "0",
        "CELERY_BROKER_URL": broker_url,
        "AWS_KMS_ENDPOINT_URL": moto_url,
        "DATA_KEY_CACHE_TTL_SECONDS": str(DATA_KEY_CACHE_TTL_SECONDS),
        "REVALIDATION_INTERVAL_SECONDS": str(REVALIDATION_INTERVAL_SECONDS),
        "REENCRYPTION_THROTTLE_SECONDS": "0",
        "SITE_URL": portal_url,
        # django-environ drops one leading "/" of the path: four make it absolute.
        "EMAIL_URL": f"filemail:///{tmp_path / 'mail'}",
        "LOG_LEVEL": "INFO",
    }
    try:
        moto = processes.start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)], env)
        wait_for(lambda: http_ok(f"{moto_url}/moto-api/", moto), timeout=READY_SECONDS, what="moto_server")
        if platform is not None:
            env.update(platform(moto_url))
        worker = processes.start("worker", [
            str(BIN / "celery"), "-A", "portal", "worker", "--beat", "--pool", "solo", "-l", "info",
            "-n", f"byok-e2e-{os.getpid()}@localhost", "--without-mingle", "--without-gossip",
            "--schedule", str(tmp_path / "beat-schedule"),
        ], env)
        server = processes.start("server", [
            sys.executable, "manage.py", "runserver", f"127.0.0.1:{portal_port}", "--noreload", "--insecure",
        ], env)
        wait_for(lambda: http_ok(f"{portal_url}/healthz", server), timeout=READY_SECONDS, what="the portal's /healthz")
        wait_for(lambda: worker.assert_running() or "ready." in worker.output(100_000),
                 timeout=READY_SECONDS, what="the Celery worker to be ready")
        yield Stack(portal_url, moto_url, server, worker, moto, tmp_path, env)
    finally:
        processes.stop_all()


@pytest.fixture
def stack(transactional_db, broker_url, tmp_path) -> Iterator[Stack]:
    """GIVEN the whole product running as separate processes: moto (the customer's AWS),
    the portal (DEBUG off, PostgreSQL test database) and a Celery worker with beat.

    ``transactional_db``: what the test writes is committed, so the processes see it; this
    fixture is torn down (processes stopped) before pytest-django empties the tables."""
    with running_stack(broker_url, tmp_path) as running:
        yield running


# ---------------------------------------------------------------------------
# The customer's AWS CLI
# ---------------------------------------------------------------------------


@dataclass
class AwsCli:
    """``.venv/bin/aws … --endpoint-url <moto>`` with the given (dummy) credentials."""

    endpoint_url: str
    credentials: tuple[str, str] = ("testing", "testing")
    calls: list[str] = field(default_factory=list)

    def __call__(self, *args: str) -> dict:
        env = {
            **_quiet_aws_env(),
            "AWS_ACCESS_KEY_ID": self.credentials[0],
            "AWS_SECRET_ACCESS_KEY": self.credentials[1],
            "AWS_DEFAULT_REGION": REGION,
            "AWS_PAGER": "",
        }
        command = [str(BIN / "aws"), *args, "--endpoint-url", self.endpoint_url, "--output", "json"]
        self.calls.append(" ".join(args[:2]))
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"aws {' '.join(args)} failed:\n{done.stderr}"
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def as_user(self, credentials: tuple[str, str]) -> AwsCli:
        return AwsCli(self.endpoint_url, credentials, self.calls)


def moto_iam_enforced(moto_url: str) -> None:
    """From now on moto checks every call's credentials and IAM policies."""
    # The body is the number of calls still let through unchecked; not a form post.
    request = urllib.request.Request(f"{moto_url}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


# ---------------------------------------------------------------------------
# Headless Chromium
# ---------------------------------------------------------------------------


class BrowserThread:
    """Headless Chromium driven by Playwright's sync API in a thread of its own.

    Why a thread: Playwright's sync API runs an event loop in the thread that starts it,
    and refuses to start a second one there; ``tests/browser`` keeps a session-wide one
    running in the main thread. In its own thread this test's Playwright starts and stops
    whatever else runs. ``run(flow)`` calls ``flow(page, shot)`` there, waits at most
    ``timeout`` seconds and re-raises what it raised. Screenshots go to ``screenshots``
    (emptied of earlier ones first): test-output/e2e/ unless the test names another."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def run(self, flow: Callable[[object, Callable[[str], None]], object], *, screenshots: Path = SCREENSHOTS):
        outcome: dict[str, object] = {}

        def target() -> None:
            try:
                outcome["value"] = self._drive(flow, screenshots)
            except BaseException as e:  # noqa: BLE001 - handed back to the test's thread
                outcome["error"] = e
            finally:
                connections.close_all()

        thread = threading.Thread(target=target, name="e2e-browser", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            raise AssertionError(f"the browser steps did not finish within {self.timeout:.0f} s")
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        return outcome.get("value")

    @staticmethod
    def _drive(flow, screenshots: Path):
        from playwright.sync_api import expect, sync_playwright

        screenshots.mkdir(parents=True, exist_ok=True)
        for old in screenshots.glob("*.png"):
            old.unlink()
        taken: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.set_default_timeout(15_000)
                expect.set_options(timeout=15_000)  # its own default is 5 s, whatever the page's

                def shot(name: str) -> None:
                    """Save a numbered full-page screenshot under ``screenshots``."""
                    taken.append(name)
                    page.screenshot(path=str(screenshots / f"{len(taken):02d}-{name}.png"), full_page=True)

                try:
                    return flow(page, shot)
                finally:
                    # The flow's database connection belongs to this context (Django keeps
                    # connections per context): closed here, so the test database can be emptied.
                    connections.close_all()
                    page.screenshot(path=str(screenshots / "99-last-page.png"), full_page=True)
            finally:
                browser.close()


@pytest.fixture
def browser_thread(monkeypatch) -> BrowserThread:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package.")
    # The test's ORM calls run in the browser's thread, beside Playwright's event loop;
    # they are synchronous and safe there.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    return BrowserThread(timeout=240)
