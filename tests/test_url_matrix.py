"""The role matrix, proven on every URL of the project (README, "Roles").

Every URL pattern is found by walking ``get_resolver().url_patterns`` (recursively) of both
URLconfs, the portal's (``ROOT_URLCONF``) and the lean /api/ handler's (``API_URLCONF``), its
path converters are filled with real objects of org A (environment public id, key
registration id, API key prefix, record key, organization id), and it is requested with
GET and with POST by each of the cast: alice (owner of org A), carol (admin), bob
(viewer), charlie (outsider: owner of org B) and an anonymous client.

Each answer is compared with ``EXPECTED``, an explicit table keyed by URL name: a URL
without an entry fails ``test_it_has_an_expectation_for_every_url``, so whoever adds a URL
declares its rule here. Besides the answer, a role that may not change org A (bob,
charlie, anonymous) must leave the database as it was: row counts of every table and the
state of every key registration, API key and organization (sessions and sign-in logs
excepted). POSTs carry a payload that *would* succeed for an owner, so "unchanged" means
refused, not merely invalid.

Django admin (namespace ``admin``) is one rule, ``ADMIN_RULE``: AdminSite guards all its
views, so every admin URL must send a non-staff user to the admin sign-in page (its own
sign-in page excepted). The data-plane API authenticates with Bearer API keys, never the
session: 401 without one (405 for a method the endpoint does not have).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.urls import URLResolver, get_resolver, resolve, reverse

from environments.models import Organization
from keys import tasks
from keys.models import ApiKey, KeyRegistration
from keys.services import api_keys, records
from keys.services.registrations import registration_create
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

ROLES = ("alice", "carol", "bob", "charlie", "anonymous")
# Roles that may change org A; every other role must leave the database as it was.
CHANGERS = frozenset({"alice", "carol"})

# Expected answers: an HTTP status, or one of these redirect classes.
LOGIN = "login"  # 302 to the portal's sign-in page, with ?next=
ADMIN_LOGIN = "admin-login"  # 302 to the admin's sign-in page (or, for admin logout, its index)
HOME = "home"  # 302 to the home page
TWO_FACTOR = "two-factor"  # 302 to the account's two-factor page
SUCCESS = "success"  # 302 anywhere but a sign-in page: the action was done
SIGNED_OUT = "signed-out"  # 302 to the sign-in page, no ?next=


@dataclass(frozen=True)
class Rule:
    """Expected answer per role, for GET and POST; ``post_data`` builds a POST body that
    would succeed for an owner (from the ``World`` objects)."""

    get: dict[str, Any]
    post: dict[str, Any]
    post_data: Callable[[World], dict] = field(default=lambda world: {})
    doc: str = ""


def roles(owner: Any, admin: Any = None, viewer: Any = None, outsider: Any = None, anonymous: Any = LOGIN) -> dict:
    """Expected answers by role; admin/viewer/outsider default to the owner's."""
    admin = owner if admin is None else admin
    viewer = admin if viewer is None else viewer
    outsider = viewer if outsider is None else outsider
    return {"alice": owner, "carol": admin, "bob": viewer, "charlie": outsider, "anonymous": anonymous}


def everyone(answer: Any) -> dict:
    return roles(answer, anonymous=answer)


# Org A pages anyone in org A may look at; outsiders get 404.
def _look(post=405) -> Rule:
    return Rule(get=roles(200, outsider=404), post=roles(post))


# Org A pages that change something: owner/admin only; viewers 403; outsiders 404.
def _change_form(ok_post: Any, post_data: Callable, doc: str = "") -> Rule:
    return Rule(
        get=roles(200, viewer=403, outsider=404),
        post=roles(ok_post, viewer=403, outsider=404),
        post_data=post_data,
        doc=doc,
    )


# Org A POST-only actions: 405 to a GET before anything is looked up.
def _action(post_data: Callable = lambda world: {}) -> Rule:
    return Rule(get=roles(405), post=roles(SUCCESS, viewer=403, outsider=404), post_data=post_data)


API_NO_KEY = everyone(401)
API_WRONG_METHOD = everyone(405)


def _registration_form(world: World) -> dict:
    return {
        "encrypted_data_key": "AQIDAGJsb2JibG9iYmxvYmJsb2JibG9iYmxvYmJsb2JibG9iYmxvYmJsb2JibG9iYmxvYmJsb2JibG9iYmxvYmJsb2JibG9iYmxvYmJsb2JibG9iYmxvYmJsb2JibG9iYmxvYmJsb2JibG9iYmxvYmJsb2JibG9iYmxvYmJsb2I=",
        "access_key_id": "AKIAIOSFODNN7MATRIX1",
        "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYMATRIXKEY1",
        "kms_key_arn": "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "region": "eu-west-1",
        "encryption_context": "",
    }


def _edit_form(world: World) -> dict:
    return {**_registration_form(world), "encrypted_data_key": "", "access_key_id": "", "secret_access_key": "",
            "encryption_context": "env=matrix"}


def _new_password(world: World) -> dict:
    new = "a quite different passphrase 42"
    return {"old_password": PASSWORD, "new_password1": new, "new_password2": new}


EXPECTED: dict[str, Rule] = {
    # Project level
    "healthz": Rule(get=everyone(200), post=everyone(405), doc="public health probe"),
    "favicon": Rule(get=everyone(200), post=everyone(405), doc="public icon, so no page logs a 404 for it"),
    "metrics": Rule(get=everyone(404), post=everyone(404), doc="404 while METRICS_TOKEN is unset; then its Bearer token only"),
    "login": Rule(
        get=roles(HOME, anonymous=200),
        post=roles(HOME, anonymous=200),
        post_data=lambda world: {"username": "alice", "password": "wrong password"},
        doc="signed-in users are sent home; a wrong password is an error on the page",
    ),
    "logout": Rule(get=everyone(405), post=everyone(SIGNED_OUT), doc="POST only; ends the session"),
    # Data plane: Bearer API keys only, a session opens nothing.
    "api_records_batch": Rule(get=API_WRONG_METHOD, post=API_NO_KEY),
    "api_records_find": Rule(get=API_WRONG_METHOD, post=API_NO_KEY),
    "api_record": Rule(get=API_NO_KEY, post=API_WRONG_METHOD),
    "api_unknown": Rule(get=everyone(404), post=everyone(404), doc="JSON 404 for any other /api/v1/ path"),
    "api_outside_v1": Rule(get=everyone(404), post=everyone(404), doc="JSON 404 for any other /api/ path"),
    "": Rule(get=everyone(404), post=everyone(404), doc="JSON 404 for a look-alike of an /api/ path (/./api/…, //api/…, /API/…)"),
    "api_openapi": Rule(get=everyone(200), post=everyone(405), doc="public OpenAPI document of the data plane"),
    # Environments and organizations
    "home": Rule(get=roles(200), post=roles(405)),
    "environment_new": Rule(
        # charlie may create environments, but only in his own organization: org A is not
        # among the form's choices, so his POST for org A is an invalid form (200).
        get=roles(200, viewer=403, outsider=200),
        post=roles(SUCCESS, viewer=403, outsider=200),
        post_data=lambda world: {"organization": world.org_a.pk, "name": "matrix-new"},
    ),
    "environment_detail": _look(),
    "organization_new": Rule(
        get=roles(HOME), post=roles(HOME), post_data=lambda world: {"name": "Matrix Org"},
        doc="only for a user in no organization yet; members are sent home",
    ),
    "organization_settings": Rule(
        get=roles(200, admin=403, viewer=403, outsider=404),
        post=roles(SUCCESS, admin=403, viewer=403, outsider=404),
        doc="owners only",
    ),
    # Keys: registration
    "registration_new": _change_form(SUCCESS, _registration_form),
    "registration_guide": Rule(get=roles(200, outsider=404), post=roles(405)),
    "registration_status": _look(),
    "registration_validate": _action(),
    "registration_activate": _change_form(SUCCESS, lambda world: {}, doc="GET: the confirmation step"),
    "registration_edit": _change_form(
        SUCCESS, lambda world: _edit_form(world), doc="a version that never served: the five items and the context"
    ),
    "registration_discard": _change_form(SUCCESS, lambda world: {}, doc="GET: the confirmation step"),
    # Keys: lifecycle (rotation, credentials, re-encryption, retirement, revocation drill)
    "managed_version_new": _action(),
    "registration_credentials": _change_form(
        SUCCESS,
        lambda world: {"access_key_id": "AKIAIOSFODNN7MATRIX2", "secret_access_key": "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"},
        doc="new IAM credentials for the same key version",
    ),
    "registration_role_arn": _change_form(
        200,
        lambda world: {"role_arn": "arn:aws:iam::111122223333:role/byok-matrix"},
        doc="a new role ARN for a role-mode version; the matrix's version has an access key, so the page says it "
        "has no role ARN to replace (tests/keys/test_lifecycle_views.py replaces one)",
    ),
    "registration_retire": Rule(
        get=roles(200, admin=403, outsider=404), post=roles(SUCCESS, admin=403, outsider=404),
        doc="owners only; GET: the confirmation step; refused with a message unless drained",
    ),
    "reencryption_start": _action(),
    "reencryption_pause": _action(),
    "reencryption_resume": _action(),
    "reencryption_cancel": _change_form(SUCCESS, lambda world: {}, doc="GET: the confirmation step"),
    "reencryption_progress": _look(),
    "revocation_drill": Rule(get=roles(200, admin=403, outsider=404), post=roles(405), doc="owners only"),
    "revocation_drill_start": Rule(get=roles(405), post=roles(SUCCESS, admin=403, outsider=404), doc="owners only"),
    "revocation_drill_check": Rule(get=roles(405), post=roles(SUCCESS, admin=403, outsider=404), doc="owners only"),
    "revocation_drill_status": Rule(get=roles(200, admin=403, outsider=404), post=roles(405), doc="owners only"),
    # Keys: API keys and "Try it"
    "api_key_new": _change_form(200, lambda world: {"name": "matrix", "form_token": str(uuid.uuid4())}, doc="the new key is shown once, not redirected"),
    "api_key_revoke": _change_form(SUCCESS, lambda world: {}, doc="GET: the confirmation step"),
    "try_it": _change_form(200, lambda world: {"record_key": "matrix-1", "body": '{"a": 1}'}),
    # The user's own account: every signed-in user, on their own account only.
    "two_factor": Rule(get=roles(200), post=roles(200), post_data=lambda world: {"code": "000000"}),
    "two_factor_verify": Rule(get=roles(TWO_FACTOR), post=roles(TWO_FACTOR), doc="no device yet: set one up"),
    "two_factor_qr": Rule(get=roles(200), post=roles(405)),
    "two_factor_recovery_codes": Rule(get=roles(405), post=roles(TWO_FACTOR), doc="no device yet: refused, sent to set one up"),
    "two_factor_remove": Rule(get=roles(405), post=roles(TWO_FACTOR), post_data=lambda world: {"code": "000000"}),
    "password_change": Rule(get=roles(200), post=roles(SUCCESS), post_data=_new_password),
}

# Every admin URL, for the non-staff cast: AdminSite.admin_view sends them to the admin's
# sign-in page; its own sign-in page answers (200), logout sends to the index.
ADMIN_RULE = Rule(get=everyone(ADMIN_LOGIN), post=everyone(ADMIN_LOGIN))
ADMIN_EXCEPTIONS = {
    "admin:login": Rule(get=everyone(200), post=everyone(200)),
}

# Unnamed patterns: a path that reaches each (checked to resolve to that very pattern).
# Unnamed route patterns ("<conv:name>") are filled in place; regular expressions need one.
UNNAMED_SAMPLES = {
    "admin:admin/(?P<url>.*)$": "/admin/no-such-admin-page/",
    # The API URLconf's catch-all: look-alikes of /api/ paths that portal.handlers.route sends there.
    "": "/./api/v1/environments/x/records/customer-1",
}


# ---------------------------------------------------------------------------
# Walking the resolver
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    key: str  # "name" or "namespace:name"; unnamed: "namespace:" + its full route
    route: str  # the full route from the root, e.g. "admin/keys/keyregistration/<path:object_id>/"
    named: bool
    converters: tuple[str, ...]
    urlconf: str | None = None  # None: ROOT_URLCONF


def walk(patterns=None, namespace: str = "", prefix: str = "", urlconf: str | None = None) -> list[Route]:
    routes = []
    for entry in get_resolver(urlconf).url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            inner = ":".join(n for n in (namespace, entry.namespace) if n)
            routes += walk(entry.url_patterns, inner, prefix + str(entry.pattern), urlconf)
        else:
            route = prefix + str(entry.pattern)
            name = entry.name or route
            key = f"{namespace}:{name}" if namespace else name
            routes.append(Route(key, route, bool(entry.name), tuple(entry.pattern.regex.groupindex), urlconf))
    return routes


ROUTES = walk() + walk(urlconf=settings.API_URLCONF)


def rule_for(key: str) -> Rule | None:
    if key in EXPECTED:
        return EXPECTED[key]
    if key in ADMIN_EXCEPTIONS:
        return ADMIN_EXCEPTIONS[key]
    if key.startswith("admin:"):
        return ADMIN_RULE
    return None


# ---------------------------------------------------------------------------
# The world: org A's objects, the cast, fills for path converters
# ---------------------------------------------------------------------------


@dataclass
class World:
    org_a: Organization
    environment: Any
    registration: KeyRegistration
    api_key: ApiKey
    users: dict[str, Any]

    def fills(self) -> dict[str, Any]:
        return {
            "environment_id": self.environment.public_id,
            "registration_id": self.registration.public_id,
            "prefix": self.api_key.prefix,
            "record_key": "customer-1",
            "organization_id": self.org_a.pk,
            # Admin: any object will do (non-staff never reach the view).
            "app_label": "keys",
            "object_id": str(self.registration.pk),
            "id": self.registration.pk,
            "pk": self.registration.pk,
            "content_type_id": ContentType.objects.get_for_model(KeyRegistration).pk,
            "url": "no-such-admin-page/",
        }

    def path(self, route: Route) -> str:
        if route.key in UNNAMED_SAMPLES:
            path = UNNAMED_SAMPLES[route.key]
            assert resolve(path, route.urlconf).route == route.route, f"{path} does not reach {route.key}"
            return path
        fills = self.fills()
        missing = [name for name in route.converters if name not in fills]
        assert not missing, f"{route.key}: add a fill for {missing} in World.fills()"
        if route.named:
            return reverse(route.key, route.urlconf, kwargs={name: fills[name] for name in route.converters})
        assert "(?P" not in route.route, f"{route.key}: add a sample path to UNNAMED_SAMPLES"
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(fills[m.group(1)]), route.route)
        assert resolve(path, route.urlconf).route == route.route, f"{path} does not reach {route.key}"
        return path


@pytest.fixture(autouse=True)
def no_validation_jobs(monkeypatch):
    """Registrations queue a KMS validation job: recorded, never run."""
    monkeypatch.setattr(tasks.validate_registration, "delay", lambda *args: None)


@pytest.fixture
def world(alice, carol, bob, charlie, org_a, environment, environment_b) -> World:
    from tests.factories import ARN, SECRET

    registration = registration_create(
        environment=environment, actor=alice, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
        encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 40, encryption_context={},
        access_key_id="AKIAIOSFODNN7EXAMPLE", secret_access_key=SECRET,
    )
    # Valid: "Activate" by an owner would really change it, so a refusal is visible.
    KeyRegistration.objects.filter(pk=registration.pk).update(status=KeyRegistration.Status.VALID)
    registration.refresh_from_db()
    api_key, _ = api_keys.api_key_create(environment=environment, name="matrix", actor=alice)
    records.record_put(environment=environment, record_key="customer-1", body={"n": 1})
    users = {"alice": alice, "carol": carol, "bob": bob, "charlie": charlie}
    return World(org_a, environment, registration, api_key, users)


def client_as(world: World, role: str, **kwargs) -> Client:
    client = Client(**kwargs)
    if role != "anonymous":
        client.force_login(world.users[role])
    return client


# Tables whose rows a refused request may still add: sessions and sign-in bookkeeping.
UNCOUNTED_TABLES = {"django_session", "axes_accessattempt", "axes_accesslog", "axes_accessfailurelog"}


def snapshot() -> dict[str, Any]:
    """Row counts of every table, and the state of what org A's admins change."""
    state: dict[str, Any] = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            if table not in UNCOUNTED_TABLES:
                cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")
                state[table] = cursor.fetchone()[0]
    state["registrations"] = sorted(KeyRegistration.objects.values_list("public_id", "status", "generation"))
    state["api_keys"] = sorted(ApiKey.objects.values_list("prefix", "revoked_at"))
    state["organizations"] = sorted(Organization.objects.values_list("pk", "require_two_factor"))
    return state


def check(response, expected: Any, where: str) -> None:
    status, location = response.status_code, response.get("Location", "")
    if expected == LOGIN:
        assert status == 302 and location.startswith(reverse("login") + "?next="), f"{where}: {status} {location}"
    elif expected == ADMIN_LOGIN:
        targets = (reverse("admin:login") + "?next=", reverse("admin:index"))
        assert status == 302 and location.startswith(targets), f"{where}: {status} {location}"
    elif expected == HOME:
        assert status == 302 and location == reverse("home"), f"{where}: {status} {location}"
    elif expected == TWO_FACTOR:
        assert status == 302 and location.startswith(reverse("two_factor")), f"{where}: {status} {location}"
    elif expected == SIGNED_OUT:
        assert status == 302 and location == reverse("login"), f"{where}: {status} {location}"
    elif expected == SUCCESS:
        sign_in = (reverse("login"), reverse("admin:login"))
        assert status == 302 and not location.startswith(sign_in), f"{where}: {status} {location}"
    else:
        assert status == expected, f"{where}: expected {expected}, got {status} {location}"


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


def test_it_has_an_expectation_for_every_url():
    missing = [route.key for route in ROUTES if rule_for(route.key) is None]
    assert not missing, f"declare the access rule of these URLs in tests/test_url_matrix.py EXPECTED: {missing}"


def test_it_has_no_expectation_for_a_url_that_does_not_exist():
    keys = {route.key for route in ROUTES}
    stale = sorted((set(EXPECTED) | set(ADMIN_EXCEPTIONS) | set(UNNAMED_SAMPLES)) - keys)
    assert not stale, f"these URLs no longer exist; remove them from tests/test_url_matrix.py: {stale}"


def test_it_walks_the_whole_project():
    keys = {route.key for route in ROUTES}
    assert {"environment_detail", "registration_new", "api_record", "admin:index", "organization_settings"} <= keys
    assert sum(key.startswith("admin:") for key in keys) > 30


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.key)
def test_it_answers_each_role_as_the_matrix_says(world, route, role):
    rule = rule_for(route.key)
    if rule is None:
        pytest.fail(f"{route.key} has no expectation (see test_it_has_an_expectation_for_every_url)")
    path = world.path(route)
    client = client_as(world, role)
    before = snapshot()

    check(client.get(path), rule.get[role], f"GET {path} as {role}")
    check(client.post(path, rule.post_data(world)), rule.post[role], f"POST {path} as {role}")

    if role not in CHANGERS:
        assert snapshot() == before, f"{role} changed the database through {path}"


def test_it_lets_an_owner_really_change_state_through_the_matrix_payloads(world):
    """The POST payloads are not duds: an owner's requests change org A."""
    client = client_as(world, "alice")
    client.post(reverse("registration_edit", args=[world.environment.public_id, world.registration.public_id]),
                _edit_form(world))
    world.registration.refresh_from_db()
    assert world.registration.encryption_context == {"env": "matrix"}
    KeyRegistration.objects.filter(pk=world.registration.pk).update(status=KeyRegistration.Status.VALID)
    client.post(reverse("registration_activate", args=[world.environment.public_id, world.registration.public_id]))
    client.post(reverse("api_key_revoke", args=[world.environment.public_id, world.api_key.prefix]))
    client.post(reverse("environment_new"), EXPECTED["environment_new"].post_data(world))
    world.registration.refresh_from_db()
    world.api_key.refresh_from_db()
    assert world.registration.status == KeyRegistration.Status.ACTIVE
    assert world.api_key.revoked_at is not None
    assert world.org_a.environments.filter(name="matrix-new").exists()


def test_it_lets_an_owner_really_discard_through_the_matrix_payload(world):
    client_as(world, "alice").post(
        reverse("registration_discard", args=[world.environment.public_id, world.registration.public_id])
    )
    world.registration.refresh_from_db()
    assert world.registration.status == KeyRegistration.Status.DISCARDED


def test_it_refuses_an_outsider_posting_for_org_a_on_the_new_environment_page(world):
    response = client_as(world, "charlie").post(reverse("environment_new"), {"organization": world.org_a.pk, "name": "x"})
    assert response.status_code == 200
    assert not world.org_a.environments.filter(name="x").exists()
    assert "organization" in response.context["form"].errors


def test_it_lets_support_staff_into_the_admin_but_not_into_an_organizations_pages(world, django_user_model):
    from django.contrib.auth.models import Group

    support = django_user_model.objects.create_user("sam", "sam@example.org", PASSWORD, is_staff=True)
    support.groups.add(Group.objects.get(name="support"))
    client = Client()
    client.force_login(support)
    assert client.get(reverse("admin:index")).status_code == 200
    assert client.get(reverse("admin:keys_keyregistration_changelist")).status_code == 200
    assert client.get(reverse("environment_detail", args=[world.environment.public_id])).status_code == 404
