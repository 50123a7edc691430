"""Play the customer's side of the BYOK set-up against the configured KMS endpoint.

This command stands in for the customer: it creates their KMS key, encrypted data key, IAM
policy, IAM user and access key, exactly as the seed document's steps do with the AWS CLI,
and prints the five items the portal's registration form asks for. It is the one place
besides ``keys/kms.py`` that uses boto3, because it plays the customer, not the platform.
"""

import base64
import json as jsonlib
import secrets

import boto3
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from keys.parsers import iam_policy_json


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
        parser.add_argument("--json", action="store_true", help="Print the five items as one JSON object only.")

    def handle(self, *args, region, endpoint_url, encryption_context, real_aws, **options):
        endpoint_url = endpoint_url or settings.AWS_KMS_ENDPOINT_URL
        if not endpoint_url and not real_aws:
            raise CommandError(
                "No emulator endpoint: set AWS_KMS_ENDPOINT_URL (make run does) or pass --endpoint-url. "
                "To create real resources in your AWS account, pass --real-aws."
            )
        context = _context(encryption_context)
        session = boto3.session.Session(
            aws_access_key_id=None if real_aws else "customer-demo",
            aws_secret_access_key=None if real_aws else "customer-demo-secret",
            region_name=region,
        )
        kms = session.client("kms", endpoint_url=endpoint_url)
        iam = session.client("iam", endpoint_url=endpoint_url)
        quiet = options["json"]
        say = (lambda *_: None) if quiet else self.stdout.write
        suffix = secrets.token_hex(3)

        say(f"1. Creating a symmetric KMS key in {region} (aws kms create-key) …")
        key = kms.create_key(
            Description="BYOK Portal demo key", KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT"
        )["KeyMetadata"]
        arn = key["Arn"]
        kms.create_alias(AliasName=f"alias/byok-demo-{suffix}", TargetKeyId=key["KeyId"])
        say(f"   key ARN {arn} (alias/byok-demo-{suffix})")

        say("2. Generating an encrypted data key (aws kms generate-data-key-without-plaintext --key-spec AES_256) …")
        kwargs = {"KeyId": arn, "KeySpec": "AES_256"}
        if context:
            kwargs["EncryptionContext"] = context
        blob = kms.generate_data_key_without_plaintext(**kwargs)["CiphertextBlob"]
        say(f"   {len(blob)}-byte ciphertext blob")

        say("3. Creating the IAM policy allowing kms:Decrypt and kms:DescribeKey on that key …")
        policy_arn = iam.create_policy(
            PolicyName=f"byok-portal-decrypt-{suffix}", PolicyDocument=iam_policy_json(kms_key_arn=arn)
        )["Policy"]["Arn"]

        say("4. Creating the IAM user with the policy attached, and an access key …")
        user = f"byok-portal-{suffix}"
        iam.create_user(UserName=user)
        iam.attach_user_policy(UserName=user, PolicyArn=policy_arn)
        access_key = iam.create_access_key(UserName=user)["AccessKey"]

        items = {
            "Encrypted Data Key": base64.b64encode(blob).decode("ascii"),
            "Access Key": access_key["AccessKeyId"],
            "Secret Access Key": access_key["SecretAccessKey"],
            "KMS Key ARN": arn,
            "Region code": region,
        }
        if context:
            items["Encryption context"] = _dumps(context)
        if quiet:
            self.stdout.write(_dumps(items))
            return
        say("\nThe five items to paste into the portal's “Register a BYOK key” form:\n")
        width = max(len(k) for k in items)
        for label, value in items.items():
            say(f"  {label.ljust(width)}  {value}")
        say("")


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
