"""The registration page in role mode (issue 14): the two ways to grant access, the live
setup guide for the role, and what a form post may and may not set."""

from __future__ import annotations

import json
import re
from html import unescape
from unittest import mock

import pytest

from keys.models import KeyRegistration
from tests.keys.test_registration_views import ARN, VALID, field_errors, guide_url, new_url

PLATFORM = "arn:aws:iam::999988887777:role/byok-platform"
ROLE_ARN = "arn:aws:iam::111122223333:role/team/byok-portal-access"
ROLE_POST = {**VALID, "access_mode": "role", "role_arn": ROLE_ARN, "access_key_id": "", "secret_access_key": ""}


@pytest.fixture(autouse=True)
def role_mode_on(settings):
    settings.PLATFORM_AWS_PRINCIPAL_ARN = PLATFORM


@pytest.fixture
def no_validation():
    with mock.patch("keys.tasks.validate_registration.delay") as delay:
        yield delay


def _pre(html: str, element_id: str) -> str:
    return unescape(re.search(rf'id="{element_id}">(.*?)</', html, re.S).group(1))


def test_it_shows_the_external_id_and_the_role_policies_for_this_environment(client_for, alice, environment):
    html = client_for(alice).get(new_url(environment)).content.decode()

    trust = json.loads(_pre(html, "guide-trust-policy"))
    permissions = json.loads(_pre(html, "guide-role-policy"))
    assert environment.aws_external_id in _pre(html, "guide-external-id")
    assert trust["Statement"][0]["Principal"] == {"AWS": PLATFORM}
    assert trust["Statement"][0]["Condition"] == {"StringEquals": {"sts:ExternalId": environment.aws_external_id}}
    assert permissions["Statement"][1]["Condition"] == {
        "StringEquals": {"kms:EncryptionContext:portal:environment": str(environment.public_id)}
    }
    assert "aws iam create-role" in _pre(html, "guide-role-commands")
    assert str(environment.public_id) in _pre(html, "guide-bound-cli")
    assert 'value="role"' in html and "IAM role (recommended)" in html
    assert "js/role_guide.js" in html and "<script>" not in html


def test_it_follows_the_typed_role_arn_in_the_live_guide(client_for, alice, environment):
    data = client_for(alice).get(guide_url(environment), {"kms_key_arn": ARN, "role_arn": ROLE_ARN}).json()

    assert "--role-name byok-portal-access --path /team/" in data["role_commands"]
    assert json.loads(data["trust_policy"])["Statement"][0]["Principal"] == {"AWS": PLATFORM}


def test_it_offers_no_role_mode_without_a_platform_principal(client_for, alice, environment, settings):
    settings.PLATFORM_AWS_PRINCIPAL_ARN = ""

    html = client_for(alice).get(new_url(environment)).content.decode()

    assert 'name="role_arn"' not in html and "guide-trust-policy" not in html
    assert 'name="access_key_id"' in html


def test_it_registers_a_role_without_any_access_key(client_for, alice, environment, no_validation):
    response = client_for(alice).post(new_url(environment), ROLE_POST)

    assert response.status_code == 302
    registration = KeyRegistration.objects.get(environment=environment, version=2)
    assert (registration.access_mode, registration.role_arn) == ("role", ROLE_ARN)
    assert (registration.sealed_access_key_id, registration.sealed_secret_access_key) == ("", "")
    assert registration.access_key_id_last4 == ""


def test_it_ignores_an_access_key_posted_in_role_mode(client_for, alice, environment, no_validation):
    client_for(alice).post(new_url(environment), {**ROLE_POST, "access_key_id": VALID["access_key_id"],
                                                  "secret_access_key": VALID["secret_access_key"]})

    registration = KeyRegistration.objects.get(environment=environment, version=2)
    assert registration.sealed_secret_access_key == "" and registration.access_key_id_last4 == ""


@pytest.mark.parametrize(
    ("role_arn", "message"),
    [
        ("", "Enter the role ARN"),
        ("arn:aws:iam::111122223333:user/byok", "IAM user ARN"),
        ("arn:aws:sts::111122223333:assumed-role/byok/s", "assumed-role ARN"),
        ("arn:aws-cn:iam::111122223333:role/byok", "the role must be in the key's partition"),
    ],
)
def test_it_refuses_a_bad_role_arn_and_stores_nothing(client_for, alice, environment, role_arn, message):
    response = client_for(alice).post(new_url(environment), {**ROLE_POST, "role_arn": role_arn})

    assert response.status_code == 200
    assert message in " ".join(field_errors(response.content.decode())["role_arn"])
    assert not KeyRegistration.objects.filter(environment=environment, version=2).exists()


def test_it_keeps_the_access_key_mode_as_it_was(client_for, alice, environment, no_validation):
    response = client_for(alice).post(new_url(environment), {**VALID, "access_mode": "access_key"})

    assert response.status_code == 302
    registration = KeyRegistration.objects.get(environment=environment, version=2)
    assert (registration.access_mode, registration.role_arn) == ("access_key", "")
    assert registration.sealed_secret_access_key
