"""``manage.py customer_demo``: the customer's AWS side of the seed flow, step by step,
against a moto server (``ThreadedMotoServer`` on a free loopback port), and its refusal to
touch real AWS without ``--real-aws``."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from io import StringIO

import boto3
import pytest
from django.core.management import CommandError, call_command

from keys.forms import RegistrationForm
from keys.management.commands import customer_demo
from keys.kms import is_aws_endpoint as is_real_aws
from tests.support import moto_server

FIVE_ITEMS = ["Encrypted Data Key", "Access Key", "Secret Access Key", "KMS Key ARN", "Region code"]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(autouse=True)
def no_aws_profile(monkeypatch):
    """Nothing here may find real credentials, whatever the machine has."""
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL_IAM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _client(service: str, url: str, region: str = "eu-west-1"):
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
    ).client(service, endpoint_url=url)


def _run(*args: str, **options) -> str:
    out = StringIO()
    call_command("customer_demo", *args, stdout=out, **options)
    return out.getvalue()


def _items(output: str) -> dict[str, str]:
    """The "label  value" lines after the five-items heading."""
    tail = output.split("“Register a BYOK key” form:", 1)[1]
    items = {}
    for line in tail.strip().splitlines():
        label = next(name for name in FIVE_ITEMS if line.strip().startswith(name + "  "))
        items[label] = line.strip()[len(label):].strip()
    return items


def test_it_plays_the_customers_steps_and_says_what_it_does(moto_url):
    output = _run("--endpoint-url", moto_url)

    steps = [line for line in output.splitlines() if line[:2] in ("1.", "2.", "3.", "4.")]
    assert len(steps) == 4, output
    assert "create-key" in steps[0] and "SYMMETRIC_DEFAULT" in steps[0] and "alias/byok-demo-" in steps[0]
    assert "generate-data-key-without-plaintext --key-spec AES_256" in steps[1]
    assert "kms:Decrypt and kms:DescribeKey on that key ARN" in steps[2] and "create-policy" in steps[2]
    assert "create-user" in steps[3] and "attach-user-policy" in steps[3] and "create-access-key" in steps[3]
    assert moto_url in output


def test_it_prints_the_five_items_in_the_words_of_the_registration_form(moto_url):
    items = _items(_run("--endpoint-url", moto_url))

    assert list(items) == FIVE_ITEMS
    form_labels = {str(field.label) for field in RegistrationForm.base_fields.values()}
    assert set(FIVE_ITEMS) <= form_labels
    assert items["Region code"] == "eu-west-1"
    assert items["KMS Key ARN"].startswith("arn:aws:kms:eu-west-1:")
    assert items["Access Key"].startswith("AKIA") and len(items["Access Key"]) == 20
    assert len(items["Secret Access Key"]) == 40


def test_it_creates_what_the_seed_document_says_in_the_emulator(moto_url):
    """GIVEN the emulator WHEN the demo runs THEN the key is symmetric, named by an alias and
    described; the encrypted data key decrypts to 256 bits under it; the IAM user has the
    least-privilege policy on the key ARN attached, and the printed access key is its own."""
    items = json.loads(_run("--endpoint-url", moto_url, "--json"))
    arn = items["KMS Key ARN"]
    kms, iam = _client("kms", moto_url), _client("iam", moto_url)

    metadata = kms.describe_key(KeyId=arn)["KeyMetadata"]
    assert (metadata["KeySpec"], metadata["KeyUsage"]) == ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
    assert metadata["Description"] == "BYOK Portal demo key"
    aliases = [a["AliasName"] for a in kms.list_aliases(KeyId=metadata["KeyId"])["Aliases"]]
    assert len(aliases) == 1 and aliases[0].startswith("alias/byok-demo-")
    blob = base64.b64decode(items["Encrypted Data Key"])
    assert len(kms.decrypt(CiphertextBlob=blob, KeyId=arn)["Plaintext"]) == 32

    owner = iam.get_access_key_last_used(AccessKeyId=items["Access Key"])["UserName"]
    attached = iam.list_attached_user_policies(UserName=owner)["AttachedPolicies"]
    assert len(attached) == 1
    policy = iam.get_policy(PolicyArn=attached[0]["PolicyArn"])["Policy"]
    document = iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])
    statement = document["PolicyVersion"]["Document"]["Statement"]
    assert statement == [{"Effect": "Allow", "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": arn}]


def test_the_registration_form_accepts_what_it_prints(moto_url, environment):
    items = json.loads(_run("--endpoint-url", moto_url, "--json", "--region", "us-east-1"))
    data = {
        "encrypted_data_key": items["Encrypted Data Key"],
        "access_key_id": items["Access Key"],
        "secret_access_key": items["Secret Access Key"],
        "kms_key_arn": items["KMS Key ARN"],
        "region": items["Region code"],
    }

    form = RegistrationForm(data, environment=environment)

    assert form.is_valid(), form.errors
    assert form.cleaned_data["region"] == "us-east-1"


def test_it_prints_and_saves_one_json_object(moto_url, tmp_path):
    path = tmp_path / "local" / "customer-demo.json"

    output = _run("--endpoint-url", moto_url, "--json", "--json-file", str(path))

    assert list(json.loads(output)) == FIVE_ITEMS
    assert json.loads(path.read_text()) == json.loads(output)
    assert path.stat().st_mode & 0o077 == 0  # holds a secret access key: owner only


def test_it_passes_an_encryption_context(moto_url):
    items = json.loads(_run("--endpoint-url", moto_url, "--json", "--encryption-context", '{"tenant": "acme"}'))

    assert json.loads(items["Encryption context"]) == {"tenant": "acme"}
    blob = base64.b64decode(items["Encrypted Data Key"])
    kms = _client("kms", moto_url)
    assert len(kms.decrypt(CiphertextBlob=blob, EncryptionContext={"tenant": "acme"})["Plaintext"]) == 32


@pytest.mark.parametrize("endpoint", [None, "https://kms.eu-west-1.amazonaws.com", "https://iam.amazonaws.com",
                                      "https://kms.cn-north-1.amazonaws.com.cn", "https://kms.eu-west-1.api.aws"])
def test_it_refuses_to_run_against_real_aws_without_the_flag(endpoint, settings, monkeypatch):
    """GIVEN no emulator endpoint, or an AWS one WHEN the demo runs without --real-aws
    THEN it refuses, says how to point it at the emulator, and never builds an AWS client."""
    settings.AWS_KMS_ENDPOINT_URL = None

    def no_session(*args, **kwargs):
        raise AssertionError("an AWS session was created")

    monkeypatch.setattr(customer_demo.boto3.session, "Session", no_session)
    args = ["--endpoint-url", endpoint] if endpoint else []

    with pytest.raises(CommandError) as refused:
        _run(*args)

    message = str(refused.value)
    assert "refuses to run against real AWS" in message
    assert "AWS_KMS_ENDPOINT_URL" in message and "--real-aws" in message


def test_it_uses_the_configured_emulator_endpoint_by_default(moto_url, settings):
    settings.AWS_KMS_ENDPOINT_URL = moto_url

    items = json.loads(_run("--json"))

    assert _client("kms", moto_url).describe_key(KeyId=items["KMS Key ARN"])["KeyMetadata"]["Enabled"]


def test_it_runs_against_real_aws_only_with_the_flag(settings, monkeypatch):
    """--real-aws lifts the refusal and uses the default credential chain (no dummy
    credentials); here the session is replaced, so nothing leaves the machine."""
    settings.AWS_KMS_ENDPOINT_URL = None
    sessions = []

    class Stop(Exception):
        pass

    def fake_session(**kwargs):
        sessions.append(kwargs)
        raise Stop

    monkeypatch.setattr(customer_demo.boto3.session, "Session", fake_session)

    with pytest.raises(Stop):
        _run("--real-aws")

    assert sessions == [{"aws_access_key_id": None, "aws_secret_access_key": None, "region_name": "eu-west-1"}]


@pytest.mark.parametrize("url, real", [
    (None, True), ("", True), ("https://kms.us-east-1.amazonaws.com", True), ("https://KMS.eu-west-1.AmazonAWS.com.", True),
    ("http://127.0.0.1:4566", False), ("http://localhost:4566", False), ("http://kms-emulator:5000", False),
    ("https://amazonaws.com.example.org", False),
])
def test_it_tells_aws_endpoints_from_emulators(url, real):
    assert is_real_aws(url) is real


def test_it_plays_role_mode_and_the_portal_validates_what_it_prints(moto_url, environment, settings, monkeypatch):
    """GIVEN the platform principal and the emulator WHEN customer_demo --role runs for an environment
    THEN the form accepts the role items and validation (AssumeRole, DescribeKey, Decrypt with the
    environment's context) passes. moto checks neither the trust policy nor the external ID."""
    from keys import kms, sts
    from keys.models import KeyRegistration
    from keys.services.registrations import registration_create
    from keys.services.validation import registration_validate

    settings.PLATFORM_AWS_PRINCIPAL_ARN = "arn:aws:iam::123456789012:role/byok-platform"
    settings.AWS_KMS_ENDPOINT_URL = settings.AWS_STS_ENDPOINT_URL = moto_url
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "platform")  # the platform's own credentials (standard chain)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "platform-secret")
    sts.clear_clients()
    kms.clear_clients()

    items = json.loads(_run("--endpoint-url", moto_url, "--json", "--role", str(environment.public_id)))
    form = RegistrationForm({
        "access_mode": "role", "role_arn": items["Role ARN"], "encrypted_data_key": items["Encrypted Data Key"],
        "kms_key_arn": items["KMS Key ARN"], "region": items["Region code"],
        "encryption_context": items["Encryption context"],
    }, environment=environment)
    assert form.is_valid(), form.errors
    data = form.cleaned_data
    registration = registration_create(
        environment=environment, actor=None, kms_key_arn=data["kms_key_arn"].arn, region=data["region"],
        account_id=data["kms_key_arn"].account_id, encrypted_data_key=data["encrypted_data_key"],
        encryption_context=data["encryption_context"], role_arn=data["role_arn"].arn,
    )
    run = registration_validate(registration_id=registration.pk, trigger="registration")

    assert "Access Key" not in items and "Secret Access Key" not in items
    assert json.loads(items["Encryption context"]) == {"portal:environment": str(environment.public_id)}
    assert KeyRegistration.objects.get(pk=registration.pk).status == KeyRegistration.Status.VALID, run.checks
    iam = _client("iam", moto_url)
    role_name = items["Role ARN"].rsplit("/", 1)[1]
    trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    trust = trust if isinstance(trust, dict) else json.loads(trust)
    assert trust["Statement"][0]["Condition"] == {"StringEquals": {"sts:ExternalId": environment.aws_external_id}}
    sts.clear_clients()
    kms.clear_clients()
