"""CSRF is enforced on every state-changing form of the portal (and the admin).

A client that enforces CSRF checks (as browsers effectively do) POSTs to every portal URL
found by the URL walk of tests/test_url_matrix.py without a token: each answer is Django's
CSRF failure (403) and nothing changes. The data-plane API is the only CSRF-exempt part,
by design: it authenticates with a Bearer API key, never a cookie.
"""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import resolve, reverse

from tests.test_url_matrix import ROUTES, client_as, no_validation_jobs, rule_for, snapshot, world  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db

# The portal's URLconf; the API's (API_URLCONF) is served by a handler with no middleware,
# CSRF's included (portal/handlers.py).
PORTAL_ROUTES = [route for route in ROUTES if route.urlconf is None]


def _is_csrf_failure(response) -> bool:
    return response.status_code == 403 and b"CSRF" in response.content


def test_it_exempts_only_the_data_plane_api_from_csrf(world):
    exempt = set()
    for route in ROUTES:
        match = resolve(world.path(route), route.urlconf)
        if getattr(match.func, "csrf_exempt", False):
            exempt.add(route.key)
    # "": the API URLconf's unnamed catch-all for look-alikes of /api/ paths.
    assert exempt == {
        "api_records_batch", "api_records_find", "api_record", "api_unknown", "api_openapi", "api_outside_v1", "",
    }


@pytest.mark.parametrize("role", ["alice", "anonymous"])
@pytest.mark.parametrize("route", PORTAL_ROUTES, ids=lambda route: route.key)
def test_it_refuses_a_post_without_a_csrf_token(world, route, role):
    client = client_as(world, role, enforce_csrf_checks=True)
    before = snapshot()

    response = client.post(world.path(route), rule_for(route.key).post_data(world))

    assert _is_csrf_failure(response), f"POST {route.key} as {role}: {response.status_code}"
    assert snapshot() == before


def test_it_accepts_the_same_post_with_the_token(world):
    """The 403s above are CSRF's doing: with the cookie's token the owner's POST works."""
    client = client_as(world, "alice", enforce_csrf_checks=True)
    page = client.get(reverse("api_key_new", args=[world.environment.public_id]))
    token = page.context["csrf_token"]

    response = client.post(
        reverse("api_key_new", args=[world.environment.public_id]),
        {"name": "with token", "csrfmiddlewaretoken": token, "form_token": str(uuid.uuid4())},
    )

    assert response.status_code == 200
    assert world.environment.api_keys.filter(name="with token").exists()


def test_it_refuses_a_token_from_another_session(world):
    other = Client(enforce_csrf_checks=True)
    other.get(reverse("login"))
    stolen = other.cookies["csrftoken"].value
    client = client_as(world, "alice", enforce_csrf_checks=True)

    response = client.post(
        reverse("api_key_new", args=[world.environment.public_id]), {"name": "stolen", "csrfmiddlewaretoken": stolen}
    )

    assert _is_csrf_failure(response)
    assert not world.environment.api_keys.filter(name="stolen").exists()


def test_it_keeps_the_csrf_cookie_away_from_scripts(client):
    client.get(reverse("login"))
    # The token reaches forms through the template context ({% csrf_token %}), not the cookie.
    assert client.cookies["csrftoken"]["httponly"]
