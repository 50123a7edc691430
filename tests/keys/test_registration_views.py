"""The registration page: the five items through the form, refused and accepted, and who may use it.

Every bad input is POSTed through the real page (login, CSRF-free test client, form,
parsers, service) and must come back as a 200 re-render with an error on the right field,
a blank secret field that says why, and nothing stored.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from html import unescape
from unittest import mock

import pytest
from django.urls import URLPattern, reverse

from keys import crypto
from keys.services import registrations, sealing
from keys.forms import SECRET_NOT_KEPT
from keys.models import ApiKey, AuditEvent, KeyRegistration

pytestmark = pytest.mark.django_db

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:eu-west-1:111122223333:key/{KEY_ID}"
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
# What moto returns for a 256-bit data key: 36-byte key ID in ASCII, then 60 opaque bytes.
MOTO_BLOB = KEY_ID.encode("ascii") + bytes(range(100, 160))
MOTO_BLOB_B64 = base64.b64encode(MOTO_BLOB).decode("ascii")
# Roughly what AWS KMS returns: opaque, 180 bytes.
AWS_BLOB = bytes((i * 37 + 11) % 256 for i in range(180))
AWS_BLOB_B64 = base64.b64encode(AWS_BLOB).decode("ascii")

VALID = {
    "encrypted_data_key": MOTO_BLOB_B64,
    "access_key_id": ACCESS_KEY_ID,
    "secret_access_key": SECRET_ACCESS_KEY,
    "kms_key_arn": ARN,
    "region": "eu-west-1",
    "encryption_context": "",
}


def new_url(environment) -> str:
    return reverse("registration_new", args=[environment.public_id])


def guide_url(environment) -> str:
    return reverse("registration_guide", args=[environment.public_id])


def field_errors(html: str) -> dict[str, list[str]]:
    """``{field name: [error text, ...]}`` as rendered by templates/partials/form_fields.html."""
    errors: dict[str, list[str]] = {}
    for field, text in re.findall(r'<p class="field-error" role="alert" id="id_(\w+)_error">(.*?)</p>', html, re.S):
        errors.setdefault(field, []).append(unescape(text))
    return errors


@pytest.fixture
def registered_counts(environment):
    """What is stored before the test posts anything (version 1 and its audit event exist)."""
    return KeyRegistration.objects.count(), AuditEvent.objects.count()


@pytest.fixture
def no_validation():
    with mock.patch("keys.tasks.validate_registration.delay") as delay:
        yield delay


# --- Refused inputs ----------------------------------------------------------------

ZWSP = "\u200b"
NBSP = "\u00a0"
CYRILLIC_A = "\u0430"  # looks like a
CYRILLIC_CAPITAL_A = "\u0410"  # looks like A
FULLWIDTH_ONE = "\uff11"  # looks like 1


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


BAD_INPUTS = [
    # KMS key ARN
    ("kms_key_arn", "", "Enter the KMS key ARN"),
    ("kms_key_arn", "hello", "This is not an ARN"),
    ("kms_key_arn", "arn:aws:kms:eu-west-1:111122223333:alias/billing", "alias ARN"),
    ("kms_key_arn", "alias/billing", "alias name"),
    ("kms_key_arn", KEY_ID, "This is a key ID; the portal needs the full key ARN"),
    ("kms_key_arn", "arn:aws:iam::111122223333:user/byok-portal", "This is an IAM user ARN; the portal needs a KMS key ARN"),
    ("kms_key_arn", "arn:aws:iam::111122223333:role/byok-portal", "This is an IAM role ARN"),
    ("kms_key_arn", "arn:aws:s3:::customer-bucket", "This is an S3 ARN"),
    ("kms_key_arn", f"arn:aws:secretsmanager:eu-west-1:111122223333:secret:{KEY_ID}", "Secrets Manager ARN"),
    ("kms_key_arn", f"arn:aws-iso:kms:us-iso-east-1:111122223333:key/{KEY_ID}", "does not support the aws-iso partition"),
    ("kms_key_arn", f"arn:aws:kms:cn-north-1:111122223333:key/{KEY_ID}", "start with arn:aws-cn:kms:"),
    ("kms_key_arn", f"arn:aws:kms:us-gov-west-1:111122223333:key/{KEY_ID}", "start with arn:aws-us-gov:kms:"),
    ("kms_key_arn", f"arn:aws-cn:kms:eu-west-1:111122223333:key/{KEY_ID}", "start with arn:aws:kms:, not arn:aws-cn:kms:"),
    ("kms_key_arn", f"arn:aws:kms:eu-west-1:11112222333:key/{KEY_ID}", "must be 12 digits"),
    ("kms_key_arn", f"arn:aws:kms:eu-west-1:11112222333x:key/{KEY_ID}", "must be 12 digits"),
    ("kms_key_arn", "arn:aws:kms:eu-west-1:111122223333:key/not-a-key-id", "must be a UUID"),
    ("kms_key_arn", f"arn:aws:kms:eu-west-1:111122223333:key/{KEY_ID.upper()}", "KMS key IDs are lower case"),
    ("kms_key_arn", "arn:aws:kms:eu-west-1:111122223333:key/mrk-" + "a" * 31, "mrk- and 32 hexadecimal digits"),
    ("kms_key_arn", "arn:aws:kms:eu-west-1:111122223333:key/", "without a key ID"),
    ("kms_key_arn", "arn:aws:kms:eu-west-1", "This ARN is incomplete"),
    ("kms_key_arn", ARN.upper(), "lower case"),
    ("kms_key_arn", CYRILLIC_A + ARN[1:], "U+0430 (CYRILLIC SMALL LETTER A)"),
    ("kms_key_arn", ARN.replace("111122223333", "11112222333" + FULLWIDTH_ONE), "U+FF11"),
    ("kms_key_arn", ARN[:20] + ZWSP + ARN[20:], "U+200B"),
    ("kms_key_arn", ZWSP + ARN, "U+200B (ZERO WIDTH SPACE) at character 1"),
    ("kms_key_arn", ARN.replace(":key/", ":key/" + NBSP), "U+00A0"),
    ("kms_key_arn", ARN[:20] + "\x00" + ARN[20:], "NUL"),
    ("kms_key_arn", ARN + "0" * 300, "too long"),
    ("kms_key_arn", "arn:aws:kms:eu-west-1:111122223333:key/" + "a" * 5000, "too long"),
    # Region code
    ("region", "", "Enter the region code"),
    ("region", "us-west-2", "The key ARN names region eu-west-1; enter eu-west-1"),
    ("region", "eu-west-1a", "That is an Availability Zone; the region is eu-west-1"),
    ("region", "EU-WEST-1", "Region codes are lower case"),
    ("region", "Europe (Ireland)", "its code is eu-west-1"),
    ("region", "euw1-az1", "Availability Zone ID"),
    ("region", "xx-nowhere-9", "not a region where AWS KMS is available"),
    ("region", "eu-west-" + FULLWIDTH_ONE, "U+FF11"),
    ("region", "eu-\x00west-1", "NUL"),
    ("region", "eu-west-1" * 20, "too long"),
    ("region", "eu west 1", "a space"),
    # Encrypted data key
    ("encrypted_data_key", "", "Paste the encrypted data key"),
    ("encrypted_data_key", MOTO_BLOB_B64[:-3], "multiple of 4"),
    ("encrypted_data_key", b64(b"x" * 20), "decodes to 20 bytes"),
    ("encrypted_data_key", b64(bytes(range(32))), "size of a plaintext data key"),
    ("encrypted_data_key", b64(bytes(range(256)) * 8), "decodes to 2048 bytes"),
    ("encrypted_data_key", "QUFB" * 5000, "too long"),
    ("encrypted_data_key", b64(MOTO_BLOB_B64.encode()), "base64-encoded twice"),
    ("encrypted_data_key", json.dumps({"KeyId": ARN}), "no CiphertextBlob"),
    (
        "encrypted_data_key",
        json.dumps({"CiphertextBlob": MOTO_BLOB_B64, "Plaintext": b64(bytes(32)), "KeyId": ARN}),
        "Plaintext field",
    ),
    ("encrypted_data_key", json.dumps({"KeyMetadata": {"Arn": ARN}}), "output of describe-key"),
    ("encrypted_data_key", '{"CiphertextBlob": "' + MOTO_BLOB_B64, "cannot be read"),
    ("encrypted_data_key", MOTO_BLOB.hex(), "hexadecimal"),
    ("encrypted_data_key", base64.urlsafe_b64encode(AWS_BLOB).decode(), "URL-safe base64"),
    ("encrypted_data_key", "!" + MOTO_BLOB_B64[1:], "Character 1 of the encrypted data key ('!')"),
    ("encrypted_data_key", "fileb://blob.bin", "file path"),
    ("encrypted_data_key", f"{MOTO_BLOB_B64}\t{ARN}", "--output text"),
    ("encrypted_data_key", CYRILLIC_CAPITAL_A + MOTO_BLOB_B64[1:], "U+0410"),
    ("encrypted_data_key", MOTO_BLOB_B64[:40] + "\x00" + MOTO_BLOB_B64[40:], "NUL"),
    # Access key ID
    ("access_key_id", "", "Enter the access key ID"),
    ("access_key_id", "ASIAIOSFODNN7EXAMPLE", "temporary STS credentials"),
    ("access_key_id", "AIDAIOSFODNN7EXAMPLE", "an IAM user ID"),
    ("access_key_id", "AROAIOSFODNN7EXAMPLE", "an IAM role ID"),
    ("access_key_id", ACCESS_KEY_ID.lower(), "capital letters"),
    ("access_key_id", ACCESS_KEY_ID[:-1], "this one has 19"),
    ("access_key_id", ACCESS_KEY_ID + "X", "this one has 21"),
    ("access_key_id", "AKIAIOSFODNN7EXAMPL!", "Character 20"),
    ("access_key_id", SECRET_ACCESS_KEY, "looks like a secret access key"),
    ("access_key_id", "XKIAIOSFODNN7EXAMPLE", "starts with AKIA"),
    ("access_key_id", CYRILLIC_CAPITAL_A + ACCESS_KEY_ID[1:], "U+0410 (CYRILLIC CAPITAL LETTER A)"),
    ("access_key_id", ACCESS_KEY_ID[:10] + ZWSP + ACCESS_KEY_ID[10:], "U+200B"),
    ("access_key_id", ACCESS_KEY_ID + ZWSP, "U+200B (ZERO WIDTH SPACE) at character 21"),
    ("access_key_id", ACCESS_KEY_ID[:10] + "\x00" + ACCESS_KEY_ID[10:], "NUL"),
    ("access_key_id", "AKIA" + "X" * 500, "too long"),
    # Secret access key
    ("secret_access_key", "", "Enter the secret access key"),
    ("secret_access_key", SECRET_ACCESS_KEY[:-1], "exactly 40 characters; this value has 39"),
    ("secret_access_key", SECRET_ACCESS_KEY + "A", "this value has 41"),
    ("secret_access_key", ACCESS_KEY_ID, "This is an access key ID, not the secret access key"),
    ("secret_access_key", "-" + SECRET_ACCESS_KEY[1:], "Character 1 of the secret access key is not allowed"),
    ("secret_access_key", SECRET_ACCESS_KEY[:5] + CYRILLIC_A + SECRET_ACCESS_KEY[6:], "U+0430"),
    ("secret_access_key", SECRET_ACCESS_KEY[:20] + ZWSP + SECRET_ACCESS_KEY[21:], "U+200B"),
    ("secret_access_key", SECRET_ACCESS_KEY[:20] + "\x00" + SECRET_ACCESS_KEY[21:], "NUL"),
    ("secret_access_key", SECRET_ACCESS_KEY[:20] + " " + SECRET_ACCESS_KEY[20:], "a space"),
    ("secret_access_key", SECRET_ACCESS_KEY + NBSP, "U+00A0 (NO-BREAK SPACE) at character 41"),
    ("secret_access_key", NBSP + SECRET_ACCESS_KEY, "U+00A0 (NO-BREAK SPACE) at character 1"),
    ("secret_access_key", SECRET_ACCESS_KEY * 20, "too long"),
    # Encryption context
    ("encryption_context", '{"app": 1}', "not a string"),
    ("encryption_context", "app billing", "space, quote"),
    ("encryption_context", "app", "has no ="),
    ("encryption_context", "app=a,app=b", "repeats an earlier key"),
    ("encryption_context", "=billing", "empty key"),
    ("encryption_context", '{"app": "a", "app": "b"}', "names the same key twice"),
    ("encryption_context", "app=caf\u00e9", "U+00E9"),
    ("encryption_context", "app=\x00", "NUL"),
    ("encryption_context", "k=" + "v" * 9000, "8,192"),
    ("encryption_context", "k=" + "v" * 30_000, "too long"),
]


def test_it_has_a_table_of_at_least_forty_bad_inputs_covering_every_field():
    assert len(BAD_INPUTS) >= 40
    assert {field for field, _, _ in BAD_INPUTS} == set(VALID)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    BAD_INPUTS,
    ids=[f"{i:02d}-{field}-{fragment[:30]}" for i, (field, _, fragment) in enumerate(BAD_INPUTS)],
)
def test_it_refuses_a_bad_input_with_a_field_error_and_stores_nothing(
    client_for, alice, environment, registered_counts, no_validation, field, value, fragment
):
    response = client_for(alice).post(new_url(environment), {**VALID, field: value})

    assert response.status_code == 200
    html = response.content.decode()
    errors = field_errors(html)
    assert field in errors, f"no error on {field}; errors: {errors}"
    assert any(fragment in text for text in errors[field]), errors[field]
    # Only the bad field is in error, except the secret field, which says it was not kept.
    assert set(errors) <= {field, "secret_access_key"}
    if field != "secret_access_key":
        assert errors["secret_access_key"] == [SECRET_NOT_KEPT]
    assert (KeyRegistration.objects.count(), AuditEvent.objects.count()) == registered_counts
    no_validation.assert_not_called()


@pytest.mark.parametrize(("field", "value", "fragment"), BAD_INPUTS[::7])
def test_it_never_echoes_the_secret_access_key_after_an_error(client_for, alice, environment, field, value, fragment):
    response = client_for(alice).post(new_url(environment), {**VALID, field: value})

    html = response.content.decode()
    assert SECRET_ACCESS_KEY not in html
    assert SECRET_ACCESS_KEY[:20] not in html and SECRET_ACCESS_KEY[20:] not in html
    secret_input = re.search(r'<input[^>]*name="secret_access_key"[^>]*>', html).group(0)
    assert 'type="password"' in secret_input
    assert "value=" not in secret_input


def test_it_refuses_an_access_key_id_already_registered_in_the_environment(
    client_for, alice, environment, no_validation
):
    client = client_for(alice)
    first = client.post(new_url(environment), VALID)
    assert first.status_code == 302
    counts = KeyRegistration.objects.count(), AuditEvent.objects.count()

    again = {**VALID, "encrypted_data_key": AWS_BLOB_B64}
    response = client.post(new_url(environment), again)

    assert response.status_code == 200
    errors = field_errors(response.content.decode())
    assert any("already registered on another key version of this environment" in e for e in errors["access_key_id"])
    assert errors["secret_access_key"] == [SECRET_NOT_KEPT]
    assert (KeyRegistration.objects.count(), AuditEvent.objects.count()) == counts


def test_it_refuses_a_duplicate_access_key_id_found_only_inside_the_service(
    client_for, alice, environment, no_validation
):
    """GIVEN the form's check passed (a concurrent registration not yet visible to it)
    WHEN the service finds the access key ID taken under its lock
    THEN the page says so on the access key field, the secret is not kept, nothing is stored."""
    counts = KeyRegistration.objects.count(), AuditEvent.objects.count()
    with mock.patch("keys.forms.access_key_in_use", return_value=False), mock.patch(
        "keys.views.registration.registration_create", side_effect=registrations.DuplicateAccessKey("already registered here")
    ):
        response = client_for(alice).post(new_url(environment), VALID)

    assert response.status_code == 200
    errors = field_errors(response.content.decode())
    assert errors["access_key_id"] == ["already registered here"]
    assert errors["secret_access_key"] == [SECRET_NOT_KEPT]
    assert SECRET_ACCESS_KEY not in response.content.decode()
    assert (KeyRegistration.objects.count(), AuditEvent.objects.count()) == counts


def test_it_allows_the_same_access_key_id_in_another_environment(
    client_for, alice, environment, org_a, no_validation
):
    from environments.services import environment_create

    other = environment_create(organization=org_a, name="staging", actor=alice)
    client = client_for(alice)
    assert client.post(new_url(environment), VALID).status_code == 302
    assert client.post(new_url(other), VALID).status_code == 302


def test_it_shows_every_error_at_once(client_for, alice, environment, registered_counts):
    bad = {
        "encrypted_data_key": "not base64!",
        "access_key_id": "ASIAIOSFODNN7EXAMPLE",
        "secret_access_key": "short",
        "kms_key_arn": "alias/billing",
        "region": "eu-west-1a",
        "encryption_context": "nope",
    }
    response = client_for(alice).post(new_url(environment), bad)

    assert response.status_code == 200
    assert set(field_errors(response.content.decode())) == set(bad)
    assert (KeyRegistration.objects.count(), AuditEvent.objects.count()) == registered_counts


def test_it_shows_errors_for_an_empty_post(client_for, alice, environment, registered_counts):
    response = client_for(alice).post(new_url(environment), {})

    assert response.status_code == 200
    errors = field_errors(response.content.decode())
    assert set(errors) == {"encrypted_data_key", "access_key_id", "secret_access_key", "kms_key_arn", "region"}
    assert (KeyRegistration.objects.count(), AuditEvent.objects.count()) == registered_counts


@pytest.mark.parametrize("region", ["us-east-1a", "US-EAST-1", "US East (N. Virginia)", "us-west-2-lax-1a"])
def test_it_names_the_arns_region_for_a_zone_or_name_of_another_region(
    client_for, alice, environment, registered_counts, region
):
    response = client_for(alice).post(new_url(environment), {**VALID, "region": region})

    errors = field_errors(response.content.decode())
    assert "eu-west-1" in errors["region"][0], errors["region"]


def test_it_keeps_the_guide_for_the_arn_typed_when_re_rendering(client_for, alice, environment):
    arn = f"arn:aws:kms:us-east-1:111122223333:key/{KEY_ID}"
    response = client_for(alice).post(new_url(environment), {**VALID, "kms_key_arn": arn, "region": "us-east-1a"})

    html = unescape(response.content.decode())
    assert "That is an Availability Zone; the region is us-east-1. Enter us-east-1." in html
    assert f"--key-id {arn} --key-spec AES_256 --region us-east-1 --output json" in html
    assert f'"Resource": "{arn}"' in html


# --- Accepted inputs ---------------------------------------------------------------

MRK_ARN = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"
CN_ARN = f"arn:aws-cn:kms:cn-north-1:111122223333:key/{KEY_ID}"
GOV_ARN = f"arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/{KEY_ID}"
CLI_JSON = json.dumps(
    {"CiphertextBlob": AWS_BLOB_B64, "KeyId": ARN, "KeyMaterialId": "a" * 64}, indent=4
)
WRAPPED = "\n".join(AWS_BLOB_B64[i : i + 64] for i in range(0, len(AWS_BLOB_B64), 64))

ACCEPTED = [
    ("moto blob, eu-west-1", {}, MOTO_BLOB, "eu-west-1"),
    ("multi-Region key", {"kms_key_arn": MRK_ARN, "region": "us-east-1"}, MOTO_BLOB, "us-east-1"),
    ("AWS China", {"kms_key_arn": CN_ARN, "region": "cn-north-1"}, MOTO_BLOB, "cn-north-1"),
    ("AWS GovCloud", {"kms_key_arn": GOV_ARN, "region": "us-gov-west-1"}, MOTO_BLOB, "us-gov-west-1"),
    ("pasted CLI JSON", {"encrypted_data_key": CLI_JSON}, AWS_BLOB, "eu-west-1"),
    ("whitespace-wrapped blob", {"encrypted_data_key": f"  {WRAPPED}\r\n  "}, AWS_BLOB, "eu-west-1"),
    ("quoted blob", {"encrypted_data_key": f'"{AWS_BLOB_B64}"'}, AWS_BLOB, "eu-west-1"),
    (
        "spaces around every item",
        {
            "kms_key_arn": f"  {ARN}\t",
            "region": " eu-west-1 ",
            "access_key_id": f" {ACCESS_KEY_ID} ",
            "secret_access_key": f"\t{SECRET_ACCESS_KEY}  ",
        },
        MOTO_BLOB,
        "eu-west-1",
    ),
]


@pytest.mark.parametrize(("name", "changes", "blob", "region"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_it_registers_a_key_version_pending_validation(
    client_for, alice, environment, django_capture_on_commit_callbacks, name, changes, blob, region
):
    data = {**VALID, **changes}
    with mock.patch("keys.tasks.validate_registration.delay") as delay:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            response = client_for(alice).post(new_url(environment), data)
            delay.assert_not_called()  # not before the transaction commits

        assert response.status_code == 302
        assert response["Location"] == reverse("environment_detail", args=[environment.public_id])
        registration = environment.key_registrations.get(version=2)
        delay.assert_not_called()
        for callback in callbacks:
            callback()
        delay.assert_called_once_with(registration.pk, "registration")

    assert registration.kind == KeyRegistration.Kind.BYOK
    assert registration.status == KeyRegistration.Status.PENDING_VALIDATION
    assert registration.kms_key_arn == data["kms_key_arn"].strip()
    assert registration.region == region
    assert registration.account_id == "111122223333"
    assert bytes(registration.encrypted_data_key) == blob
    assert registration.access_key_id_last4 == "MPLE"
    assert registration.created_by == alice
    for field in ("sealed_access_key_id", "sealed_secret_access_key"):
        assert crypto.sealed_key_id(getattr(registration, field)) == "test1"
    credentials = sealing.registration_credentials(registration=registration)
    assert (credentials.access_key_id, credentials.secret_access_key) == (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    event = AuditEvent.objects.get(registration=registration)
    assert event.action == AuditEvent.Action.REGISTRATION_CREATED
    assert event.actor == alice
    assert event.after["status"] == "pending_validation"
    assert event.after["access_key_id"].endswith("MPLE")
    assert event.after["encrypted_data_key_fingerprint"] == crypto.fingerprint(blob)


def test_it_stores_the_encryption_context(client_for, alice, environment, no_validation):
    response = client_for(alice).post(new_url(environment), {**VALID, "encryption_context": "app=billing,team=risk"})

    assert response.status_code == 302
    registration = environment.key_registrations.get(version=2)
    assert registration.encryption_context == {"app": "billing", "team": "risk"}


def test_it_lets_an_admin_register_and_says_validation_started(client_for, carol, environment, no_validation):
    client = client_for(carol)
    response = client.post(new_url(environment), VALID, follow=True)

    assert response.status_code == 200
    html = response.content.decode()
    # The news stays; the banner about the validation (marked) goes once it ends (status.js).
    assert '<li class="msg success">Key version 2 registered.</li>' in html
    assert ('<li class="msg info" data-validation-banner="2">Validation of key version 2 against KMS has started.</li>'
            in html)
    assert "Pending validation" in html


def test_it_numbers_versions_one_after_another(client_for, alice, environment, no_validation):
    client = client_for(alice)
    client.post(new_url(environment), VALID)
    client.post(new_url(environment), {**VALID, "access_key_id": "AKIAIOSFODNN7EXAMPL2"})

    assert list(environment.key_registrations.values_list("version", flat=True)) == [3, 2, 1]


# --- The environment page ----------------------------------------------------------


def test_it_lists_key_versions_on_the_environment_page(client_for, alice, environment, no_validation):
    client_for(alice).post(new_url(environment), VALID)

    response = client_for(alice).get(reverse("environment_detail", args=[environment.public_id]))
    html = response.content.decode()
    row = re.search(r'<tr id="version-2">(.*?)</tr>', html, re.S).group(1)
    assert "BYOK (AWS KMS)" in row
    assert 'data-status="pending_validation"' in row and "Pending validation" in row
    assert ARN in row
    assert "eu-west-1" in row
    assert "••••••••••••••••MPLE" in row
    assert ACCESS_KEY_ID not in html
    assert "by alice" in row
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", row)
    assert "Version 2 registered" in html and "BYOK key registered as version 2." in html


def test_it_shows_the_register_button_to_owners_and_admins_only(client_for, alice, bob, carol, environment):
    url = reverse("environment_detail", args=[environment.public_id])
    for user, shown in ((alice, True), (carol, True), (bob, False)):
        html = client_for(user).get(url).content.decode()
        assert (new_url(environment) in html) is shown, user


# --- The setup guide ---------------------------------------------------------------


def test_it_answers_the_guide_for_the_arn_typed(client_for, alice, environment):
    response = client_for(alice).get(guide_url(environment), {"kms_key_arn": CN_ARN, "encryption_context": "app=billing"})

    assert response.status_code == 200
    guide = response.json()
    assert guide["arn_ok"] is True
    assert guide["cli_command"] == (
        f"aws kms generate-data-key-without-plaintext --key-id {CN_ARN} --key-spec AES_256 "
        "--encryption-context app=billing --region cn-north-1 --output json"
    )
    # The policy's Decrypt follows the context typed (issue 14): only data keys made with it.
    policy = json.loads(guide["iam_policy"])
    assert policy["Statement"] == [
        {"Sid": "DescribeTheKey", "Effect": "Allow", "Action": "kms:DescribeKey", "Resource": CN_ARN},
        {"Sid": "DecryptThisEnvironmentsDataKeys", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": CN_ARN,
         "Condition": {"StringEquals": {"kms:EncryptionContext:app": "billing"}}},
    ]


def test_it_renders_no_command_or_policy_for_a_half_typed_arn(client_for, alice, environment):
    """Only a valid key ARN gets a command and a policy (issue 13): a half-typed one gets
    the parser's message instead."""
    response = client_for(alice).get(guide_url(environment), {"kms_key_arn": "arn:aws:kms:eu-"})

    guide = response.json()
    assert (guide["arn_ok"], guide["cli_command"], guide["iam_policy"]) == (False, "", "")
    assert guide["hint"]


def test_it_never_puts_what_is_typed_into_a_command_unless_it_is_a_key_arn(client_for, alice, environment):
    response = client_for(alice).get(guide_url(environment), {"kms_key_arn": "x; rm -rf / $(id)"})

    guide = response.json()
    assert guide["cli_command"] == "" and "rm -rf" not in guide["hint"]


def test_it_shows_a_placeholder_guide_before_anything_is_typed(client_for, alice, environment):
    html = unescape(client_for(alice).get(new_url(environment)).content.decode())

    assert "--key-id 'arn:aws:kms:<region>:<account-id>:key/<key-id>' --key-spec AES_256 --output json" in html
    assert '"kms:Decrypt"' in html


def test_it_shows_the_five_items_in_the_seed_documents_words(client_for, alice, environment):
    html = client_for(alice).get(new_url(environment)).content.decode()

    labels = re.findall(r'<label for="id_(\w+)">([^<]*)', html)
    assert [(name, text.strip()) for name, text in labels] == [
        ("encrypted_data_key", "Encrypted Data Key"),
        ("access_key_id", "Access Key"),
        ("secret_access_key", "Secret Access Key"),
        ("kms_key_arn", "KMS Key ARN"),
        ("region", "Region code"),
        ("encryption_context", "Encryption context"),
    ]
    assert 'type="password"' in html


# --- Who may use it ----------------------------------------------------------------


def test_it_forbids_a_viewer_to_open_or_post_the_registration_page(client_for, bob, environment, registered_counts):
    client = client_for(bob)
    assert client.get(new_url(environment)).status_code == 403
    assert client.post(new_url(environment), VALID).status_code == 403
    assert (KeyRegistration.objects.count(), AuditEvent.objects.count()) == registered_counts


def test_it_lets_a_viewer_read_the_guide(client_for, bob, environment):
    response = client_for(bob).get(guide_url(environment), {"kms_key_arn": ARN})
    assert response.status_code == 200
    assert response.json()["arn_ok"] is True


def test_it_answers_404_to_an_outsider_on_the_registration_page_and_guide(
    client_for, charlie, environment, registered_counts
):
    client = client_for(charlie)
    assert client.get(new_url(environment)).status_code == 404
    assert client.post(new_url(environment), VALID).status_code == 404
    assert client.get(guide_url(environment), {"kms_key_arn": ARN}).status_code == 404
    assert (KeyRegistration.objects.count(), AuditEvent.objects.count()) == registered_counts


def test_it_answers_404_for_an_unknown_environment(client_for, alice):
    missing = uuid.uuid4()
    client = client_for(alice)
    assert client.get(reverse("registration_new", args=[missing])).status_code == 404
    assert client.get(reverse("registration_guide", args=[missing])).status_code == 404


def _keys_page_urls(environment, registration, api_key) -> list[str]:
    """Every URL of keys.urls, filled in with the ids of ``environment``'s objects."""
    from keys.urls import urlpatterns

    values = {
        "environment_id": environment.public_id,
        "registration_id": registration.public_id,
        "version": registration.version,
        "prefix": api_key.prefix,
    }
    urls = []
    for pattern in urlpatterns:
        assert isinstance(pattern, URLPattern)
        names = pattern.pattern.converters.keys()
        urls.append(reverse(pattern.name, kwargs={name: values[name] for name in names}))
    return urls


def test_it_answers_404_to_an_outsider_on_every_keys_url(client_for, charlie, environment, registered_counts):
    registration = environment.key_registrations.get()
    api_key = ApiKey.objects.create(environment=environment, name="billing app", prefix="abcd1234", key_hash="0" * 64)
    client = client_for(charlie)
    urls = _keys_page_urls(environment, registration, api_key)
    assert new_url(environment) in urls and guide_url(environment) in urls
    for url in urls:
        answers = {client.get(url).status_code, client.post(url, VALID).status_code}
        assert 404 in answers and answers <= {404, 405}, (url, answers)
    assert (KeyRegistration.objects.count(), AuditEvent.objects.count()) == registered_counts


def test_it_sends_anonymous_users_to_sign_in(client, environment):
    for url in (new_url(environment), guide_url(environment)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_it_refuses_wrong_http_methods(client_for, alice, environment):
    client = client_for(alice)
    assert client.put(new_url(environment)).status_code == 405
    assert client.delete(new_url(environment)).status_code == 405
    assert client.post(guide_url(environment)).status_code == 405


def test_it_never_renders_back_a_pasted_plaintext_data_key(client_for, alice, environment, registered_counts):
    """GIVEN the output of `aws kms generate-data-key` (it holds the plaintext data key)
    WHEN it is pasted as the Encrypted Data Key
    THEN the page refuses it and the plaintext appears nowhere in the re-rendered page."""
    plaintext = "UExBSU5URVhULURBVEEtS0VZLUNBTkFSWS0wMDAwMDA="
    pasted = '{"CiphertextBlob": "%s", "Plaintext": "%s", "KeyId": "x"}' % (VALID["encrypted_data_key"], plaintext)
    response = client_for(alice).post(new_url(environment), {**VALID, "encrypted_data_key": pasted})

    assert response.status_code == 200
    assert "exposes the plaintext data key" in unescape(response.content.decode())
    assert plaintext not in response.content.decode()
    assert (KeyRegistration.objects.count(), AuditEvent.objects.count()) == registered_counts


SECRET_CANARY = "Zk3pQ9rT2vW8yB1nM4cX7hJ0sL5dF6gA2eR9tY3u"  # 40 characters, shaped like a secret access key


@pytest.mark.parametrize("field", ["access_key_id", "kms_key_arn", "region", "encryption_context", "encrypted_data_key"])
def test_it_never_renders_back_a_secret_pasted_into_the_wrong_field(client_for, alice, environment, field):
    url = reverse("registration_new", args=[environment.public_id])
    data = {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "kms_key_arn": "not an arn", "region": "eu-west-1",
            "encryption_context": "", "encrypted_data_key": "", "secret_access_key": ""}
    data[field] = SECRET_CANARY if field != "encryption_context" else f"app={SECRET_CANARY}"
    response = client_for(alice).post(url, data)
    assert response.status_code == 200
    assert SECRET_CANARY not in response.content.decode()
    assert not environment.key_registrations.filter(kind="byok").exists()


def test_it_sends_no_store_on_the_pages_that_take_secrets(client_for, alice, environment):
    response = client_for(alice).get(reverse("registration_new", args=[environment.public_id]))
    assert "no-store" in response["Cache-Control"]


@pytest.mark.parametrize("length", [8_193, 19_996, 30_000])
def test_it_has_one_length_limit_and_one_message_for_the_encrypted_data_key(
    client_for, alice, environment, registered_counts, length
):
    """The form's limit (Django's max_length, checked first) and the parser's are one: the
    same message, formatted the same ("8,192"), whatever the length; the field's maxlength
    attribute is that limit too."""
    response = client_for(alice).post(new_url(environment), {**VALID, "encrypted_data_key": "A" * length})

    errors = field_errors(response.content.decode())["encrypted_data_key"]
    assert errors == [
        f"The encrypted data key is too long: {length:,} characters, and the limit is 8,192. "
        "Check that you pasted only the encrypted data key."
    ]
    page = client_for(alice).get(new_url(environment)).content.decode()
    assert re.search(r'<textarea name="encrypted_data_key"[^>]*maxlength="8192"', page)
    assert (KeyRegistration.objects.count(), AuditEvent.objects.count()) == registered_counts
