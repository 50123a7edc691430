"""The environment page runs a constant number of queries whatever the number of key
versions, and never unseals a secret to render it (issue: environment page N+1)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from keys import crypto
from keys.models import KeyRegistration, ValidationRun
from keys.services.registrations import registration_create

Status = KeyRegistration.Status
ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _add_byok_versions(environment, actor, count: int, *, first: int = 0) -> None:
    for n in range(first, first + count):
        registration = registration_create(
            environment=environment, actor=actor, kms_key_arn=ARN, region="eu-west-1", account_id="111122223333",
            encrypted_data_key=b"\x01\x02\x03\x00" + b"blob" * 40, encryption_context={},
            access_key_id=f"AKIAIOSFODNN7EXAMP{n:02d}", secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
        ValidationRun.objects.create(registration=registration, checks=[])
        KeyRegistration.objects.filter(pk=registration.pk).update(status=Status.FAILED)


def _queries_for_page(client, environment) -> int:
    url = reverse("environment_detail", args=[environment.public_id])
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


@pytest.fixture(autouse=True)
def no_validation_jobs(monkeypatch):
    from keys import tasks

    monkeypatch.setattr(tasks.validate_registration, "delay", lambda *args, **kwargs: None)


@pytest.mark.django_db
def test_it_runs_the_same_number_of_queries_for_one_and_for_ten_key_versions(client_for, alice, environment):
    client = client_for(alice)
    _add_byok_versions(environment, alice, 1)
    with_one = _queries_for_page(client, environment)
    _add_byok_versions(environment, alice, 9, first=1)
    with_ten = _queries_for_page(client, environment)
    assert environment.key_registrations.count() == 11  # the managed v1 + 10 BYOK versions
    assert with_ten == with_one, f"{with_one} queries with 1 BYOK version, {with_ten} with 10"
    # Session, user, memberships, environment, versions + their runs, lifecycle, API keys, audit…
    assert with_one <= 13, f"{with_one} queries: the environment page grew"


@pytest.mark.django_db
def test_it_renders_the_page_without_unsealing_anything(client_for, alice, environment, monkeypatch):
    client = client_for(alice)
    _add_byok_versions(environment, alice, 3)

    def refuse(*args, **kwargs):
        raise AssertionError("the environment page unsealed a secret")

    monkeypatch.setattr(crypto, "unseal", refuse)
    assert _queries_for_page(client, environment) > 0


@pytest.mark.django_db
def test_it_marks_credentials_sealed_under_a_retired_sealing_key_unreadable(client_for, alice, environment, settings):
    client = client_for(alice)
    _add_byok_versions(environment, alice, 1)
    old = list(settings.SEALING_KEYS)
    settings.SEALING_KEYS = [crypto.generate_sealing_key("other")]
    url = reverse("environment_detail", args=[environment.public_id])
    assert 'data-credentials="unreadable"' in client.get(url).content.decode()
    settings.SEALING_KEYS = [crypto.generate_sealing_key("other"), *old]
    assert 'data-credentials="unreadable"' not in client.get(url).content.decode()
