"""One status per key version on a page (issue 13, "One status model rendered the same
everywhere"): the environment page's key versions table, its status cell's note and the
lifecycle card's records table, and the version's live status (cell and validation panel),
all say the same thing about one version.

The newcomer's trial: right after registering, the key versions table said "Pending
validation" while the records table said "Validating" for the same version, because the
lifecycle card read the versions again and a worker had moved it in between. The race is
played here by moving the version to ``validating`` right after the page's first read."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.urls import reverse

from environments import views as environment_views
from keys import tasks
from keys.models import KeyRegistration
from keys.services.registrations import registration_create

Status = KeyRegistration.Status
ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
LABELS = {value: label for value, label in Status.choices}
# The busy note beside each status (keys/partials/validation_status.html).
NOTES = {Status.PENDING_VALIDATION: "validation queued…", Status.VALIDATING: "checking with KMS…"}
VOID = {"br", "input", "img", "meta", "link", "hr", "col", "source", "wbr"}


class _StatusLabels(HTMLParser):
    """Every status badge (``<span class="status …" data-status=…>``) of a page, with the
    key version of the panel it sits in: ``data-version`` (key versions table, status
    endpoint's cell when ``version`` is given) or ``data-lifecycle-version`` (records table);
    and the text of each version's panels, to look for a contradicting note."""

    def __init__(self, version: int | None = None) -> None:
        super().__init__()
        self.stack: list[tuple[str, int | None, bool]] = []  # (tag, version, is status badge)
        self.badges: list[tuple[int | None, str, str]] = []  # (version, data-status, label)
        self.text: dict[int | None, str] = {}
        self.default = version

    def _version(self) -> int | None:
        return next((v for _tag, v, _badge in reversed(self.stack) if v is not None), self.default)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        raw = a.get("data-version") or a.get("data-lifecycle-version")
        version = int(raw) if raw else None
        badge = tag == "span" and "status" in (a.get("class") or "").split() and "data-status" in a
        if tag in VOID:
            return
        self.stack.append((tag, version, badge))
        if badge:
            self.badges.append((self._version(), a["data-status"], ""))

    def handle_endtag(self, tag):
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self.stack and self.stack[-1][2]:
            version, value, label = self.badges[-1]
            self.badges[-1] = (version, value, label + data)
        version = self._version()
        self.text[version] = self.text.get(version, "") + data


def _badges(html: str, version: int, default: int | None = None) -> tuple[set[tuple[str, str]], str, int]:
    parser = _StatusLabels(default)
    parser.feed(html)
    shown = [(value, label.strip()) for v, value, label in parser.badges if v == version]
    return set(shown), parser.text.get(version, ""), len(shown)


@pytest.fixture(autouse=True)
def queued(monkeypatch) -> list[tuple]:
    """No worker here: the validation job is recorded, not run, so the version stays pending."""
    calls: list[tuple] = []
    monkeypatch.setattr(tasks.validate_registration, "delay", lambda *args: calls.append(args))
    return calls


@pytest.fixture
def registration(environment, alice, django_capture_on_commit_callbacks) -> KeyRegistration:
    with django_capture_on_commit_callbacks(execute=True):
        return registration_create(
            environment=environment, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
            encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 40, encryption_context={},
            access_key_id="AKIAIOSFODNN7EXAMPLE", secret_access_key=SECRET,
        )


def _page(client, environment) -> str:
    response = client.get(reverse("environment_detail", args=[environment.public_id]))
    assert response.status_code == 200
    return response.content.decode()


def _assert_one_status(html: str, version: int, status: str, *, panels: int) -> None:
    shown, text, count = _badges(html, version)
    assert shown == {(status, LABELS[status])}, f"version {version} reads {shown} on one page"
    assert count == panels  # every panel that shows the version's status was found
    for other, note in NOTES.items():
        if other != status:
            assert note not in text  # no note that contradicts the badge beside it


@pytest.mark.parametrize("status", [Status.PENDING_VALIDATION, Status.VALIDATING])
def test_it_shows_a_validating_or_pending_version_with_one_status_in_every_panel_of_the_environment_page(
    status, client_for, alice, environment, registration
):
    KeyRegistration.objects.filter(pk=registration.pk).update(status=status)

    html = _page(client_for(alice), environment)

    # The key versions table (status cell) and the lifecycle card's records table.
    _assert_one_status(html, registration.version, status, panels=2)
    assert NOTES[status] in _badges(html, registration.version)[1]
    _assert_one_status(html, 1, Status.ACTIVE, panels=2)


def test_it_shows_one_status_when_a_worker_moves_the_version_while_the_page_is_being_read(
    monkeypatch, client_for, alice, environment, registration
):
    """The newcomer's trial, played deterministically: the worker takes the job (pending
    validation → validating) just after the page read its key versions."""
    overview = environment_views.environment_overview

    def then_the_worker_moves_it(**kwargs):
        context = overview(**kwargs)
        KeyRegistration.objects.filter(pk=registration.pk).update(status=Status.VALIDATING)
        return context

    monkeypatch.setattr(environment_views, "environment_overview", then_the_worker_moves_it)

    html = _page(client_for(alice), environment)

    _assert_one_status(html, registration.version, Status.PENDING_VALIDATION, panels=2)


@pytest.mark.parametrize("status", [Status.PENDING_VALIDATION, Status.VALIDATING])
def test_it_answers_the_live_status_with_the_same_words_as_the_environment_page(
    status, client_for, alice, environment, registration
):
    KeyRegistration.objects.filter(pk=registration.pk).update(status=status)
    client = client_for(alice)
    page = _page(client, environment)

    data = client.get(
        reverse("registration_status", args=[environment.public_id, registration.public_id])
    ).json()

    assert (data["status"], data["status_display"]) == (status, LABELS[status])
    live = data["status_html"] + data["panel_html"]
    shown, text, _count = _badges(live, registration.version, default=registration.version)
    assert shown == _badges(page, registration.version)[0] == {(status, LABELS[status])}
    assert NOTES[status] in text
    assert all(note not in text for other, note in NOTES.items() if other != status)
