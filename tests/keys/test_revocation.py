"""Revocation: the platform stops serving a revoked BYOK key within the published bound
(DATA_KEY_CACHE_TTL_SECONDS + REVALIDATION_INTERVAL_SECONDS with a worker, two cache
lifetimes without one), says why, serves again once
access returns; and the owner's revocation drill, which measures it.

moto in-process does not refuse Decrypt for a disabled key, so the revocation is played by
patching ``keys.kms.decrypt`` with the adapter's own ``KmsPermanentError`` (as
test_records.py does); time is moved with the data-key cache's injectable clock.
"""

from __future__ import annotations

import json
import re
import shlex
from html import unescape

import pytest
from django.urls import reverse

from keys import cache, kms, parsers
from keys.services import lifecycle
from keys.models import AuditEvent, KeyRegistration, Record
from keys.services.registrations import registration_create
from keys.services.validation import registration_validate
from tests.factories import error_of, refuse
from tests.support import FakeClock

Status = KeyRegistration.Status


@pytest.fixture
def clock(settings) -> FakeClock:
    """The process-wide data-key cache, on a clock the test moves."""
    fake = FakeClock()
    cache.set_cache(cache.DataKeyCache(clock=fake))
    return fake


# ---------------------------------------------------------------------------
# The published bound
# ---------------------------------------------------------------------------


@pytest.fixture
def with_worker(settings):
    """A broker, so a worker and beat run (production); the tests' default is eager mode,
    the embedded default of ``make run``, where no worker and no beat run."""
    settings.CELERY_TASK_ALWAYS_EAGER = False


def test_it_computes_the_bound_from_the_cache_ttl_and_the_revalidation_interval(settings, with_worker):
    settings.DATA_KEY_CACHE_TTL_SECONDS = 300
    settings.REVALIDATION_INTERVAL_SECONDS = 900

    bound = lifecycle.revocation_bound()

    assert (bound.seconds, bound.recheck_seconds, bound.periodic) == (1200, 900, True)
    assert bound.text == "After you revoke access, this platform stops decrypting your data within 1200 seconds (20 min)."


def test_it_computes_the_bound_from_two_cache_lifetimes_without_a_worker(settings):
    """No beat runs, so no periodic re-validation: what catches a revocation AWS had not
    applied at the first lookup after the TTL is the lookup one more cache lifetime later."""
    settings.DATA_KEY_CACHE_TTL_SECONDS = 300
    settings.REVALIDATION_INTERVAL_SECONDS = 900
    assert settings.CELERY_TASK_ALWAYS_EAGER

    bound = lifecycle.revocation_bound()

    assert (bound.seconds, bound.recheck_seconds, bound.periodic) == (600, 300, False)
    assert bound.text == "After you revoke access, this platform stops decrypting your data within 600 seconds (10 min)."


def _bound_parts(html: str) -> str:
    match = re.search(r"<p class=\"muted\" data-bound-parts=\"[^\"]*\">(.*?)</p>", html, re.S)
    assert match, "no explanation of the bound on the page"
    return " ".join(match.group(1).split())


def test_it_states_the_bound_in_plain_words_on_the_environment_page(client_for, bob, environment, settings, with_worker):
    settings.DATA_KEY_CACHE_TTL_SECONDS = 60
    settings.REVALIDATION_INTERVAL_SECONDS = 240

    html = client_for(bob).get(reverse("environment_detail", args=[environment.public_id])).content.decode()

    assert "this platform stops decrypting your data within 300 seconds (5 min)" in html
    parts = _bound_parts(html)
    assert re.search(r"for at most 60 s.*the periodic validation, every 240 s, notices it", parts)
    assert 'data-bound-parts="periodic"' in html and "without a background worker" not in parts


def test_it_states_a_bound_true_without_a_worker_on_the_environment_page(client_for, bob, environment, settings):
    """``make run``: no worker, no beat. The page does not promise a periodic validation
    that nothing runs; it says the data plane asks KMS again one cache lifetime later, and
    that "Validate again" asks at once."""
    settings.DATA_KEY_CACHE_TTL_SECONDS = 60
    settings.REVALIDATION_INTERVAL_SECONDS = 240

    html = client_for(bob).get(reverse("environment_detail", args=[environment.public_id])).content.decode()

    assert "this platform stops decrypting your data within 120 seconds (2 min)" in html
    parts = _bound_parts(html)
    assert "periodic validation, every" not in html and "240 s" not in html
    assert re.search(r"for at most 60 s.*the next use after another 60 s asks KMS again", parts)
    assert "runs without a background worker, so nothing validates your key periodically" in parts
    assert "“Validate again”" in parts and "“Check now”" in parts


def test_it_stops_within_the_bound_without_a_worker_when_aws_applies_the_revocation_late(
    api, environment, byok, clock, monkeypatch, settings  # noqa: F811
):
    """GIVEN no worker (nothing validates periodically) and a revocation AWS has not applied
    yet when the cached key expires WHEN the data plane looks the key up again THEN it is
    served once more, and the use one cache lifetime later answers 503: within the bound
    the page states for this mode (two cache lifetimes)."""
    ttl = settings.DATA_KEY_CACHE_TTL_SECONDS
    assert api.put("r1", {"body": 1}).status_code == 200  # revoked now; AWS still decrypts

    clock.now += ttl
    assert api.get("r1").status_code == 200  # the lookup after the TTL: AWS not there yet
    monkeypatch.setattr(kms, "decrypt", refuse(kms.Reason.DISABLED))  # AWS applied it
    clock.now += ttl - 1
    assert api.get("r1").status_code == 200  # cached once more
    clock.now += 1
    response = api.get("r1")

    assert response.status_code == 503 and error_of(response)["reason"] == "disabled"
    assert 2 * ttl == lifecycle.revocation_bound().seconds


# ---------------------------------------------------------------------------
# Stopping within the bound, and serving again
# ---------------------------------------------------------------------------


def test_it_answers_503_with_the_reason_once_the_cached_key_expires_after_a_revocation(
    api, environment, byok, clock, monkeypatch, settings  # noqa: F811
):
    """GIVEN an active BYOK version whose data key is cached
    WHEN the customer disables the KMS key
    THEN reads keep working while the cached key lives (at most the TTL), and the first read
    after it answers 503 key_unavailable "disabled" and marks the version inaccessible:
    within the published bound."""
    assert api.put("r1", {"body": {"n": 1}}).status_code == 200
    monkeypatch.setattr(kms, "decrypt", refuse(kms.Reason.DISABLED))

    clock.now += settings.DATA_KEY_CACHE_TTL_SECONDS - 1
    assert api.get("r1").status_code == 200  # the cached key still serves

    clock.now += 1
    response = api.get("r1")

    assert response.status_code == 503
    assert error_of(response)["code"] == "key_unavailable" and error_of(response)["reason"] == "disabled"
    assert "Retry-After" not in response
    assert settings.DATA_KEY_CACHE_TTL_SECONDS <= lifecycle.revocation_bound().seconds
    byok.registration.refresh_from_db()
    assert (byok.registration.status, byok.registration.inaccessible_reason) == (Status.INACCESSIBLE, "disabled")


def test_it_stops_at_once_when_a_validation_notices_the_revocation(api, environment, byok, clock, monkeypatch):  # noqa: F811
    """A validation (periodic or "Check now") that finds the key disabled bumps the
    generation: every process drops its cached key on its next request, before the TTL."""
    api.put("r1", {"body": 1})
    monkeypatch.setattr(kms, "decrypt", refuse(kms.Reason.DISABLED))

    registration_validate(registration_id=byok.registration.pk, trigger="periodic")

    response = api.get("r1")
    assert response.status_code == 503 and error_of(response)["reason"] == "disabled"


def test_it_refuses_writes_to_an_environment_whose_active_version_is_inaccessible(
    api, environment, byok, clock, monkeypatch  # noqa: F811
):
    api.put("r1", {"body": 1})
    monkeypatch.setattr(kms, "decrypt", refuse(kms.Reason.ACCESS_DENIED))
    registration_validate(registration_id=byok.registration.pk, trigger="periodic")

    response = api.put("r2", {"body": 2})
    batch = api.post("batch", {"records": [{"record_key": "r3", "body": 3}]})

    assert response.status_code == 503 and error_of(response)["reason"] == "access_denied"
    assert batch.status_code == 503
    # Never written under another key: the platform-managed v1 (decrypt-only) is not used.
    assert list(Record.objects.values_list("record_key", "key_version")) == [("r1", 2)]


def test_it_serves_again_as_soon_as_a_validation_finds_access_restored(
    api, environment, byok, clock, monkeypatch, settings  # noqa: F811
):
    api.put("r1", {"body": {"n": 1}})
    with monkeypatch.context() as revoked:
        revoked.setattr(kms, "decrypt", refuse(kms.Reason.DISABLED))
        clock.now += settings.DATA_KEY_CACHE_TTL_SECONDS
        assert api.get("r1").status_code == 503
        registration_validate(registration_id=byok.registration.pk, trigger="periodic")  # still refused
        assert api.get("r1").status_code == 503

    registration_validate(registration_id=byok.registration.pk, trigger="periodic")

    byok.registration.refresh_from_db()
    assert byok.registration.status == Status.ACTIVE
    assert api.get("r1").json()["body"] == {"n": 1}
    assert api.put("r2", {"body": 2}).status_code == 200


# ---------------------------------------------------------------------------
# The revocation drill
# ---------------------------------------------------------------------------


def _drill(name: str, environment) -> str:
    return reverse(name, args=[environment.public_id])


def test_it_shows_the_owner_how_to_revoke_and_the_bound(client_for, alice, environment, byok):  # noqa: F811
    html = client_for(alice).get(_drill("revocation_drill", environment)).content.decode()

    assert f"aws kms disable-key --key-id {byok.kms_key_arn}" in html
    assert "aws iam delete-access-key" in html and "aws iam detach-user-policy" in html
    assert lifecycle.revocation_bound().text in html
    assert "Start watching" in html and "Check now" in html



ROLE_KEY_ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ROLE_ARN = "arn:aws:iam::111122223333:role/team/byok-portal-access"
PLATFORM = "arn:aws:iam::999988887777:role/byok-platform"


def _active_role_version(environment, actor) -> KeyRegistration:
    """Version 2 of ``environment``: a role-mode key version, active, its blob bound to the environment."""
    registration = registration_create(
        environment=environment, actor=actor, kms_key_arn=ROLE_KEY_ARN, region="eu-west-1",
        account_id="111122223333", encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 40,
        encryption_context=parsers.environment_encryption_context(environment.public_id), role_arn=ROLE_ARN,
    )
    environment.key_registrations.filter(version=1).update(status=Status.DECRYPT_ONLY)
    KeyRegistration.objects.filter(pk=registration.pk).update(status=Status.ACTIVE)
    return registration


def _command(html: str, element_id: str) -> list[str]:
    """The words of the command in ``<pre id=element_id>``, as a shell would split them."""
    match = re.search(rf'<pre id="{element_id}">(.*?)</pre>', html, re.S)
    assert match, f"no #{element_id} on the page"
    return shlex.split(unescape(match.group(1)))


def test_it_gives_the_role_mode_drill_commands_with_the_real_values_and_the_bound_with_the_session(
    client_for, alice, environment, settings
):
    """GIVEN the active version reaches KMS through a role WHEN the owner opens the drill
    THEN it gives the role's commands (delete and put back the permissions policy, deny and
    restore the trust), with the role name, the policy name and both policies inline, no
    access-key command and no placeholder, and a bound that includes the session lifetime."""
    settings.PLATFORM_AWS_PRINCIPAL_ARN = PLATFORM
    settings.DATA_KEY_CACHE_TTL_SECONDS, settings.REVALIDATION_INTERVAL_SECONDS = 300, 900
    settings.STS_SESSION_DURATION_SECONDS = 3600
    _active_role_version(environment, alice)
    context = parsers.environment_encryption_context(environment.public_id)

    html = client_for(alice).get(_drill("revocation_drill", environment)).content.decode()

    assert _command(html, "drill-delete-policy") == [
        "aws", "iam", "delete-role-policy", "--role-name", "byok-portal-access", "--policy-name", "byok-portal-kms"]
    put = _command(html, "drill-put-policy")
    assert put[:7] == ["aws", "iam", "put-role-policy", "--role-name", "byok-portal-access", "--policy-name",
                       "byok-portal-kms"]
    assert put[7] == "--policy-document"
    assert json.loads(put[8]) == json.loads(parsers.iam_policy_json(kms_key_arn=ROLE_KEY_ARN, encryption_context=context))
    assert _command(html, "drill-list-policies") == [
        "aws", "iam", "list-role-policies", "--role-name", "byok-portal-access"]
    distrust, trust = _command(html, "drill-distrust"), _command(html, "drill-trust")
    assert distrust[:5] == trust[:5] == ["aws", "iam", "update-assume-role-policy", "--role-name", "byok-portal-access"]
    assert json.loads(distrust[6])["Statement"] == [
        {"Effect": "Deny", "Principal": {"AWS": PLATFORM}, "Action": "sts:AssumeRole"}]
    assert json.loads(trust[6]) == json.loads(parsers.trust_policy_json(
        platform_principal_arn=PLATFORM, external_id=environment.aws_external_id))
    assert _command(html, "drill-disable")[:3] == ["aws", "kms", "disable-key"]
    for element_id in ("drill-delete-policy", "drill-put-policy", "drill-list-policies", "drill-distrust", "drill-trust"):
        assert f'data-copy-target="{element_id}"' in html
    assert "PRINTED_ABOVE" not in html and "delete-access-key" not in html and "detach-user-policy" not in html
    assert lifecycle.revocation_bound(role_mode=True).seconds == 600 + 3600  # no worker: two cache lifetimes
    assert lifecycle.revocation_bound(role_mode=True).text in html
    assert "a role session lasts\n  3600 s" in html
    assert "the periodic validation runs" not in html
    assert "runs without a background worker, so no periodic validation runs" in html


def test_it_states_the_drill_bound_with_the_periodic_validation_when_a_worker_runs(
    client_for, alice, environment, byok, settings, with_worker  # noqa: F811
):
    settings.DATA_KEY_CACHE_TTL_SECONDS, settings.REVALIDATION_INTERVAL_SECONDS = 300, 900

    html = client_for(alice).get(_drill("revocation_drill", environment)).content.decode()

    assert lifecycle.revocation_bound().seconds == 1200
    assert lifecycle.revocation_bound().text in html
    parts = _bound_parts(html)
    assert "the periodic validation runs every 900 s" in parts and "without a background worker" not in parts


def test_it_leaves_out_the_trust_commands_when_no_platform_principal_is_configured(client_for, alice, environment, settings):
    settings.PLATFORM_AWS_PRINCIPAL_ARN = PLATFORM
    _active_role_version(environment, alice)
    settings.PLATFORM_AWS_PRINCIPAL_ARN = ""

    html = client_for(alice).get(_drill("revocation_drill", environment)).content.decode()

    assert _command(html, "drill-delete-policy")[2] == "delete-role-policy"
    assert 'id="drill-distrust"' not in html and 'id="drill-trust"' not in html
    assert '"AWS": ""' not in html and "&quot;AWS&quot;:&quot;&quot;" not in html


def test_it_measures_how_long_the_platform_took_to_stop_and_records_it(
    client_for, alice, environment, byok, clock, monkeypatch, django_capture_on_commit_callbacks  # noqa: F811
):
    """GIVEN the owner started watching an environment served by a BYOK key
    WHEN the customer disables the key and the owner presses "Check now"
    THEN the status endpoint, probing through the data plane, reports serving until the
    validation notices, then "stopped" with the measured time; the result is an audit event,
    recorded once."""
    client = client_for(alice)
    client.post(_drill("revocation_drill_start", environment))
    status = client.get(_drill("revocation_drill_status", environment)).json()
    assert (status["serving"], status["watching"], status["version"]) == (True, True, 2)

    monkeypatch.setattr(kms, "decrypt", refuse(kms.Reason.DISABLED))
    assert client.get(_drill("revocation_drill_status", environment)).json()["serving"] is True  # cached key

    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(_drill("revocation_drill_check", environment)).status_code == 302
    status = client.get(_drill("revocation_drill_status", environment)).json()

    assert (status["serving"], status["watching"], status["reason"]) == (False, False, "disabled")
    assert 0 <= status["measured_seconds"] <= status["bound_seconds"]
    result = AuditEvent.objects.get(environment=environment, after__drill="stopped")
    assert result.after["measured_seconds"] == status["measured_seconds"]
    assert result.after["reason"] == "disabled" and "stopped serving" in result.message
    client.get(_drill("revocation_drill_status", environment))
    assert AuditEvent.objects.filter(environment=environment, after__drill="stopped").count() == 1
    html = client.get(_drill("revocation_drill", environment)).content.decode()
    assert f"stopped serving {status['measured_seconds']} s after watching started" in html


def test_it_measures_the_stop_found_by_the_data_plane_after_the_cache_ttl(
    client_for, alice, environment, byok, clock, monkeypatch, settings  # noqa: F811
):
    client = client_for(alice)
    client.post(_drill("revocation_drill_start", environment))
    monkeypatch.setattr(kms, "decrypt", refuse(kms.Reason.ACCESS_DENIED))

    clock.now += settings.DATA_KEY_CACHE_TTL_SECONDS
    status = client.get(_drill("revocation_drill_status", environment)).json()

    assert (status["serving"], status["reason"]) == (False, "access_denied")
    byok.registration.refresh_from_db()
    assert byok.registration.status == Status.INACCESSIBLE
    event = AuditEvent.objects.get(environment=environment, after__drill="stopped")
    assert event.after["bound_seconds"] == lifecycle.revocation_bound().seconds


def test_it_does_not_count_a_kms_outage_as_a_revocation(client_for, alice, environment, byok, clock, monkeypatch, settings):  # noqa: F811
    from tests.factories import throttle

    client = client_for(alice)
    client.post(_drill("revocation_drill_start", environment))
    monkeypatch.setattr(kms, "decrypt", throttle)
    clock.now += settings.DATA_KEY_CACHE_TTL_SECONDS

    status = client.get(_drill("revocation_drill_status", environment)).json()

    assert (status["serving"], status["transient"], status["watching"]) == (False, True, True)
    assert not AuditEvent.objects.filter(after__drill="stopped").exists()


def test_it_refuses_a_drill_for_a_platform_managed_key(client_for, alice, environment):
    client = client_for(alice)

    response = client.post(_drill("revocation_drill_start", environment), follow=True)

    assert "nothing to revoke in AWS" in response.content.decode()
    assert not AuditEvent.objects.filter(after__drill__isnull=False).exists()
    response = client.post(_drill("revocation_drill_check", environment), follow=True)
    assert "platform-managed" in response.content.decode()


def _inaccessible_page(client, environment, registration) -> str:
    KeyRegistration.objects.filter(pk=registration.pk).update(
        status=Status.INACCESSIBLE, restore_status=Status.ACTIVE, inaccessible_reason="disabled"
    )
    html = client.get(reverse("environment_detail", args=[environment.public_id])).content.decode()
    return " ".join(html.split())


def test_it_says_validate_again_brings_an_inaccessible_version_back_without_a_worker(
    client_for, alice, environment, byok  # noqa: F811
):
    html = _inaccessible_page(client_for(alice), environment, byok.registration)

    assert "KMS refused access:" in html
    assert ("Once fixed, use “Validate again”: the version serves again when a validation passes, and this portal "
            "runs without a background worker, so none runs by itself.") in html
    assert "serves again at the next validation" not in html


def test_it_says_the_next_validation_brings_an_inaccessible_version_back_with_a_worker(
    client_for, alice, environment, byok, with_worker  # noqa: F811
):
    html = _inaccessible_page(client_for(alice), environment, byok.registration)

    assert "Once fixed, the version serves again at the next validation." in html
    assert "without a background worker" not in html
