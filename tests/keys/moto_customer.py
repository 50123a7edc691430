"""The customer's AWS side of the seed flow, played against moto (in-process ``mock_aws``
or a ``moto_server`` at ``endpoint_url``), and the registration of its five items.

Used by the validation tests (service, views, browser, worker)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import boto3

REGION = "eu-west-1"
OTHER_REGION = "us-east-1"


@dataclass(frozen=True)
class Customer:
    """What the customer set up in (emulated) AWS: a symmetric KMS key, an encrypted data
    key generated under it, and an IAM user allowed kms:Decrypt + kms:DescribeKey."""

    kms_key_arn: str
    key_id: str
    account_id: str
    region: str
    encrypted_data_key: bytes
    encryption_context: dict
    user_name: str
    access_key_id: str
    secret_access_key: str
    admin_credentials: tuple[str, str]
    endpoint_url: str | None = None

    def kms(self):
        """The customer's own KMS client (its admin user, not the portal's IAM user)."""
        return admin_client("kms", self.region, self.endpoint_url, self.admin_credentials)

    def iam(self):
        return admin_client("iam", "us-east-1", self.endpoint_url, self.admin_credentials)

    def allow(self) -> None:
        """Attach the policy of the setup guide to the IAM user."""
        self.iam().put_user_policy(UserName=self.user_name, PolicyName="byok-portal", PolicyDocument=policy())

    def revoke(self) -> None:
        """Remove the IAM user's policy: KMS (with IAM enforced) then denies every call."""
        self.iam().delete_user_policy(UserName=self.user_name, PolicyName="byok-portal")


def admin_client(service: str, region: str, endpoint_url: str | None = None, credentials=("testing", "testing")):
    return boto3.session.Session(
        aws_access_key_id=credentials[0], aws_secret_access_key=credentials[1], region_name=region
    ).client(service, endpoint_url=endpoint_url)


def policy(actions: tuple[str, ...] = ("kms:Decrypt", "kms:DescribeKey")) -> str:
    """The setup guide's IAM policy. Its resource is "*", not the key ARN: moto's IAM
    simulation checks KMS actions against the resource "*", so a policy scoped to the key
    ARN (what AWS needs) would deny everything there (docs/architecture.md, "Testing KMS honestly")."""
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}],
    })


def set_up_customer(
    *, region: str = REGION, encryption_context: dict | None = None, endpoint_url: str | None = None,
    user_name: str = "byok-portal",
) -> Customer:
    """Create the key, the encrypted data key (``generate-data-key-without-plaintext
    --key-spec AES_256``) and the IAM user with its access key, as the seed document says."""
    kms = admin_client("kms", region, endpoint_url)
    metadata = kms.create_key(Description="byok", KeyUsage="ENCRYPT_DECRYPT", KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]
    params = {"KeyId": metadata["Arn"], "KeySpec": "AES_256"}
    if encryption_context:
        params["EncryptionContext"] = encryption_context
    blob = kms.generate_data_key_without_plaintext(**params)["CiphertextBlob"]
    iam = admin_client("iam", "us-east-1", endpoint_url)
    # The customer's own administrator, for what they do later (revoke, restore) when
    # moto's IAM simulation is on and the default "testing" credentials no longer work.
    iam.create_user(UserName=f"{user_name}-admin")
    iam.put_user_policy(UserName=f"{user_name}-admin", PolicyName="admin", PolicyDocument=policy(("*",)))
    admin_key = iam.create_access_key(UserName=f"{user_name}-admin")["AccessKey"]
    iam.create_user(UserName=user_name)
    iam.put_user_policy(UserName=user_name, PolicyName="byok-portal", PolicyDocument=policy())
    access_key = iam.create_access_key(UserName=user_name)["AccessKey"]
    return Customer(
        kms_key_arn=metadata["Arn"],
        key_id=metadata["KeyId"],
        account_id=metadata["AWSAccountId"],
        region=region,
        encrypted_data_key=blob,
        encryption_context=dict(encryption_context or {}),
        user_name=user_name,
        access_key_id=access_key["AccessKeyId"],
        secret_access_key=access_key["SecretAccessKey"],
        admin_credentials=(admin_key["AccessKeyId"], admin_key["SecretAccessKey"]),
        endpoint_url=endpoint_url,
    )


def register(environment, actor, customer: Customer, **overrides):
    """Register the customer's five items (plus context) through the service."""
    from keys.services.registrations import registration_create

    items = {
        "kms_key_arn": customer.kms_key_arn,
        "region": customer.region,
        "account_id": customer.account_id,
        "encrypted_data_key": customer.encrypted_data_key,
        "encryption_context": customer.encryption_context,
        "access_key_id": customer.access_key_id,
        "secret_access_key": customer.secret_access_key,
    }
    items.update(overrides)
    if "kms_key_arn" in overrides and "account_id" not in overrides:
        items["account_id"] = overrides["kms_key_arn"].split(":")[4]
    return registration_create(environment=environment, actor=actor, **items)
