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


def _shown(html: str, mode: str) -> list[str]:
    """The texts marked for one access mode that the page renders visible (not ``hidden``)."""
    return [
        unescape(re.sub(r"<[^>]+>", "", text))
        for attrs, text in re.findall(rf'<(?:li|span) data-mode="{mode}"([^>]*)>(.*?)</(?:li|span)>', html, re.S)
        if "hidden" not in attrs
    ]


def test_it_tells_a_role_mode_admin_to_create_a_role_not_an_iam_user(client_for, alice, environment):
    """GIVEN "IAM role" chosen (a form shown again after an error) THEN setup step 4 asks for a
    role, not an IAM user's access key, the binding note speaks of the role's policy, and
    no text of the access-key mode is visible; the heading counts no items."""
    html = client_for(alice).post(new_url(environment), {**ROLE_POST, "region": ""}).content.decode()

    role_texts = " ".join(_shown(html, "role"))
    assert "Create an IAM role for the portal" in role_texts and "deleting the role" in role_texts
    assert "role's permissions policy below has a kms:EncryptionContext condition" in role_texts
    assert _shown(html, "access_key") == []
    assert "The five items" not in html and "Your key and how the platform reaches it" in html


def test_it_tells_an_access_key_admin_when_the_policy_has_the_context_condition(client_for, alice, environment):
    """GIVEN the IAM user access key mode and no encryption context typed THEN the policy shown
    has no condition, and the binding note says so instead of citing "the policy's condition";
    with the environment's context typed, the policy has it."""
    html = client_for(alice).get(new_url(environment)).content.decode()
    policy = json.loads(_pre(html, "guide-policy"))

    access_texts = " ".join(_shown(html, "access_key"))
    assert all("Condition" not in statement for statement in policy["Statement"])
    assert "Once you enter that context, the IAM policy in step 3 gains a kms:EncryptionContext condition" in access_texts
    assert "it has none while the field is empty" in access_texts
    assert "Create an IAM user for the portal" in access_texts
    assert _shown(html, "role") == []
    binding = _pre(html, "guide-binding")
    bound = client_for(alice).get(guide_url(environment), {"kms_key_arn": ARN, "encryption_context": binding}).json()
    assert "kms:EncryptionContext:portal:environment" in bound["iam_policy"]


def test_it_labels_the_access_mode_choice_as_required_and_still_defaults_to_the_access_key(
    client_for, alice, environment, no_validation
):
    html = client_for(alice).get(new_url(environment)).content.decode()
    label = re.search(r"<label[^>]*>How the platform reaches your key(.*?)</label>", html, re.S).group(1)
    assert "(optional)" not in label

    post = {key: value for key, value in VALID.items() if key != "access_mode"}
    client_for(alice).post(new_url(environment), post)

    registration = KeyRegistration.objects.get(environment=environment, version=2)
    assert registration.access_key_id_last4 and not registration.role_arn
