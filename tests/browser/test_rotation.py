"""The owner re-encrypts an environment after a rotation and watches it live, in headless
Chromium: the progress bar reaches 100% without a reload, then "Retire" appears for the
drained version.

The job queued by "Start re-encryption" runs in a background thread of the test (as a
worker would), released once the page is open, with a throttle so that its progress can
be seen between batches, and held part-way until the page has shown it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
from django.db import connection
from django.utils import timezone
from playwright.sync_api import expect

from keys import queue
from keys.models import KeyRegistration, ReencryptionJob
from keys.services import reencryption
from tests.factories import counts, keys, new_managed_version, put_records

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RECORDS = 300
BATCH = 25
THROTTLE_SECONDS = 0.3  # 12 batches: about 4 s, several polls of the page
HOLD_AFTER_BATCHES = 3  # the job waits there until the page has shown it part-way
HOLD_SECONDS = 60  # a bound on each hold, should the test never release it


@dataclass
class Worker:
    """``start``: the queued job may run; ``resume``: it may go on past HOLD_AFTER_BATCHES."""

    start: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def worker(monkeypatch):
    """``enqueue_reencryption`` starts the job in a thread that waits for ``start``, then
    holds it after HOLD_AFTER_BATCHES batches until ``resume`` (the page can then be seen
    part-way, however slow the machine: a 1 s poll could miss a 4 s run otherwise)."""
    held = Worker()
    threads: list[threading.Thread] = []

    def run(job_id: int) -> None:
        batches = 0

        def between_batches() -> None:
            nonlocal batches
            batches += 1
            if batches == HOLD_AFTER_BATCHES:
                held.resume.wait(HOLD_SECONDS)

        try:
            held.start.wait(HOLD_SECONDS)
            reencryption.reencryption_run(
                job_id=job_id, slice_seconds=None, batch_size=BATCH, throttle_seconds=THROTTLE_SECONDS,
                between_batches=between_batches,
            )
        finally:
            connection.close()

    def enqueue(job_id: int, **kwargs) -> None:
        thread = threading.Thread(target=run, args=(job_id,), daemon=True)
        threads.append(thread)
        thread.start()

    monkeypatch.setattr(queue, "enqueue_reencryption", enqueue)
    yield held
    held.start.set()
    held.resume.set()
    for thread in threads:
        thread.join(30)


def test_it_shows_the_reencryption_progress_live_and_then_offers_retirement(
    page, live_server, sign_in, shot, alice, environment, worker, violations
):
    """GIVEN 300 records under platform-managed v1 and a new platform-managed v2 active
    WHEN alice starts the re-encryption on the environment page
    THEN the progress bar moves and reaches 100% without a reload, the job says Done, and a
    "Retire version 1" button appears; retiring destroys v1's material."""
    put_records(environment, keys(RECORDS))
    new_managed_version(environment, alice)
    sign_in(alice)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/")
    card = page.locator("#key-lifecycle")
    expect(card.locator('[data-records-version="1"] [data-count]')).to_have_text(str(RECORDS))
    expect(card.get_by_role("link", name="Retire version 1…")).to_have_count(0)

    card.get_by_role("button", name="Start re-encryption").click()
    expect(page.get_by_text("Re-encryption to version 2 started")).to_be_visible()
    page.evaluate("window.__sameDocument = 'yes'")
    shot("1-queued")
    worker.start.set()

    page.wait_for_function(
        "() => { const t = document.querySelector('[data-progress-text]');"
        " const p = t ? parseInt(t.textContent, 10) : 0; return p > 0 && p < 100; }",
        timeout=15_000,
    )
    shot("2-running")
    worker.resume.set()
    expect(card.locator("[data-progress-text]")).to_have_text("100%", timeout=30_000)
    expect(card.locator("[data-progress-bar]")).to_have_attribute("value", "100")
    expect(card.locator("[data-job-status]")).to_have_attribute("data-job-status", "done")
    expect(card.locator('[data-records-version="1"] [data-count]')).to_have_text("0")
    retire = card.get_by_role("link", name="Retire version 1…")
    expect(retire).to_be_visible()
    shot("3-done")
    assert page.evaluate("window.__sameDocument") == "yes"  # no reload
    assert counts(environment) == {2: RECORDS}
    assert ReencryptionJob.objects.get().records_moved == RECORDS

    retire.click()
    expect(page.get_by_role("heading", name="Retire key version 1?")).to_be_visible()
    expect(page.locator("[data-consequences]")).to_contain_text("Destroy the sealed data key of key version 1")
    shot("4-confirm-retirement")
    assert KeyRegistration.objects.get(environment=environment, version=1).sealed_data_key  # nothing done yet
    page.get_by_role("button", name="Retire version 1").click()
    expect(page.get_by_text("Key version 1 retired")).to_be_visible()
    shot("5-retired")
    v1 = KeyRegistration.objects.get(environment=environment, version=1)
    assert (v1.status, v1.sealed_data_key) == (KeyRegistration.Status.RETIRED, "")
    assert not violations, violations


@pytest.fixture
def violations(page):
    """Every Content Security Policy violation Chromium reports on the page's console."""
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text) if "Content Security Policy" in message.text else None)
    return seen


def test_it_runs_a_revocation_drill_and_shows_when_the_platform_stopped(
    page, live_server, sign_in, shot, alice, environment, aws, monkeypatch, violations  # noqa: F811
):
    """GIVEN an environment served by an active BYOK key (moto in-process)
    WHEN the owner starts watching on the drill page, the key is disabled, and she presses
    "Check now"
    THEN the page (polling, no reload) says it still serves, then that the platform stopped
    serving and after how long; no Content Security Policy violation on the way."""
    from keys import cache, kms
    from tests.factories import make_byok, refuse

    make_byok(environment, aws)
    cache.set_cache(None)
    sign_in(alice)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/revocation-drill/")
    expect(page.get_by_text("aws kms disable-key --key-id")).to_be_visible()

    page.get_by_role("button", name="Start watching").click()
    state = page.locator("[data-drill-state]")
    expect(state).to_contain_text("still serving (version 2)", timeout=30_000)
    shot("1-watching")

    monkeypatch.setattr(kms, "decrypt", refuse(kms.Reason.DISABLED))
    page.get_by_role("button", name="Check now").click()
    expect(state).to_contain_text("Stopped serving", timeout=30_000)
    expect(state).to_contain_text("(disabled)")
    shot("2-stopped")
    assert KeyRegistration.objects.get(environment=environment, version=2).status == KeyRegistration.Status.INACCESSIBLE
    assert not violations, violations


def test_it_brings_the_versions_table_up_to_date_when_the_lifecycle_card_sees_a_status_change_first(
    page, live_server, sign_in, shot, alice, environment, monkeypatch
):
    """One status everywhere, live: while a re-encryption job is queued the lifecycle card
    polls its progress (progress.js), and the versions table polls nothing (no validation is
    running). GIVEN the page is open WHEN a version's status changes on the server (another
    tab, the data plane) THEN the versions table and the records table both show the new
    status without a reload (progress.js tells status.js the statuses it read)."""
    put_records(environment, keys(5))
    new_managed_version(environment, alice)
    monkeypatch.setattr(queue, "enqueue_reencryption", lambda *args, **kwargs: None)  # stays queued
    reencryption.reencryption_start(environment=environment, actor=alice)
    sign_in(alice)
    page.goto(f"{live_server.url}/environments/{environment.public_id}/")
    page.evaluate("window.__sameDocument = 'yes'")
    versions_cell = page.locator("#version-1 [data-status-cell] .status")
    records_cell = page.locator("[data-lifecycle-version='1'] .status")
    expect(versions_cell).to_have_text("Decrypt-only")
    expect(records_cell).to_have_text("Decrypt-only")

    KeyRegistration.objects.filter(environment=environment, version=1).update(
        status=KeyRegistration.Status.RETIRED, retired_at=timezone.now()
    )

    # Polls of 1 s (the card) then 1.5 s (the table): generous for a loaded machine.
    expect(versions_cell).to_have_text("Retired", timeout=30_000)
    expect(records_cell).to_have_text("Retired", timeout=30_000)
    shot("1-both-tables-follow")
    assert page.evaluate("window.__sameDocument") == "yes"
