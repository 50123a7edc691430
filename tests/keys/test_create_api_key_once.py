""""Create API key" submitted twice from one form (a double-click, two tabs on one form, a
resent POST) creates one API key: the form's one-time token is claimed by the key it
creates (``ApiKey.form_token``, unique per environment). Before, six parallel posts made
six live keys, of which the page showed one secret. A new form (the page loaded again)
still creates another key."""

from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection
from django.test import Client

from keys.models import ApiKey, AuditEvent
from keys.services import api_keys
from tests.support import at_once

KEY_RE = re.compile(r"byok_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")
TOKEN_RE = re.compile(r'name="form_token" value="([0-9a-f-]{36})"')
ALREADY = "This form was already submitted; the API key “billing” (byok_{prefix}_…) was created once."


def new_url(environment) -> str:
    return f"/environments/{environment.public_id}/api-keys/new/"


def detail_url(environment) -> str:
    return f"/environments/{environment.public_id}/"


def form_token(page) -> str:
    tokens = TOKEN_RE.findall(page.content.decode())
    assert len(tokens) == 1, tokens
    return tokens[0]


def _created(environment) -> int:
    return AuditEvent.objects.filter(environment=environment, action=AuditEvent.Action.API_KEY_CREATED).count()


def test_it_creates_one_key_when_the_same_form_is_submitted_twice(client_for, environment, alice):
    client = client_for(alice)
    form = {"name": "billing", "form_token": form_token(client.get(new_url(environment)))}

    first = client.post(new_url(environment), form)
    second = client.post(new_url(environment), form, follow=True)

    assert first.status_code == 200 and len(set(KEY_RE.findall(first.content.decode()))) == 1
    row = environment.api_keys.get()
    assert second.redirect_chain == [(detail_url(environment) + "#api-keys", 302)]
    page = second.content.decode()
    assert ALREADY.format(prefix=row.prefix) in page
    assert "revoke that key and create another" in page
    assert not KEY_RE.search(page)
    assert _created(environment) == 1


def test_it_creates_another_key_from_a_new_form(client_for, environment, alice):
    """Each page shown has its own token: the environment page's form and the New API key
    page's, and the same page loaded again."""
    client = client_for(alice)
    tokens = [
        form_token(client.get(detail_url(environment))),
        form_token(client.get(detail_url(environment))),
        form_token(client.get(new_url(environment))),
    ]

    answers = [client.post(new_url(environment), {"name": "billing", "form_token": token}) for token in tokens]

    assert len(set(tokens)) == 3
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert environment.api_keys.count() == 3 and _created(environment) == 3


@pytest.mark.parametrize("token", [None, "", "not-a-uuid"])
def test_it_refuses_a_form_without_its_token_and_creates_nothing(client_for, environment, alice, token):
    form = {"name": "billing"} | ({} if token is None else {"form_token": token})

    response = client_for(alice).post(new_url(environment), form)

    assert response.status_code == 200
    assert "This form is out of date: reload the page and submit it again." in response.content.decode()
    assert not environment.api_keys.exists()


def test_it_lets_the_same_token_serve_once_per_environment(environment, environment_b, alice, charlie):
    """The token is claimed within its environment: another environment's key with the
    same token is neither refused nor named."""
    token = uuid.uuid4()
    api_keys.api_key_create(environment=environment, name="billing", actor=alice, form_token=token)

    row, _ = api_keys.api_key_create(environment=environment_b, name="other", actor=charlie, form_token=token)

    assert row.environment == environment_b
    with pytest.raises(api_keys.ApiKeyFormAlreadySubmitted, match="“billing”"):
        api_keys.api_key_create(environment=environment, name="again", actor=alice, form_token=token)


@pytest.mark.django_db(transaction=True)
def test_six_parallel_submissions_of_one_form_create_one_key_on_postgresql(environment, alice):
    """GIVEN the New API key form shown once WHEN six requests post it at the same moment
    (separate clients, separate database connections) THEN one key is created and shown,
    the five others land on the environment page saying so."""
    if connection.vendor != "postgresql":
        pytest.skip("concurrent inserts need PostgreSQL")
    clients = [Client() for _ in range(6)]
    for client in clients:
        client.force_login(alice)
    form = {"name": "billing", "form_token": form_token(clients[0].get(new_url(environment)))}

    def click(client: Client) -> tuple[int, str]:
        response = client.post(new_url(environment), form)
        return response.status_code, response.content.decode()

    answers = at_once([lambda client=client: click(client) for client in clients])

    statuses = sorted(status for status, _ in answers)
    assert statuses == [200, 302, 302, 302, 302, 302], statuses
    shown = {key for status, page in answers if status == 200 for key in KEY_RE.findall(page)}
    assert len(shown) == 1
    assert ApiKey.objects.filter(environment=environment).count() == 1 and _created(environment) == 1
    row = ApiKey.objects.get(environment=environment)
    assert shown.pop().startswith(f"byok_{row.prefix}_")


@pytest.mark.django_db(transaction=True)
def test_six_parallel_service_calls_with_one_token_create_one_key_on_postgresql(environment, alice):
    if connection.vendor != "postgresql":
        pytest.skip("concurrent inserts need PostgreSQL")
    token = uuid.uuid4()
    def create() -> str:
        api_keys.api_key_create(environment=environment, name="billing", actor=alice, form_token=token)
        return "created"

    outcomes = at_once([create] * 6, refused=(api_keys.ApiKeyFormAlreadySubmitted,))

    assert outcomes.count("created") == 1, outcomes
    assert all(o.startswith("This form was already submitted") for o in outcomes if o != "created"), outcomes
    assert ApiKey.objects.filter(environment=environment).count() == 1 and _created(environment) == 1
