"""Lifecycle pages and actions (keys/lifecycle_views.py): each is tried by the owner
(alice), an admin (carol), a viewer (bob, 403), an outsider (charlie, 404) and with the
wrong HTTP method (405); then what each does and shows."""

from __future__ import annotations

import datetime
import html as html_lib
import re
from unittest import mock

import pytest
from django.urls import reverse

from keys import cache, queue, sts, tasks
from keys.services import lifecycle, reencryption
from keys.models import AuditEvent, KeyRegistration, Record, ReencryptionJob
from keys.services.registrations import (
    TransitionError,
    registration_create,
    registration_replace_credentials,
    registration_replace_role_arn,
)
from tests.factories import (
    ARN,
    SECRET,
    counts,
    keys,
    new_managed_version,
    put_records,
    run,
)

Status = KeyRegistration.Status
JobStatus = ReencryptionJob.Status
NEW_ACCESS_KEY_ID = "AKIAIOSFODNN7NEWKEY1"
NEW_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYNEWSECRET1"


@pytest.fixture(autouse=True)
def no_jobs(monkeypatch) -> dict[str, list]:
    """Record the jobs queued instead of running them (the views are tested here)."""
    queued: dict[str, list] = {"validation": [], "reencryption": []}
    monkeypatch.setattr(tasks.validate_registration, "delay", lambda *args: queued["validation"].append(args))
    monkeypatch.setattr(queue, "enqueue_reencryption", lambda job_id, **kw: queued["reencryption"].append(job_id))
    return queued


@pytest.fixture
def byok_registration(environment, alice) -> KeyRegistration:
    registration = registration_create(
        environment=environment, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 40, encryption_context={},
        access_key_id="AKIAIOSFODNN7EXAMPLE", secret_access_key=SECRET,
    )
    KeyRegistration.objects.filter(pk=registration.pk).update(status=Status.DECRYPT_ONLY)
    registration.refresh_from_db()
    return registration


ROLE_ARN = "arn:aws:iam::111122223333:role/byok-portal-access"
NEW_ROLE_ARN = "arn:aws:iam::111122223333:role/team/byok-portal-access-2"


@pytest.fixture
def role_registration(environment, alice) -> KeyRegistration:
    """GIVEN a role-mode BYOK version in service (decrypt-only)."""
    registration = registration_create(
        environment=environment, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 40, encryption_context={}, role_arn=ROLE_ARN,
    )
    KeyRegistration.objects.filter(pk=registration.pk).update(status=Status.DECRYPT_ONLY)
    registration.refresh_from_db()
    return registration


@pytest.fixture
def rotated(environment, alice):
    """GIVEN 12 records under v1 and v2 active."""
    put_records(environment, keys(12))
    return new_managed_version(environment, alice)


def _env_url(name: str, environment) -> str:
    return reverse(name, args=[environment.public_id])


def _version_url(name: str, registration: KeyRegistration) -> str:
    return reverse(name, args=[registration.environment.public_id, registration.public_id])


# ---------------------------------------------------------------------------
# The role matrix of every new URL
# ---------------------------------------------------------------------------

# (url name, per environment or per version, method that works, who may: "change" = owner
# and admin, "owner" = owners only, "look" = every member)
ACTIONS = [
    ("managed_version_new", "env", "post", "change"),
    ("registration_credentials", "version", "get", "change"),
    ("registration_credentials", "version", "post", "change"),
    ("registration_role_arn", "version", "get", "change"),
    ("registration_role_arn", "version", "post", "change"),
    ("registration_retire", "version", "get", "owner"),  # the confirmation step
    ("registration_retire", "version", "post", "owner"),
    ("reencryption_start", "env", "post", "change"),
    ("reencryption_pause", "env", "post", "change"),
    ("reencryption_resume", "env", "post", "change"),
    ("reencryption_cancel", "env", "get", "change"),  # the confirmation step
    ("reencryption_cancel", "env", "post", "change"),
    ("reencryption_progress", "env", "get", "look"),
    ("revocation_drill", "env", "get", "owner"),
    ("revocation_drill_start", "env", "post", "owner"),
    ("revocation_drill_check", "env", "post", "owner"),
    ("revocation_drill_status", "env", "get", "owner"),
]
ALLOWED = {"change": {"alice", "carol"}, "owner": {"alice"}, "look": {"alice", "carol", "bob"}}


def _url(name: str, scope: str, environment, registration) -> str:
    return _env_url(name, environment) if scope == "env" else _version_url(name, registration)


@pytest.mark.parametrize(("name", "scope", "method", "who"), ACTIONS, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("role", ["alice", "carol", "bob", "charlie"])
def test_it_answers_each_role(name, scope, method, who, role, request, client_for, environment, byok_registration):
    user = request.getfixturevalue(role)
    url = _url(name, scope, environment, byok_registration)
    before = (KeyRegistration.objects.count(), ReencryptionJob.objects.count(), AuditEvent.objects.count())

    response = getattr(client_for(user), method)(url)

    if role == "charlie":
        assert response.status_code == 404
    elif role in ALLOWED[who]:
        assert response.status_code in (200, 302)
    else:
        assert response.status_code == 403
    if role not in ALLOWED[who]:
        assert (KeyRegistration.objects.count(), ReencryptionJob.objects.count(), AuditEvent.objects.count()) == before


@pytest.mark.parametrize(("name", "scope", "method", "who"), ACTIONS, ids=lambda v: v if isinstance(v, str) else "")
def test_it_answers_405_to_the_wrong_method(name, scope, method, who, client_for, alice, environment, byok_registration):
    url = _url(name, scope, environment, byok_registration)
    client = client_for(alice)

    if name in ("registration_credentials", "registration_role_arn", "registration_retire", "reencryption_cancel"):
        assert client.put(url).status_code == 405
    else:
        wrong = client.get if method == "post" else client.post
        assert wrong(url).status_code == 405


def test_it_sends_anonymous_users_to_sign_in(client, environment, byok_registration):
    for name, scope, method, _ in ACTIONS:
        response = getattr(client, method)(_url(name, scope, environment, byok_registration))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), name


def test_it_answers_404_for_a_version_of_another_environment(client_for, charlie, environment_b, byok_registration):
    url = reverse("registration_retire", args=[environment_b.public_id, byok_registration.public_id])
    assert client_for(charlie).post(url).status_code == 404


# ---------------------------------------------------------------------------
# The lifecycle card on the environment page
# ---------------------------------------------------------------------------


def _page(client, environment) -> str:
    response = client.get(_env_url("environment_detail", environment))
    assert response.status_code == 200
    return response.content.decode()


def test_it_shows_owners_and_admins_the_actions_and_viewers_none(client_for, alice, carol, bob, environment, rotated):
    owner, admin, viewer = (_page(client_for(u), environment) for u in (alice, carol, bob))

    for html in (owner, admin):
        assert "New platform-managed key version" in html and "Start re-encryption" in html
    assert "Revocation drill" in owner and "Revocation drill" not in admin
    assert "New platform-managed key version" not in viewer and "Start re-encryption" not in viewer
    assert 'id="key-lifecycle"' in viewer and 'data-records-version="1"' in viewer
    assert "js/progress.js" in viewer and "<script>" not in viewer


def test_it_shows_the_retire_button_to_owners_for_a_drained_decrypt_only_version(client_for, alice, carol, environment, rotated):
    assert "Retire version 1" not in _page(client_for(alice), environment)  # 12 records left
    run(reencryption.reencryption_start(environment=environment, actor=alice))

    owner, admin = _page(client_for(alice), environment), _page(client_for(carol), environment)

    assert 'data-retire="1"' in owner
    assert 'data-retire="1"' not in admin and "an owner can retire it" in admin
    assert "Retire version 2" not in owner  # the active version


def test_it_links_byok_versions_to_replace_credentials(client_for, carol, environment, byok_registration):
    html = _page(client_for(carol), environment)

    assert _version_url("registration_credentials", byok_registration) in html


# ---------------------------------------------------------------------------
# New platform-managed key version
# ---------------------------------------------------------------------------


def test_it_creates_a_valid_platform_managed_version_to_activate(client_for, carol, environment):
    response = client_for(carol).post(_env_url("managed_version_new", environment), follow=True)

    v2 = environment.key_registrations.get(version=2)
    assert (v2.kind, v2.status, v2.created_by) == ("managed", Status.VALID, carol)
    assert "Activate it to use it for new records" in response.content.decode()
    assert f'href="{_version_url("registration_activate", v2)}"' in response.content.decode()
    assert environment.key_registrations.get(version=1).status == Status.ACTIVE


# ---------------------------------------------------------------------------
# Replace credentials
# ---------------------------------------------------------------------------


def test_it_replaces_credentials_in_place_and_queues_a_validation(
    client_for, carol, environment, byok_registration, no_jobs, django_capture_on_commit_callbacks
):
    versions = environment.key_registrations.count()

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(carol).post(
            _version_url("registration_credentials", byok_registration),
            {"access_key_id": NEW_ACCESS_KEY_ID, "secret_access_key": NEW_SECRET},
        )

    assert response.status_code == 302
    byok_registration.refresh_from_db()
    assert byok_registration.access_key_id_last4 == NEW_ACCESS_KEY_ID[-4:]
    assert byok_registration.credentials_version == 2 and byok_registration.status == Status.DECRYPT_ONLY
    assert environment.key_registrations.count() == versions
    assert no_jobs["validation"] == [(byok_registration.pk, "credentials")]


def test_it_shows_form_errors_and_never_echoes_the_secret(client_for, carol, environment, byok_registration):
    response = client_for(carol).post(
        _version_url("registration_credentials", byok_registration),
        {"access_key_id": "not-an-access-key", "secret_access_key": NEW_SECRET},
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert NEW_SECRET not in html
    assert "enter the secret access key again" in html
    byok_registration.refresh_from_db()
    assert byok_registration.credentials_version == 1


def test_it_refuses_the_same_access_key_as_another_version(client_for, carol, environment, byok_registration, alice):
    other = registration_create(
        environment=environment, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 40, encryption_context={},
        access_key_id=NEW_ACCESS_KEY_ID, secret_access_key=SECRET,
    )

    response = client_for(carol).post(
        _version_url("registration_credentials", byok_registration),
        {"access_key_id": NEW_ACCESS_KEY_ID, "secret_access_key": NEW_SECRET},
    )

    assert response.status_code == 200 and "already registered" in response.content.decode()
    assert other.pk != byok_registration.pk


def test_it_has_no_credentials_to_replace_for_a_platform_managed_version(client_for, carol, environment):
    v1 = environment.key_registrations.get(version=1)

    response = client_for(carol).post(
        _version_url("registration_credentials", v1), {"access_key_id": NEW_ACCESS_KEY_ID, "secret_access_key": NEW_SECRET}
    )

    assert response.status_code == 200 and "no IAM credentials to replace" in response.content.decode()
    v1.refresh_from_db()
    assert v1.access_key_id_last4 == ""


# ---------------------------------------------------------------------------
# Replace role ARN (role mode)
# ---------------------------------------------------------------------------


def _state(registration: KeyRegistration) -> tuple:
    registration.refresh_from_db()
    events = AuditEvent.objects.filter(registration=registration).count()
    return (registration.role_arn, registration.generation, registration.credentials_version, registration.status, events)


def test_it_offers_replace_role_arn_for_a_role_version_and_replace_credentials_only_for_an_access_key_one(
    client_for, carol, environment, role_registration, byok_registration
):
    html = _page(client_for(carol), environment)

    assert _version_url("registration_role_arn", role_registration) in html
    assert _version_url("registration_credentials", role_registration) not in html
    assert _version_url("registration_credentials", byok_registration) in html
    assert _version_url("registration_role_arn", byok_registration) not in html


def _version_row(html: str, version: int) -> str:
    return html.split(f'<tr id="version-{version}">')[1].split("</tr>")[0]


def test_it_shows_a_role_versions_role_arn_and_an_access_key_versions_masked_key_in_the_access_column(
    client_for, bob, environment, role_registration, byok_registration
):
    html = _page(client_for(bob), environment)

    assert '<th scope="col">Access</th>' in html
    role_row, key_row = _version_row(html, role_registration.version), _version_row(html, byok_registration.version)
    assert f'<code class="arn" data-role-arn>{ROLE_ARN}</code>' in role_row
    assert "••••" not in role_row
    assert byok_registration.masked_access_key_id in key_row and "data-role-arn" not in key_row


def test_it_replaces_the_role_arn_in_place_audits_it_and_queues_a_validation(
    client_for, alice, environment, role_registration, no_jobs, django_capture_on_commit_callbacks
):
    versions, generation = environment.key_registrations.count(), role_registration.generation

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(_version_url("registration_role_arn", role_registration), {"role_arn": NEW_ROLE_ARN})

    assert response.status_code == 302 and response["Location"].endswith(f"#version-{role_registration.version}")
    role_registration.refresh_from_db()
    assert (role_registration.role_arn, role_registration.status) == (NEW_ROLE_ARN, Status.DECRYPT_ONLY)
    assert role_registration.generation == generation + 1 and role_registration.credentials_version == 2
    assert environment.key_registrations.count() == versions
    event = AuditEvent.objects.filter(registration=role_registration).latest("id")
    assert (event.action, event.actor) == ("credentials_replaced", alice)
    assert (event.before, event.after) == ({"role_arn": ROLE_ARN}, {"role_arn": NEW_ROLE_ARN, "credentials_version": 2})
    assert no_jobs["validation"] == [(role_registration.pk, "credentials")]
    html = _page(client_for(alice), environment)
    assert "Role ARN of version 2 replaced" in html and "IAM credentials of version 2" not in html


def _messages(html: str) -> list[tuple[str, bool]]:
    """The page's messages as (text, dropped when its validation ends): a message carrying
    ``data-validation-banner`` is removed by static/js/status.js once that validation is over,
    at once if it already was when the page loaded (eager tasks: ``make run``, the tests)."""
    return [
        (html_lib.unescape(text), "data-validation-banner" in attrs)
        for attrs, text in re.findall(r'<li class="msg[^"]*"([^>]*)>(.*?)</li>', html, flags=re.S)
    ]


@pytest.mark.parametrize(("fixture", "url_name", "form", "done", "started"), [
    ("role_registration", "registration_role_arn", {"role_arn": NEW_ROLE_ARN},
     "Role ARN of key version 2 replaced; nothing was re-encrypted.",
     "Validation of key version 2 with the new role has started."),
    ("byok_registration", "registration_credentials", {"access_key_id": NEW_ACCESS_KEY_ID, "secret_access_key": NEW_SECRET},
     "IAM credentials of key version 2 replaced; nothing was re-encrypted.",
     "Validation of key version 2 with the new credentials has started."),
])
def test_it_says_the_replacement_was_made_in_a_message_that_outlives_its_validation(
    fixture, url_name, form, done, started, request, client_for, alice
):
    """GIVEN a version in service WHEN its role ARN (or IAM credentials) is replaced and the
    browser follows the redirect THEN the page says it was replaced in a message the page
    keeps, and that validation has started in a separate banner that goes when it ends (it
    went with the whole news when both were one banner: the validation had ended, run eagerly,
    before the page loaded)."""
    registration = request.getfixturevalue(fixture)

    response = client_for(alice).post(_version_url(url_name, registration), form, follow=True)

    assert response.status_code == 200
    assert response.redirect_chain[-1][0].endswith(f"#version-{registration.version}")
    assert _messages(response.content.decode()) == [(done, False), (started, True)]


def test_it_drops_the_cached_data_key_and_the_old_roles_session_when_the_role_arn_is_replaced(
    alice, environment, role_registration, django_capture_on_commit_callbacks
):
    """GIVEN this process holds the version's plaintext data key and temporary credentials of
    its role WHEN the role ARN is replaced THEN both are dropped at once (not at the TTL)."""
    sessions = sts.RoleSessions(assume=lambda **kw: sts.TemporaryCredentials(
        "ASIAOLDROLE000000000", "old-secret", "old-token", expiration=_in_an_hour()))
    sessions.credentials(role_arn=ROLE_ARN, external_id=environment.aws_external_id, session_name="s", region="eu-west-1")
    with cache.get_cache().data_key_for(role_registration, loader=lambda registration: bytearray(32)):
        pass
    assert role_registration.pk in cache.get_cache() and len(sessions) == 1

    with mock.patch.object(sts, "role_sessions", sessions), django_capture_on_commit_callbacks(execute=True):
        registration_replace_role_arn(registration=role_registration, actor=alice, role_arn=NEW_ROLE_ARN)

    assert role_registration.pk not in cache.get_cache()
    assert sessions.expiration(role_arn=ROLE_ARN, external_id=environment.aws_external_id) is None


def _held_sessions(environment, *role_arns: str) -> sts.RoleSessions:
    """GIVEN this process holds temporary credentials of each role (for the environment's
    external ID)."""
    sessions = sts.RoleSessions(assume=lambda **kw: sts.TemporaryCredentials(
        "ASIAOLDROLE000000000", "old-secret", "old-token", expiration=_in_an_hour()))
    for role_arn in role_arns:
        sessions.credentials(role_arn=role_arn, external_id=environment.aws_external_id, session_name="s", region="eu-west-1")
    return sessions


def test_it_drops_the_roles_session_at_once_when_a_role_version_is_retired(alice, environment, role_registration):
    sessions = _held_sessions(environment, ROLE_ARN)

    with mock.patch.object(sts, "role_sessions", sessions):
        lifecycle.registration_retire(registration=role_registration, actor=alice)

    assert sessions.expiration(role_arn=ROLE_ARN, external_id=environment.aws_external_id) is None


def test_it_drops_the_roles_session_at_once_when_a_role_version_is_discarded(alice, environment, role_registration):
    KeyRegistration.objects.filter(pk=role_registration.pk).update(status=Status.FAILED)
    role_registration.refresh_from_db()
    sessions = _held_sessions(environment, ROLE_ARN, NEW_ROLE_ARN)

    with mock.patch.object(sts, "role_sessions", sessions):
        lifecycle.registration_discard(registration=role_registration, actor=alice)

    assert sessions.expiration(role_arn=ROLE_ARN, external_id=environment.aws_external_id) is None
    assert sessions.expiration(role_arn=NEW_ROLE_ARN, external_id=environment.aws_external_id) is not None


def test_it_keeps_the_roles_session_while_another_live_version_of_the_environment_uses_the_role(
    alice, environment, role_registration
):
    """GIVEN v2 and v3 reach KMS through the same role (a new data key, same role) WHEN v2
    is retired THEN the role's session stays: v3 still uses it."""
    registration_create(
        environment=environment, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 41, encryption_context={}, role_arn=ROLE_ARN,
    )
    sessions = _held_sessions(environment, ROLE_ARN)

    with mock.patch.object(sts, "role_sessions", sessions):
        lifecycle.registration_retire(registration=role_registration, actor=alice)

    assert sessions.expiration(role_arn=ROLE_ARN, external_id=environment.aws_external_id) is not None


BAD_ROLE_ARNS = {
    "not an ARN": ("byok/portal", "This is not an ARN"),
    "an IAM user": ("arn:aws:iam::111122223333:user/byok", "IAM user ARN"),
    "an assumed-role session": ("arn:aws:sts::111122223333:assumed-role/byok/session", "assumed-role"),
    "another partition than the key's": ("arn:aws-cn:iam::111122223333:role/byok", "partition"),
    "no account": ("arn:aws:iam:::role/byok", "12 digits"),
    "empty": ("", "Enter the role ARN"),
    "the registered one": (ROLE_ARN, "already registered"),
}


@pytest.mark.parametrize("case", BAD_ROLE_ARNS)
def test_it_refuses_a_bad_role_arn_and_changes_nothing(case, client_for, carol, role_registration, no_jobs):
    value, message = BAD_ROLE_ARNS[case]
    before = _state(role_registration)

    response = client_for(carol).post(_version_url("registration_role_arn", role_registration), {"role_arn": value})

    assert response.status_code == 200
    assert message in response.content.decode()
    assert _state(role_registration) == before and no_jobs["validation"] == []


def test_it_says_a_user_arn_needs_a_new_key_version_not_a_choice_of_access_mode(client_for, carol, role_registration, no_jobs):
    """The registration form's words ('choose "IAM user access key"') would be wrong here:
    this form has no access mode, and switching modes is a rotation to a new key version."""
    before = _state(role_registration)

    response = client_for(carol).post(
        _version_url("registration_role_arn", role_registration), {"role_arn": "arn:aws:iam::111122223333:user/byok"}
    )

    html = html_lib.unescape(response.content.decode())
    assert response.status_code == 200
    assert ("This is an IAM user ARN. A role ARN is needed here" in html
            and "To use an IAM user access key instead, register a new key version with that access mode" in html)
    assert "choose" not in html.lower()
    assert _state(role_registration) == before and no_jobs["validation"] == []


@pytest.mark.parametrize(("who", "status"), [("bob", 403), ("charlie", 404)])
def test_it_lets_neither_a_viewer_nor_an_outsider_replace_the_role_arn(
    who, status, request, client_for, role_registration, no_jobs
):
    before = _state(role_registration)
    client = client_for(request.getfixturevalue(who))

    for method in ("get", "post"):
        response = getattr(client, method)(_version_url("registration_role_arn", role_registration), {"role_arn": NEW_ROLE_ARN})
        assert response.status_code == status

    assert _state(role_registration) == before and no_jobs["validation"] == []


def test_it_answers_405_to_a_put_on_replace_role_arn_and_changes_nothing(client_for, alice, role_registration):
    before = _state(role_registration)

    response = client_for(alice).put(_version_url("registration_role_arn", role_registration), {"role_arn": NEW_ROLE_ARN})

    assert response.status_code == 405 and _state(role_registration) == before


def test_it_replaces_no_credentials_of_a_role_version_and_no_role_arn_of_an_access_key_version(
    client_for, carol, role_registration, byok_registration, no_jobs
):
    role_before, key_before = _state(role_registration), _state(byok_registration)

    credentials = client_for(carol).post(
        _version_url("registration_credentials", role_registration),
        {"access_key_id": NEW_ACCESS_KEY_ID, "secret_access_key": NEW_SECRET},
    )
    role = client_for(carol).post(_version_url("registration_role_arn", byok_registration), {"role_arn": NEW_ROLE_ARN})

    assert credentials.status_code == 200 and "no IAM credentials to replace" in credentials.content.decode()
    assert role.status_code == 200 and "no role ARN to replace" in role.content.decode()
    assert _state(role_registration) == role_before and _state(byok_registration) == key_before
    assert role_registration.sealed_secret_access_key == "" and no_jobs["validation"] == []


def test_the_services_refuse_to_cross_the_access_modes(alice, role_registration, byok_registration):
    with pytest.raises(TransitionError, match="replace its role ARN instead"):
        registration_replace_credentials(
            registration=role_registration, actor=alice, access_key_id=NEW_ACCESS_KEY_ID, secret_access_key=NEW_SECRET
        )
    with pytest.raises(TransitionError, match="IAM role has a role ARN to replace"):
        registration_replace_role_arn(registration=byok_registration, actor=alice, role_arn=NEW_ROLE_ARN)


def test_it_confirms_retiring_a_role_version_without_speaking_of_iam_credentials(client_for, alice, role_registration):
    html = client_for(alice).get(_version_url("registration_retire", role_registration)).content.decode()

    assert "Destroy the encrypted data key of key version 2" in html
    assert "IAM credentials" not in html and "access key" not in html
    assert "delete the IAM role there too" in html


def _in_an_hour() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)


# ---------------------------------------------------------------------------
# Re-encryption actions and progress
# ---------------------------------------------------------------------------


def test_it_starts_pauses_resumes_and_cancels_from_the_page(client_for, carol, environment, rotated, no_jobs, django_capture_on_commit_callbacks):
    client = client_for(carol)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(_env_url("reencryption_start", environment))
    job = ReencryptionJob.objects.get()
    assert (job.status, job.records_total, job.created_by) == (JobStatus.QUEUED, 12, carol)
    assert no_jobs["reencryption"] == [job.pk]
    assert "Pause" in _page(client, environment)

    client.post(_env_url("reencryption_pause", environment))
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED
    assert "Resume" in _page(client, environment)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(_env_url("reencryption_resume", environment))
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and no_jobs["reencryption"] == [job.pk, job.pk]

    client.post(_env_url("reencryption_cancel", environment))
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert counts(environment) == {1: 12}
    actors = set(AuditEvent.objects.filter(action="reencryption").values_list("actor__username", flat=True))
    assert actors == {"carol"}


def test_it_says_why_nothing_can_be_started(client_for, carol, environment):
    response = client_for(carol).post(_env_url("reencryption_start", environment), follow=True)

    assert "already under the active version v1" in response.content.decode()
    assert not ReencryptionJob.objects.exists()


def test_it_says_there_is_no_job_to_pause(client_for, carol, environment):
    response = client_for(carol).post(_env_url("reencryption_pause", environment), follow=True)

    assert "no re-encryption to change" in response.content.decode()


def test_it_answers_the_live_progress_as_json_with_the_cards_html(client_for, alice, bob, environment, rotated):
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    client = client_for(bob)
    answers: list[dict] = []

    run(job, batch_size=5, between_batches=lambda: answers.append(client.get(_env_url("reencryption_progress", environment)).json()))

    data = answers[0]
    assert data["job"]["status"] == "running" and data["running"] is True
    assert (data["job"]["records_moved"], data["remaining"], data["percent"]) == (5, 7, 41)
    assert {v["version"]: v["records"] for v in data["versions"]} == {2: 5, 1: 7}
    assert 'data-progress-bar max="100" value="41"' in data["html"]
    assert "Pause" not in data["html"]  # bob is a viewer
    assert answers[-1]["percent"] == 100 and answers[-1]["remaining"] == 0


def test_it_offers_resume_for_a_job_whose_worker_stopped(
    client_for, carol, environment, rotated, no_jobs, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from keys.clock import now

    job = reencryption.reencryption_start(environment=environment, actor=carol)
    ReencryptionJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, runner="dead", heartbeat_at=now() - timedelta(hours=1))
    client = client_for(carol)
    assert "its worker may have stopped" in _page(client, environment)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(_env_url("reencryption_resume", environment))

    assert no_jobs["reencryption"] == [job.pk]
    assert reencryption.reencryption_run(job_id=job.pk, slice_seconds=None, throttle_seconds=0) == "finished"
    assert counts(environment) == {2: 12}


# ---------------------------------------------------------------------------
# Retirement
# ---------------------------------------------------------------------------


def test_it_retires_a_drained_version_for_the_owner(client_for, alice, environment, rotated):
    run(reencryption.reencryption_start(environment=environment, actor=alice))
    v1 = environment.key_registrations.get(version=1)

    response = client_for(alice).post(_version_url("registration_retire", v1), follow=True)

    v1.refresh_from_db()
    assert v1.status == Status.RETIRED and v1.sealed_data_key == ""
    assert "credentials and data key were destroyed" in response.content.decode()


def test_it_refuses_retirement_with_records_left_and_says_why(client_for, alice, environment, rotated):
    v1 = environment.key_registrations.get(version=1)

    response = client_for(alice).post(_version_url("registration_retire", v1), follow=True)

    assert "still encrypts 12 record(s)" in response.content.decode()
    assert KeyRegistration.objects.get(pk=v1.pk).status == Status.DECRYPT_ONLY
    assert Record.objects.filter(registration=v1).count() == 12


# ---------------------------------------------------------------------------
# Django admin
# ---------------------------------------------------------------------------


def test_it_shows_reencryption_jobs_read_only_in_the_admin(client, admin_user, environment, alice, rotated):
    job = reencryption.reencryption_start(environment=environment, actor=alice)
    run(job)
    client.force_login(admin_user)

    listing = client.get(reverse("admin:keys_reencryptionjob_changelist"))
    page = client.get(reverse("admin:keys_reencryptionjob_change", args=[job.pk]))

    assert listing.status_code == 200 and page.status_code == 200
    html = page.content.decode()
    assert str(job.public_id) in html and 'name="_save"' not in html
    assert client.get(reverse("admin:keys_reencryptionjob_add")).status_code == 403
    assert client.post(reverse("admin:keys_reencryptionjob_delete", args=[job.pk]), {"post": "yes"}).status_code == 403
    assert ReencryptionJob.objects.filter(pk=job.pk).exists()
