"""The shared cast (like healthchecks' hc/test.py): alice owns org A, bob is a viewer in
org A, carol is an admin in org A, charlie is an outsider who owns org B."""

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import django.test.client
import django.test.testcases
import hypothesis
import pytest
from django.contrib.auth import get_user_model
from moto import mock_aws

from environments.models import Membership, Organization
from environments.services import environment_create
from keys import aws_clients, cache, kms, sts
from keys.services import api_keys, records
from portal.handlers import ApiHandlerMixin, Dispatcher, route
from portal.logging import JsonFormatter
from tests.aws import isolate_aws_environment
from tests.factories import REGION, Byok, make_byok

PASSWORD = "correct horse battery staple 9"

# Hypothesis fails an example that takes over 200 ms by default, and calls it "Flaky" when
# the re-run is quicker: a loaded 2-core machine (or a first example that imports botocore's
# endpoint data or awscli) can be that slow. No deadline for any test, as several already
# said one by one (test_properties, test_crypto); every other setting stays the default.
hypothesis.settings.register_profile("byok-portal", deadline=None)
hypothesis.settings.load_profile("byok-portal")

# Django's default PBKDF2 hasher costs ~2 s a password on this machine; tests hash with MD5
# (healthchecks and HackSoft's example do the same). PBKDF2 stays listed so a hash made
# by a server subprocess with the production hashers still verifies.
FAST_PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.MD5PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]


class _ApiClientHandler(ApiHandlerMixin, django.test.client.ClientHandler):
    """The test client's handler for /api/: the lean handler's chain and URLconf."""


class RoutedClientHandler(django.test.client.ClientHandler):
    """The test client's handler, routed like ``portal.wsgi.application``: /api/ to the
    lean handler (no middleware), everything else to the portal's (every middleware)."""

    def __init__(self, enforce_csrf_checks: bool = True, *args, **kwargs) -> None:
        super().__init__(enforce_csrf_checks, *args, **kwargs)
        self.api = _ApiClientHandler(enforce_csrf_checks, *args, **kwargs)

    def __call__(self, environ):
        if route(environ) == "api":
            return self.api(environ)
        return super().__call__(environ)


@pytest.fixture(autouse=True, scope="session")
def production_dispatch_in_test_clients():
    """Every ``django.test.Client`` (the ``client`` fixture and ``Client()`` alike) goes
    through the production dispatch of ``portal.handlers``, not Django's single handler."""
    original = django.test.client.ClientHandler
    live_server_handler = django.test.testcases.WSGIHandler
    django.test.client.ClientHandler = RoutedClientHandler
    # live_server (the browser tests) serves portal.handlers' dispatch too.
    django.test.testcases.WSGIHandler = Dispatcher
    yield
    django.test.client.ClientHandler = original
    django.test.testcases.WSGIHandler = live_server_handler


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = FAST_PASSWORD_HASHERS


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts with an empty per-process data-key cache, KMS and STS client caches,
    held role sessions and the data plane's remembered active versions: registration ids are
    reused across tests, a plaintext data key must not leak from one test to another, and a
    client or a role session made under one test's settings (endpoint, stubs) must not serve
    the next."""
    _forget_per_process_state()
    yield
    _forget_per_process_state()


def _forget_per_process_state() -> None:
    cache.set_cache(None)
    kms.clear_clients()
    records.active_seen_clear()
    sts.clear_clients()
    sts.role_sessions.clear()


@pytest.fixture
def make_user(db):
    def make(username: str):
        return get_user_model().objects.create_user(username, f"{username}@example.org", PASSWORD)

    return make


@pytest.fixture
def org_a(db):
    return Organization.objects.create(name="Alpha Corp")


@pytest.fixture
def org_b(db):
    return Organization.objects.create(name="Beta Ltd")


@pytest.fixture
def alice(make_user, org_a):
    user = make_user("alice")
    Membership.objects.create(user=user, organization=org_a, role=Membership.Role.OWNER)
    return user


@pytest.fixture
def carol(make_user, org_a):
    user = make_user("carol")
    Membership.objects.create(user=user, organization=org_a, role=Membership.Role.ADMIN)
    return user


@pytest.fixture
def bob(make_user, org_a):
    user = make_user("bob")
    Membership.objects.create(user=user, organization=org_a, role=Membership.Role.VIEWER)
    return user


@pytest.fixture
def charlie(make_user, org_b):
    user = make_user("charlie")
    Membership.objects.create(user=user, organization=org_b, role=Membership.Role.OWNER)
    return user


@pytest.fixture
def environment(alice, org_a):
    return environment_create(organization=org_a, name="production", actor=alice)


@pytest.fixture
def environment_b(charlie, org_b):
    return environment_create(organization=org_b, name="b-production", actor=charlie)


@pytest.fixture
def client_for(client):
    """Log a user into the Django test client and return the client."""

    def login(user):
        client.force_login(user)
        return client

    return login


# The data plane: moto in-process, a BYOK key version, an API client


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, settings):
    """moto in-process, with fake, isolated AWS configuration; yields the customer's own
    KMS client (their admin side). AWS_KMS_ENDPOINT_URL is None until the test ends (the
    ``settings`` fixture restores it: set on django.conf.settings, it stayed for every
    later test of the process)."""
    isolate_aws_environment(monkeypatch, REGION)
    settings.AWS_KMS_ENDPOINT_URL = None
    with mock_aws():
        yield boto3.client("kms", region_name=REGION)


@pytest.fixture
def byok(environment, aws) -> Byok:
    return make_byok(environment, aws)


@pytest.fixture
def api_key(environment, alice) -> str:
    _, key = api_keys.api_key_create(environment=environment, name="app", actor=alice)
    return key


@pytest.fixture
def api(client, environment, api_key):
    """A small client for one environment's records, authenticated with its API key."""

    class Api:
        base = f"/api/v1/environments/{environment.public_id}/records"
        auth = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}

        def put(self, record_key, payload, **extra):
            data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
            return client.put(f"{self.base}/{record_key}", data, content_type="application/json", **(self.auth | extra))

        def get(self, record_key, **extra):
            return client.get(f"{self.base}/{record_key}", **(self.auth | extra))

        def delete(self, record_key, **extra):
            return client.delete(f"{self.base}/{record_key}", **(self.auth | extra))

        def post(self, what, payload, **extra):
            data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
            return client.post(f"{self.base}/{what}", data, content_type="application/json", **(self.auth | extra))

        def call(self, method, path, **extra):
            return client.generic(method, path, **(self.auth | extra))

    return Api()


@contextmanager
def json_console_to(buffer: io.StringIO) -> Iterator[None]:
    """Every JSON stream handler of the root logger and of named loggers writes to
    ``buffer``, and every logger is at DEBUG, until the block ends; then each handler's
    stream and each logger's level are put back as they were."""
    swapped: dict[int, tuple[logging.StreamHandler, object]] = {}
    levels: list[tuple[logging.Logger, int]] = []
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        levels.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        for handler in logger.handlers:
            # One handler serves several loggers (root and django.server): swap it once, or
            # its second swap returns None (the stream is already the buffer) and the
            # restore leaves it writing to None ("Logging error" in every later test).
            if (
                type(handler) is logging.StreamHandler
                and isinstance(handler.formatter, JsonFormatter)
                and id(handler) not in swapped
            ):
                swapped[id(handler)] = (handler, handler.setStream(buffer))
    assert swapped, "no JSON stream handler is configured"
    try:
        yield
    finally:
        for handler, stream in swapped.values():
            handler.setStream(stream)
        for logger, level in levels:
            logger.setLevel(level)


@pytest.fixture
def console() -> Iterator[io.StringIO]:
    """The formatted output of the configured handlers (see json_console_to)."""
    buffer = io.StringIO()
    with json_console_to(buffer):
        yield buffer


@pytest.fixture
def built_clients(monkeypatch) -> list[tuple[str, aws_clients.ClientOptions]]:
    """The service name ("kms", "sts") and options of every AWS client built, in order
    (``keys.aws_clients.build_client``, where both adapters build theirs; the real client
    is built all the same)."""
    built: list[tuple[str, aws_clients.ClientOptions]] = []
    real = aws_clients.build_client

    def spy(service_name, **kwargs):
        built.append((service_name, kwargs["options"]))
        return real(service_name, **kwargs)

    monkeypatch.setattr(aws_clients, "build_client", spy)
    return built
