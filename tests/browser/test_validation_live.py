"""The environment page follows a validation live, in headless Chromium.

moto runs in-process (``mock_aws`` patches botocore in every thread, the live server's
included). The validation job is started by the test in a background thread once the page
is open, and its KMS checks are held until the test lets them finish, so that the page can
be seen going from "Pending validation" through "Validating" to "Valid" without a reload
(a fixed delay could end between two polls of the page on a loaded machine)."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import pytest
from django.db import connection
from moto import mock_aws
from playwright.sync_api import expect

from keys import kms, tasks
from keys.models import KeyRegistration
from keys.services import validation
from tests.keys.moto_customer import register, set_up_customer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOLD_SECONDS = 60  # a bound on each hold, should the test never release it


@pytest.fixture
def aws(monkeypatch):
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    kms.clear_clients()
    with mock_aws():
        yield
    kms.clear_clients()


@dataclass
class Job:
    """``start``: the queued job may run; ``finish``: its KMS checks may finish."""

    start: threading.Event = field(default_factory=threading.Event)
    finish: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def slow_job(monkeypatch):
    """The job, queued after commit, waits for ``start``, then validates with its KMS checks
    held until ``finish`` (the window in which the page says "Validating")."""
    job = Job()
    threads: list[threading.Thread] = []
    real_diagnose = validation._diagnose

    def held_diagnose(registration, *args):
        job.finish.wait(HOLD_SECONDS)
        return real_diagnose(registration, *args)

    def run(registration_id, trigger):
        try:
            job.start.wait(HOLD_SECONDS)
            validation.registration_validate(registration_id=registration_id, trigger=trigger)
        finally:
            connection.close()

    def delay(registration_id, trigger):
        thread = threading.Thread(target=run, args=(registration_id, trigger), daemon=True)
        threads.append(thread)
        thread.start()

    monkeypatch.setattr(validation, "_diagnose", held_diagnose)
    monkeypatch.setattr(tasks.validate_registration, "delay", delay)
    yield job
    job.start.set()
    job.finish.set()
    for thread in threads:
        thread.join(30)


def test_it_shows_the_validation_live_and_activates_the_key(page, live_server, sign_in, shot, alice, environment, aws, slow_job):
    """GIVEN alice registered a BYOK key (version 2) whose validation job is queued
    WHEN she opens the environment page and the job runs
    THEN the status goes Pending validation → Validating → Valid without a reload, the
    checks appear, and "Activate" makes version 2 active and version 1 decrypt-only."""
    customer = set_up_customer()
    registration = register(environment, alice, customer)
    sign_in(alice)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)

    page.goto(f"{live_server.url}/environments/{environment.public_id}/")
    navigations.clear()
    page.evaluate("window.__sameDocument = 'yes'")
    version = page.locator(f"#registration-{registration.public_id}")
    status = version.locator("[data-status-cell] .status")
    # One status everywhere: the lifecycle card's records table says what the versions table says.
    records_row = page.locator("[data-lifecycle-version='2'] .status")
    expect(status).to_have_text("Pending validation")
    expect(records_row).to_have_text("Pending validation")
    shot("1-pending")

    slow_job.start.set()
    expect(status).to_have_text("Validating", timeout=30_000)
    expect(records_row).to_have_text("Validating")
    shot("2-validating")
    slow_job.finish.set()
    expect(status).to_have_text("Valid", timeout=30_000)
    expect(records_row).to_have_text("Valid")
    shot("3-valid")

    assert page.evaluate("window.__sameDocument") == "yes"
    assert navigations == []
    checks = version.locator("table.checks")
    expect(checks).to_be_visible()
    expect(checks.locator("[data-check='decrypt.call']")).to_contain_text("Passed")
    expect(checks.locator("[data-check='decrypt.plaintext_size']")).to_contain_text("256 bits")
    expect(version.get_by_text("Validation history")).to_be_visible()

    version.get_by_role("link", name="Activate version 2…").click()
    expect(page.get_by_role("heading", name="Activate key version 2?")).to_be_visible()
    expect(page.locator("[data-consequences]")).to_contain_text("Make version 1 (active now) decrypt-only")
    shot("4-confirm-activation")
    page.get_by_role("button", name="Activate version 2").click()
    expect(page.get_by_text("Key version 2 is now active")).to_be_visible()
    expect(page.locator(f"#registration-{registration.public_id} [data-status-cell] .status")).to_have_text("Active")
    expect(page.locator("#version-1 .status")).to_have_text("Decrypt-only")
    shot("5-active")
    assert KeyRegistration.objects.get(pk=registration.pk).status == KeyRegistration.Status.ACTIVE


def test_it_stops_polling_once_the_validation_is_over(page, live_server, sign_in, alice, environment, aws, slow_job):
    customer = set_up_customer()
    registration = register(environment, alice, customer, region="us-east-1")  # fails: region differs from ARN
    sign_in(alice)
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if "/status/" in request.url else None)

    page.goto(f"{live_server.url}/environments/{environment.public_id}/")
    with page.expect_request(lambda request: "/status/" in request.url):  # polling while it validates
        slow_job.start.set()
    slow_job.finish.set()
    status = page.locator(f"#registration-{registration.public_id} [data-status-cell] .status")
    expect(status).to_have_text("Failed", timeout=30_000)
    expect(page.get_by_text(re.compile("Register the region of the key"))).to_be_visible()
    settled = len(polls)
    page.wait_for_timeout(3500)

    assert len(polls) == settled
    expect(page.get_by_role("button", name="Validate again")).to_be_visible()
