"""Tests of keys/api_keys.py (API key services) and keys/apikey_views.py (the API key pages
and the "Try it" page), tried by the whole cast: alice (owner), carol (admin), bob
(viewer), charlie (outsider)."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import timedelta

import pytest
import uuid

from keys import crypto
from keys.services import api_keys
from keys.models import ApiKey, AuditEvent, Record

KEY_RE = re.compile(r"byok_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


def new_url(environment) -> str:
    return f"/environments/{environment.public_id}/api-keys/new/"


def revoke_url(environment, api_key: ApiKey) -> str:
    return f"/environments/{environment.public_id}/api-keys/{api_key.prefix}/revoke/"


def try_it_url(environment) -> str:
    return f"/environments/{environment.public_id}/try-it/"


def detail_url(environment) -> str:
    return f"/environments/{environment.public_id}/"


# ---------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------


def test_it_creates_a_key_shown_once_and_stores_only_its_hash(environment, alice):
    row, api_key = api_keys.api_key_create(environment=environment, name="  billing  ", actor=alice)

    assert KEY_RE.fullmatch(api_key)
    assert api_key.startswith(f"byok_{row.prefix}_")
    row.refresh_from_db()
    assert row.name == "billing"
    assert row.key_hash == hashlib.sha256(api_key.encode()).hexdigest()
    assert api_key.split("_", 2)[2] not in str(list(ApiKey.objects.values()))
    event = AuditEvent.objects.get(action=AuditEvent.Action.API_KEY_CREATED)
    assert event.actor == alice and event.environment == environment
    assert api_key not in str(event.after) + event.message


def test_it_makes_a_different_key_every_time(environment, alice):
    keys = {api_keys.api_key_create(environment=environment, name=f"k{i}", actor=alice)[1] for i in range(20)}
    assert len(keys) == 20


def test_it_authenticates_a_key_and_refuses_a_wrong_one(environment, alice):
    row, api_key = api_keys.api_key_create(environment=environment, name="app", actor=alice)

    assert api_keys.api_key_authenticate(presented=api_key) == row
    for wrong in [api_key[:-1] + ("x" if api_key[-1] != "x" else "y"), api_key + "x", "byok_" + row.prefix, "", "x" * 500]:
        with pytest.raises(api_keys.InvalidApiKey):
            api_keys.api_key_authenticate(presented=wrong)


def test_it_revokes_a_key_at_once_and_audits_it(environment, alice):
    row, api_key = api_keys.api_key_create(environment=environment, name="app", actor=alice)

    api_keys.api_key_revoke(api_key=row, actor=alice)

    with pytest.raises(api_keys.RevokedApiKey):
        api_keys.api_key_authenticate(presented=api_key)
    with pytest.raises(api_keys.ApiKeyAlreadyRevoked):
        api_keys.api_key_revoke(api_key=row, actor=alice)
    event = AuditEvent.objects.get(action=AuditEvent.Action.API_KEY_REVOKED)
    assert event.before["status"] == "active" and event.after["status"] == "revoked"


def test_it_writes_last_used_at_at_most_once_a_minute(environment, alice, monkeypatch):
    row, api_key = api_keys.api_key_create(environment=environment, name="app", actor=alice)
    api_keys.api_key_authenticate(presented=api_key)
    first = ApiKey.objects.get(pk=row.pk).last_used_at

    api_keys.api_key_authenticate(presented=api_key)
    assert ApiKey.objects.get(pk=row.pk).last_used_at == first

    later = first + timedelta(seconds=61)
    monkeypatch.setattr(api_keys, "now", lambda: later)
    api_keys.api_key_authenticate(presented=api_key)
    assert ApiKey.objects.get(pk=row.pk).last_used_at == later


# ---------------------------------------------------------------------------
# The environment page's API keys section
# ---------------------------------------------------------------------------


def test_it_lists_api_keys_on_the_environment_page_without_their_secrets(client_for, environment, alice):
    _, api_key = api_keys.api_key_create(environment=environment, name="billing service", actor=alice)

    page = client_for(alice).get(detail_url(environment)).content.decode()

    assert "billing service" in page
    assert f"byok_{api_key.split('_')[1]}_…" in page
    assert api_key not in page
    assert "Create API key" in page and "Try it" in page and "Revoke" in page


def test_it_shows_a_viewer_the_api_keys_but_no_buttons(client_for, environment, alice, bob):
    api_keys.api_key_create(environment=environment, name="billing service", actor=alice)

    page = client_for(bob).get(detail_url(environment)).content.decode()

    assert "billing service" in page
    assert "Create API key" not in page and "Revoke" not in page and "Try it" not in page


# ---------------------------------------------------------------------------
# Creating and revoking through the pages
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_it_lets_an_owner_or_admin_create_a_key_and_shows_it_once(client_for, environment, request, who):
    user = request.getfixturevalue(who)
    client = client_for(user)

    response = client.post(new_url(environment), {"name": "billing", "form_token": str(uuid.uuid4())})

    assert response.status_code == 200
    shown = KEY_RE.findall(response.content.decode())
    assert len(set(shown)) == 1
    assert "no-store" in response["Cache-Control"]
    row = environment.api_keys.get()
    assert row.created_by == user
    assert shown[0] not in client.get(detail_url(environment)).content.decode()


def test_it_shows_the_new_key_form(client_for, environment, alice):
    response = client_for(alice).get(new_url(environment))

    assert response.status_code == 200 and b"Create API key" in response.content


def test_it_refuses_a_key_without_a_name(client_for, environment, alice):
    response = client_for(alice).post(new_url(environment), {"name": "  ", "form_token": str(uuid.uuid4())})

    assert response.status_code == 200
    assert not environment.api_keys.exists()
    assert b"required" in response.content


def test_it_lets_an_owner_revoke_a_key(client_for, environment, alice):
    row, api_key = api_keys.api_key_create(environment=environment, name="app", actor=alice)

    response = client_for(alice).post(revoke_url(environment, row))

    assert response.status_code == 302
    assert response["Location"].endswith(f"{detail_url(environment)}#api-keys")
    row.refresh_from_db()
    assert row.revoked_at is not None


def test_it_forbids_a_viewer_to_create_or_revoke_keys(client_for, environment, alice, bob):
    row, _ = api_keys.api_key_create(environment=environment, name="app", actor=alice)
    client = client_for(bob)

    assert client.get(new_url(environment)).status_code == 403
    assert client.post(new_url(environment), {"name": "mine"}).status_code == 403
    assert client.post(revoke_url(environment, row)).status_code == 403
    assert environment.api_keys.count() == 1
    row.refresh_from_db()
    assert row.revoked_at is None


def test_it_answers_404_to_an_outsider(client_for, environment, alice, charlie):
    row, _ = api_keys.api_key_create(environment=environment, name="app", actor=alice)
    client = client_for(charlie)

    assert client.get(new_url(environment)).status_code == 404
    assert client.post(new_url(environment), {"name": "mine"}).status_code == 404
    assert client.post(revoke_url(environment, row)).status_code == 404
    assert client.get(try_it_url(environment)).status_code == 404
    assert client.post(try_it_url(environment), {"record_key": "x", "body": "1"}).status_code == 404
    row.refresh_from_db()
    assert row.revoked_at is None


def test_it_answers_404_for_another_environments_key_on_the_revoke_url(client_for, environment, environment_b, alice, charlie):
    other, _ = api_keys.api_key_create(environment=environment_b, name="b", actor=charlie)

    assert client_for(alice).post(revoke_url(environment, other)).status_code == 404
    other.refresh_from_db()
    assert other.revoked_at is None


def test_it_sends_anonymous_users_to_sign_in(client, environment):
    assert client.get(new_url(environment)).status_code == 302
    assert client.get(try_it_url(environment)).status_code == 302


def test_it_answers_405_for_the_wrong_method(client_for, environment, alice):
    row, _ = api_keys.api_key_create(environment=environment, name="app", actor=alice)
    client = client_for(alice)

    assert client.put(revoke_url(environment, row)).status_code == 405
    assert client.delete(new_url(environment)).status_code == 405
    assert client.put(try_it_url(environment)).status_code == 405


# ---------------------------------------------------------------------------
# Try it
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_it_writes_through_the_data_plane_and_shows_ciphertext_and_read_back(client_for, environment, request, who):
    client = client_for(request.getfixturevalue(who))

    response = client.post(try_it_url(environment), {"record_key": "customer:7", "body": '{"name": "Grace Hopper"}'})

    assert response.status_code == 200
    page = response.content.decode()
    record = Record.objects.get(environment=environment, record_key="customer:7")
    assert base64.b64encode(bytes(record.ciphertext)).decode() in page
    assert "v1 (Platform-managed)" in page
    assert "&quot;name&quot;: &quot;Grace Hopper&quot;" in page
    assert crypto.envelope_key_version(bytes(record.ciphertext)) == 1


def test_it_shows_the_try_it_form(client_for, environment, alice):
    response = client_for(alice).get(try_it_url(environment))

    assert response.status_code == 200
    assert b"Encrypt, store and read back" in response.content
    assert b"<script>" not in response.content and b"onclick" not in response.content


@pytest.mark.parametrize(
    "data,message",
    [
        ({"record_key": "bad key", "body": "1"}, b"A record key is"),
        ({"record_key": "r1", "body": "{not json"}, b"not valid JSON"),
    ],
)
def test_it_refuses_bad_try_it_input_and_writes_nothing(client_for, environment, alice, data, message):
    response = client_for(alice).post(try_it_url(environment), data)

    assert response.status_code == 200
    assert message in response.content
    assert not Record.objects.exists()


def test_it_forbids_try_it_to_a_viewer(client_for, environment, bob):
    client = client_for(bob)

    assert client.get(try_it_url(environment)).status_code == 403
    assert client.post(try_it_url(environment), {"record_key": "r1", "body": "1"}).status_code == 403
    assert not Record.objects.exists()
