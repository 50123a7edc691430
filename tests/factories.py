"""Factories and helpers of the data-plane tests, shared by tests/keys, tests/worker,
tests/browser and the top-level tests: BYOK key versions made in moto, records written
through the data plane, stored rows tampered with, KMS refusals to patch in.

BYOK keys run against moto in-process (``mock_aws``, the ``aws`` fixture of
tests/conftest.py): the customer's KMS key and encrypted data key are made there, and the
registration row is built directly with sealed IAM credentials, then made active. moto
does not enforce key states, so KMS refusals and throttling are injected by patching
``keys.kms.decrypt`` with the adapter's own error types (docs/architecture.md, "Testing
KMS honestly")."""

from __future__ import annotations

from dataclasses import dataclass

from keys import kms
from keys.clock import now
from keys.models import KeyRegistration, Record, ReencryptionJob
from keys.services import records, reencryption, registrations, sealing
from keys.services.lifecycle import managed_version_create
from keys.services.validation import registration_activate

Status = KeyRegistration.Status
# The key ARN and secret of registrations that never reach KMS (validation views, lifecycle).
ARN = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


REGION = "eu-west-1"


ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"


SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@dataclass
class Byok:
    """A BYOK key version made active in an environment, and what the customer holds."""

    registration: KeyRegistration
    kms_key_arn: str
    encrypted_data_key: bytes
    admin: object  # the customer's KMS client (moto)

    def plaintext_data_key(self) -> bytes:
        """The plaintext data key, as the customer could get it (for canaries only)."""
        return self.admin.decrypt(CiphertextBlob=self.encrypted_data_key, KeyId=self.kms_key_arn)["Plaintext"]


def make_byok(environment, admin, *, encryption_context: dict[str, str] | None = None) -> Byok:
    """GIVEN a KMS key and an encrypted data key made with generate-data-key-without-plaintext
    in moto, register them as the environment's next key version and make it active (the
    previously active version becomes decrypt-only)."""
    metadata = admin.create_key(Description="byok", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    blob = admin.generate_data_key_without_plaintext(
        KeyId=metadata["Arn"], KeySpec="AES_256", **({"EncryptionContext": encryption_context} if encryption_context else {})
    )["CiphertextBlob"]
    current = environment.key_registrations.filter(status=Status.ACTIVE).first()
    if current is not None:
        registrations.registration_transition(registration=current, to=Status.DECRYPT_ONLY, actor_label="test")
    version = (environment.key_registrations.order_by("-version").values_list("version", flat=True).first() or 0) + 1
    registration = KeyRegistration(
        environment=environment,
        version=version,
        kind=KeyRegistration.Kind.BYOK,
        status=Status.ACTIVE,
        kms_key_arn=metadata["Arn"],
        region=REGION,
        account_id=metadata["AWSAccountId"],
        encrypted_data_key=blob,
        encryption_context=encryption_context or {},
        access_key_id_last4=ACCESS_KEY_ID[-4:],
        access_key_id_digest=sealing.access_key_id_digest(ACCESS_KEY_ID),
        activated_at=now(),
    )
    registration.sealed_access_key_id = sealing.seal_field(registration, "sealed_access_key_id", ACCESS_KEY_ID.encode())
    registration.sealed_secret_access_key = sealing.seal_field(
        registration, "sealed_secret_access_key", SECRET_ACCESS_KEY.encode()
    )
    registration.save()
    return Byok(registration, metadata["Arn"], blob, admin)


def active(environment) -> KeyRegistration:
    return environment.key_registrations.get(status=Status.ACTIVE)


def stored(environment, record_key: str) -> Record:
    return Record.objects.get(environment=environment, record_key=record_key)


def tamper(record: Record, at: int = -1) -> None:
    """Flip one bit of a stored ciphertext, in the database."""
    ciphertext = bytearray(bytes(record.ciphertext))
    ciphertext[at] ^= 0x01
    Record.objects.filter(pk=record.pk).update(ciphertext=bytes(ciphertext))


def refuse(reason: str = kms.Reason.DISABLED):
    """A stand-in for kms.decrypt that answers like a revoked KMS key."""

    def decrypt(**kwargs):
        raise kms.KmsPermanentError(reason, operation="Decrypt", message=f"KMS Decrypt failed: {reason}")

    return decrypt


def throttle(**kwargs):
    raise kms.KmsTransientError(kms.Reason.THROTTLED, operation="Decrypt", message="KMS Decrypt failed: throttled")


def put_records(environment, keys: list[str], tag: str = "") -> None:
    """Write ``keys`` under the environment's active version, through the data plane."""
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        records.records_put_batch(environment=environment, records=[(k, {"key": k, "tag": tag, "pad": "x" * 64}) for k in chunk])


def new_managed_version(environment, actor=None, *, activate: bool = True) -> KeyRegistration:
    """A new platform-managed version ("New platform-managed key version"), activated."""
    registration = managed_version_create(environment=environment, actor=actor)
    if activate:
        registration = registration_activate(registration=registration, actor=actor)
    return registration


def plaintexts(environment) -> dict[str, dict]:
    """Every record of the environment, decrypted through the data plane (fails loudly on
    any record that cannot be read)."""
    keys = list(Record.objects.filter(environment=environment).order_by("id").values_list("record_key", flat=True))
    out: dict[str, dict] = {}
    for start in range(0, len(keys), 1000):
        found, errors = records.records_find(environment=environment, record_keys=keys[start:start + 1000])
        assert not errors, errors[:3]
        out.update({r.record_key: r.body for r in found})
    return out


def counts(environment) -> dict[int, int]:
    """Records per key version."""
    result: dict[int, int] = {}
    for version in Record.objects.filter(environment=environment).values_list("key_version", flat=True):
        result[version] = result.get(version, 0) + 1
    return result


def run(job: ReencryptionJob, **kwargs) -> str:
    kwargs.setdefault("throttle_seconds", 0)
    kwargs.setdefault("slice_seconds", None)
    return reencryption.reencryption_run(job_id=job.pk, **kwargs)


def keys(n: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def error_of(response) -> dict:
    assert response["Content-Type"] == "application/json"
    return response.json()["error"]
