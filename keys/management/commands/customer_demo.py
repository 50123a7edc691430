"""Play the customer's side of the BYOK set-up against the configured KMS endpoint.

This command stands in for the customer: it creates their KMS key, encrypted data key, IAM
policy, IAM user and access key, exactly as the seed document's steps do with the AWS CLI,
and prints the five items the portal's registration form asks for, in the form's words. It
is the one place besides the AWS adapters (``keys/aws_clients.py``, ``kms.py``, ``sts.py``)
that uses boto3, because it plays the customer, not the platform.

It refuses to create anything in real AWS (no endpoint, or an ``amazonaws.com`` /
``api.aws`` endpoint) unless ``--real-aws`` is passed: a demo must not leave a KMS key
(billed monthly until deleted) and an IAM user in someone's account by accident.
"""

from __future__ import annotations

import base64
import json as jsonlib
import secrets
import uuid
from pathlib import Path

import boto3
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from environments.models import Environment
from keys.kms import is_aws_endpoint
from keys.parsers import ROLE_POLICY_NAME, environment_encryption_context, iam_policy_json, trust_policy_json

# The five items, in the words of the registration form (keys/forms.py RegistrationForm).
ENCRYPTED_DATA_KEY = "Encrypted Data Key"
ACCESS_KEY = "Access Key"
SECRET_ACCESS_KEY = "Secret Access Key"
KMS_KEY_ARN = "KMS Key ARN"
REGION_CODE = "Region code"
ENCRYPTION_CONTEXT = "Encryption context"
ACCESS_MODE = "How the platform reaches your key"
ROLE_ARN = "Role ARN"


class Command(BaseCommand):
    help = (
        "Create a KMS key, an encrypted data key, a least-privilege IAM policy, an IAM user and an "
        "access key against AWS_KMS_ENDPOINT_URL (the local emulator), and print the five items to paste."
    )

    def add_arguments(self, parser):
        parser.add_argument("--region", default="eu-west-1", help="Region of the KMS key (default eu-west-1).")
        parser.add_argument("--endpoint-url", default=None, help="KMS/IAM endpoint; default AWS_KMS_ENDPOINT_URL.")
        parser.add_argument("--encryption-context", default="", help='Optional JSON object, e.g. {"tenant":"acme"}.')
        parser.add_argument(
            "--real-aws", action="store_true",
            help="Allow running against real AWS with the default credential chain (creates real resources).",
        )
        parser.add_argument(
            "--role", default=None, metavar="ENVIRONMENT_ID",
            help="Role mode (issue 14) for the environment with this public id: a role trusting "
            "PLATFORM_AWS_PRINCIPAL_ARN with that environment's external ID, a permissions policy bound to the "
            "environment's encryption context, and no access key.",
        )
        parser.add_argument("--json", action="store_true", help="Print the five items as one JSON object only.")
        parser.add_argument(
            "--json-file", default=None, metavar="PATH",
            help="Also write the five items as one JSON object to PATH (make run prints them from there).",
        )

    def handle(self, *args, region, endpoint_url, encryption_context, real_aws, json_file, **options):
        endpoint_url = endpoint_url or settings.AWS_KMS_ENDPOINT_URL
        # AWS itself (no endpoint, or an AWS host) is never written to without --real-aws.
        if is_aws_endpoint(endpoint_url) and not real_aws:
            where = f"{endpoint_url} is AWS itself" if endpoint_url else "No emulator endpoint is set"
            raise CommandError(
                f"{where}: this demo creates a KMS key, an IAM policy, an IAM user and an access key, so it "
                "refuses to run against real AWS. Point it at the local emulator (set AWS_KMS_ENDPOINT_URL, as "
                "make run does, or pass --endpoint-url http://127.0.0.1:4566), or pass --real-aws to create "
                "those resources in your AWS account with your default credentials."
            )
        context = _context(encryption_context)
        quiet = options["json"]
        say = (lambda *_: None) if quiet else self.stdout.write
        role_for = _role_environment(options.get("role"))
        if role_for is not None:
            context = environment_encryption_context(role_for.public_id)
        items = self._play_customer(
            say, region=region, endpoint_url=endpoint_url, context=context, real_aws=real_aws, role_for=role_for
        )
        if json_file:
            path = Path(json_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            # The secret access key is in there: readable by its owner only.
            path.touch(mode=0o600, exist_ok=True)
            path.chmod(0o600)
            path.write_text(_dumps(items) + "\n")
        if quiet:
            self.stdout.write(_dumps(items))
            return
        say("\nThe five items to paste into the portal's “Register a BYOK key” form:\n")
        width = max(len(k) for k in items)
        for label, value in items.items():
            say(f"  {label.ljust(width)}  {value}")
        say("")

    def _play_customer(
        self, say, *, region: str, endpoint_url: str | None, context: dict[str, str], real_aws: bool,
        role_for: Environment | None = None,
    ) -> dict[str, str]:
        session = boto3.session.Session(
            aws_access_key_id=None if real_aws else "customer-demo",
            aws_secret_access_key=None if real_aws else "customer-demo-secret",
            region_name=region,
        )
        kms = session.client("kms", endpoint_url=endpoint_url)
        iam = session.client("iam", endpoint_url=endpoint_url)
        suffix = secrets.token_hex(3)
        say(f"Playing the customer's side in AWS against {endpoint_url or 'AWS'} (region {region}):")

        alias = f"alias/byok-demo-{suffix}"
        say(f"1. Creating a symmetric KMS key (aws kms create-key --key-spec SYMMETRIC_DEFAULT "
            f"--key-usage ENCRYPT_DECRYPT) with the alias {alias} …")
        key = kms.create_key(
            Description="BYOK Portal demo key", KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT"
        )["KeyMetadata"]
        arn = key["Arn"]
        kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
        say(f"   key ARN {arn}")

        say("2. Generating an encrypted data key (aws kms generate-data-key-without-plaintext --key-spec AES_256) …")
        kwargs = {"KeyId": arn, "KeySpec": "AES_256"}
        if context:
            kwargs["EncryptionContext"] = context
        blob = kms.generate_data_key_without_plaintext(**kwargs)["CiphertextBlob"]
        say(f"   {len(blob)}-byte ciphertext blob; the plaintext data key never left KMS")

        if role_for is not None:
            return self._play_role(say, iam, role_for, arn=arn, blob=blob, region=region, context=context, suffix=suffix)

        policy_name = f"byok-portal-decrypt-{suffix}"
        say(f"3. Creating the IAM policy {policy_name}: kms:Decrypt and kms:DescribeKey on that key ARN only "
            "(aws iam create-policy) …")
        policy_arn = iam.create_policy(
            PolicyName=policy_name, PolicyDocument=iam_policy_json(kms_key_arn=arn),
            Description="BYOK Portal: decrypt the encrypted data key, describe the KMS key",
        )["Policy"]["Arn"]
        say(f"   policy ARN {policy_arn}")

        user = f"byok-portal-{suffix}"
        say(f"4. Creating the IAM user {user}, attaching the policy and creating an access key "
            "(aws iam create-user, attach-user-policy, create-access-key) …")
        iam.create_user(UserName=user)
        iam.attach_user_policy(UserName=user, PolicyArn=policy_arn)
        access_key = iam.create_access_key(UserName=user)["AccessKey"]
        say(f"   access key {access_key['AccessKeyId']}")

        items = {
            ENCRYPTED_DATA_KEY: base64.b64encode(blob).decode("ascii"),
            ACCESS_KEY: access_key["AccessKeyId"],
            SECRET_ACCESS_KEY: access_key["SecretAccessKey"],
            KMS_KEY_ARN: arn,
            REGION_CODE: region,
        }
        if context:
            items[ENCRYPTION_CONTEXT] = _dumps(context)
        return items


    def _play_role(self, say, iam, environment: Environment, *, arn: str, blob: bytes, region: str,
                   context: dict[str, str], suffix: str) -> dict[str, str]:
        role_name = f"byok-portal-access-{suffix}"
        say(f"3. Creating the role {role_name}: its trust policy lets only {settings.PLATFORM_AWS_PRINCIPAL_ARN} "
            f"assume it, with the external ID {environment.aws_external_id} (aws iam create-role) …")
        trust = trust_policy_json(
            platform_principal_arn=settings.PLATFORM_AWS_PRINCIPAL_ARN, external_id=environment.aws_external_id
        )
        role_arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
        say("4. Attaching the permissions policy: kms:DescribeKey on the key, kms:Decrypt only with this "
            "environment's encryption context (aws iam put-role-policy) …")
        iam.put_role_policy(
            RoleName=role_name, PolicyName=ROLE_POLICY_NAME,
            PolicyDocument=iam_policy_json(kms_key_arn=arn, encryption_context=context),
        )
        say(f"   role ARN {role_arn}")
        return {
            ACCESS_MODE: "IAM role (recommended)",
            ENCRYPTED_DATA_KEY: base64.b64encode(blob).decode("ascii"),
            ROLE_ARN: role_arn,
            KMS_KEY_ARN: arn,
            REGION_CODE: region,
            ENCRYPTION_CONTEXT: _dumps(context),
        }


def _role_environment(public_id: str | None) -> Environment | None:
    if public_id is None:
        return None
    if not settings.PLATFORM_AWS_PRINCIPAL_ARN:
        raise CommandError("--role needs PLATFORM_AWS_PRINCIPAL_ARN: the principal the role's trust policy names.")
    environment = Environment.objects.filter(public_id=public_id).first() if _is_uuid(public_id) else None
    if environment is None:
        raise CommandError(f"--role: no environment with the public id {public_id!r} (see its page's address).")
    return environment


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _context(text: str) -> dict[str, str]:
    if not text:
        return {}
    try:
        value = jsonlib.loads(text)
    except ValueError as e:
        raise CommandError(f"--encryption-context must be a JSON object: {e}") from e
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise CommandError("--encryption-context must be a JSON object of strings.")
    return value


def _dumps(value) -> str:
    return jsonlib.dumps(value)
