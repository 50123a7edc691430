"""BYOK validation diagnosis: is a key registration usable, and if not, why?

Pure: no ORM, no settings. :func:`diagnose` calls KMS through :mod:`keys.kms`
(DescribeKey, Decrypt and, optionally, a GenerateDataKey dry run) and returns a
:class:`Diagnosis`: every check, always the same ones in the same order
(:data:`CHECKS`), each with a plain-language cause and, unless it passed, a
remedy the customer's admin can act on. The caller stores it; nothing here
changes state.

The rules come from docs/architecture.md ("Registration and validation") and the AWS KMS API
reference: https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html,
https://docs.aws.amazon.com/kms/latest/APIReference/API_DescribeKey.html and
key states: https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from keys import kms, parsers, sts
from keys.kms import KeyDescription, KmsCredentials, KmsError, Reason
from keys.sts import Reason as StsReason
from keys.sts import StsError

__all__ = ["CHECKS", "ROLE_CHECKS", "CheckResult", "Diagnosis", "RoleAccess", "diagnose"]

Status = Literal["pass", "fail", "warn", "skip"]
Outcome = Literal["passed", "failed", "unverified"]

PASS: Status = "pass"
FAIL: Status = "fail"
WARN: Status = "warn"
SKIP: Status = "skip"

DATA_KEY_BYTES = 32  # AES-256, what --key-spec AES_256 gives

# Stable check ids (stored, shown, tested) and their labels, in running order.
CHECKS: tuple[tuple[str, str], ...] = (
    ("registration.region", "Region matches the key ARN"),
    ("describe_key.call", "DescribeKey succeeds with these credentials"),
    ("describe_key.state", "Key state is Enabled"),
    ("describe_key.usage", "Key usage is ENCRYPT_DECRYPT"),
    ("describe_key.spec", "Key spec is SYMMETRIC_DEFAULT"),
    ("describe_key.manager", "Key is a customer managed key"),
    ("describe_key.origin", "Origin of the key material"),
    ("describe_key.arn", "Key ARN matches the registered ARN"),
    ("describe_key.account", "Key account matches the registered account"),
    ("decrypt.call", "Decrypt of the encrypted data key succeeds"),
    ("decrypt.plaintext_size", "Data key is 256 bits (32 bytes)"),
    ("decrypt.key_id", "Decrypt used the registered key"),
    ("decrypt.algorithm", "Encryption algorithm is SYMMETRIC_DEFAULT"),
    ("policy.excess_privilege", "Credentials allow only kms:Decrypt and kms:DescribeKey"),
)
# Role mode (issue 14): the same checks, with AssumeRole first; the KMS checks run
# with the role's temporary credentials.
ROLE_CHECKS: tuple[tuple[str, str], ...] = (
    CHECKS[0],
    ("sts.assume_role", "AssumeRole succeeds with this environment's external ID"),
    *CHECKS[1:],
)
_LABELS = dict(ROLE_CHECKS)

def _revalidation_minutes() -> int:
    return max(1, round(settings.REVALIDATION_INTERVAL_SECONDS / 60))


def _retry_remedy() -> str:
    """What to do about a platform-side failure, saying when the platform tries again.

    With a worker (``CELERY_BROKER_URL`` set): the validation job's retries (keys.tasks:
    about 2, 4, 8, 16 s with jitter, under a minute in all) and the periodic re-validation
    of versions in service. Without one (``CELERY_TASK_ALWAYS_EAGER``, the embedded default
    of ``make run``) a validation is one attempt inside the web request and nothing runs
    later by itself, so the text says only what is true there: "Validate again"."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return (
            "Nothing to change on your side: try “Validate again” in a moment. This portal runs without a "
            "background worker, so it does not try again by itself."
        )
    minutes = _revalidation_minutes()
    return (
        "Nothing to change on your side: the platform tries again within about a minute, and re-validates "
        f"every key version in service every {minutes} min; “Validate again” tries at once."
    )



def _platform_remedy() -> str:
    """What to do when STS refused the platform's own credentials: nothing on the customer's
    side; when the platform tries again (as :func:`_retry_remedy`: a version that is not in
    service is not re-validated periodically, and without a worker nothing runs by itself)."""
    text = "Nothing to change on your side: the platform's operators have to renew the platform's own AWS credentials. "
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return text + (
            "Then press “Validate again”: this portal runs without a background worker, so it does not try "
            "again by itself."
        )
    return text + (
        f"Then “Validate again” tries at once; key versions in service are also re-validated every "
        f"{_revalidation_minutes()} min."
    )

@dataclass(frozen=True)
class CheckResult:
    """One check of a diagnosis.

    ``name`` is a stable id from :data:`CHECKS`; ``status`` is pass, fail,
    warn (works, but the admin should know) or skip (not checked); ``remedy``
    is empty for pass. ``reason`` is the machine reason of a failure (a
    :class:`keys.kms.Reason` value or a check-specific one such as
    ``wrong_key_usage``); ``transient`` marks a failure that a retry may clear.
    """

    name: str
    label: str
    status: Status
    aws_error_code: str | None = None
    cause: str = ""
    remedy: str = ""
    reason: str | None = None
    transient: bool = False


@dataclass(frozen=True)
class Diagnosis:
    """The result of :func:`diagnose`.

    ``outcome`` is "unverified" when any check hit a transient error (never
    "failed" then: throttling or an outage is not the customer's mistake),
    else "failed" when any check failed, else "passed". ``failure_reason`` is
    the reason of the first transient check when unverified, of the first
    failed check when failed, None when passed.
    """

    outcome: Outcome
    checks: tuple[CheckResult, ...]
    failure_reason: str | None
    transient: bool

    def check(self, name: str) -> CheckResult:
        """The check with this name (KeyError if unknown)."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)


@dataclass(frozen=True)
class RoleAccess:
    """Role mode: what AssumeRole is called with, and what its texts quote.

    ``platform_principal_arn`` is the ARN the trust policy must name (setting
    ``PLATFORM_AWS_PRINCIPAL_ARN``); ``sts_endpoint_url`` is None for AWS.
    """

    role_arn: str
    external_id: str
    session_name: str
    platform_principal_arn: str
    duration_seconds: int = sts.DEFAULT_DURATION_SECONDS
    sts_endpoint_url: str | None = None

    @property
    def role_name(self) -> str:
        return self.role_arn.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class _Registration:
    """What the checks compare against, and what the texts quote."""

    kms_key_arn: str
    region: str
    account_id: str
    encryption_context: dict[str, str] | None = None
    grantee: str = "the IAM policy of this user"

    @property
    def has_encryption_context(self) -> bool:
        return bool(self.encryption_context)

    @property
    def policy(self) -> str:
        """The setup guide's permissions policy for this key and encryption context
        (``parsers.iam_policy_json``: with a context, Decrypt carries its
        ``kms:EncryptionContext:<key>`` condition), on one line."""
        return json.dumps(json.loads(
            parsers.iam_policy_json(kms_key_arn=self.kms_key_arn, encryption_context=self.encryption_context or None)
        ))

    @property
    def generate_command(self) -> str:
        command = (
            f"aws kms generate-data-key-without-plaintext --key-id {self.kms_key_arn} "
            f"--key-spec AES_256 --region {self.region}"
        )
        if self.has_encryption_context:
            command += " --encryption-context <the same context>"
        return command


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------


@sensitive_variables("credentials")
def diagnose(
    *,
    kms_key_arn: str,
    region: str,
    account_id: str,
    encrypted_data_key: bytes,
    encryption_context: dict[str, str] | None,
    credentials: KmsCredentials | None,
    endpoint_url: str | None = None,
    check_excess_privilege: bool = True,
    role: RoleAccess | None = None,
    options: kms.KmsClientOptions = kms.DEFAULT_OPTIONS,
) -> Diagnosis:
    """Check a BYOK registration against KMS and explain every problem found.

    Calls DescribeKey (``KeyId`` = the ARN), then Decrypt of
    ``encrypted_data_key`` with ``KeyId`` = the ARN and the encryption context,
    then, if asked and Decrypt worked, a GenerateDataKey dry run to detect
    over-broad credentials. Decrypt is tried even when DescribeKey fails: a
    policy may allow kms:Decrypt but not kms:DescribeKey, and the admin should
    learn both facts at once. The plaintext data key is zeroed as soon as its
    size is checked.

    In role mode (``role`` given, ``credentials`` None) STS AssumeRole comes
    first, with the role ARN, the external ID, the session name and duration;
    the KMS checks then run with the temporary credentials it returned (used
    for this diagnosis only, never stored), and are skipped when it fails.

    ``options`` are the timeouts (seconds) and attempts of every KMS call, and of the
    AssumeRole call (the same numbers); validation inside a web request passes short ones.

    Returns a :class:`Diagnosis` with one :class:`CheckResult` per entry of
    :data:`CHECKS` (:data:`ROLE_CHECKS` in role mode), in that order. Raises
    nothing for KMS or STS errors (they become checks); programming errors propagate.
    """
    registration = _Registration(
        kms_key_arn=kms_key_arn,
        region=region,
        account_id=account_id,
        encryption_context=encryption_context,
        grantee="the IAM policy of this user" if role is None else "the permissions policy of the role",
    )
    checks = [_check_region(registration)]
    if role is not None:
        assumed, credentials = _assume_role_check(role, region, options)
        checks.append(assumed)
        if credentials is None:
            skipped = [_skip(n, "Not checked: AssumeRole did not succeed.") for n, _label in CHECKS[1:]]
            return _conclude(checks + skipped)
    assert credentials is not None, "diagnose needs credentials or a role"
    call = {"region": region, "credentials": credentials, "endpoint_url": endpoint_url, "options": options}
    checks += _describe_checks(registration, call)
    checks += _decrypt_checks(registration, call, encrypted_data_key, encryption_context)
    decrypted = next(c for c in checks if c.name == "decrypt.call").status == PASS
    checks.append(
        _excess_privilege_check(registration, call, requested=check_excess_privilege, decrypted=decrypted)
    )
    return _conclude(checks)


def _conclude(checks: list[CheckResult]) -> Diagnosis:
    transient = [c for c in checks if c.transient]
    failed = [c for c in checks if c.status == FAIL]
    refused = [c for c in failed if c.name == "decrypt.call" and not c.transient]
    if any(c.name == "describe_key.state" and c.transient for c in checks):
        refused = []  # a key still being created or updated explains the refusal
    # A definite Decrypt refusal wins over a transient error elsewhere: a key whose Decrypt
    # answers DisabledException is revoked even if DescribeKey was throttled in the same run.
    if refused:
        return Diagnosis("failed", tuple(checks), next(c for c in failed if not c.transient).reason, False)
    if transient:
        return Diagnosis("unverified", tuple(checks), transient[0].reason, True)
    if failed:
        return Diagnosis("failed", tuple(checks), failed[0].reason, False)
    return Diagnosis("passed", tuple(checks), None, False)


def _result(name: str, status: Status, cause: str, remedy: str = "", **extra: object) -> CheckResult:
    return CheckResult(name=name, label=_LABELS[name], status=status, cause=cause, remedy=remedy, **extra)


def _fail(name: str, reason: str, cause: str, remedy: str) -> CheckResult:
    return _result(name, FAIL, cause, remedy, reason=reason)


def _skip(name: str, cause: str) -> CheckResult:
    return _result(name, SKIP, cause)


# ---------------------------------------------------------------------------
# Region (no AWS call)
# ---------------------------------------------------------------------------


def _check_region(registration: _Registration) -> CheckResult:
    name = "registration.region"
    parts = registration.kms_key_arn.split(":")
    if len(parts) < 6 or parts[0] != "arn" or parts[2] != "kms":
        return _fail(
            name,
            Reason.INVALID_ARN,
            "The registered key ARN is not a KMS key ARN.",
            "Copy the key ARN from the KMS console: arn:aws:kms:REGION:ACCOUNT:key/KEY-ID.",
        )
    arn_region = parts[3]
    if arn_region != registration.region:
        return _fail(
            name,
            "region_mismatch",
            f"The key ARN is in region {arn_region}, but the registration says {registration.region}: "
            f"the platform would look for the key in the wrong region.",
            f"Register the region of the key, {arn_region}.",
        )
    return _result(name, PASS, f"The key ARN and the registration both say {arn_region}.")


# ---------------------------------------------------------------------------
# DescribeKey
# ---------------------------------------------------------------------------

_DESCRIBE_ATTRIBUTE_CHECKS = (
    "describe_key.state",
    "describe_key.usage",
    "describe_key.spec",
    "describe_key.manager",
    "describe_key.origin",
    "describe_key.arn",
    "describe_key.account",
)


def _describe_checks(registration: _Registration, call: dict) -> list[CheckResult]:
    try:
        description = kms.describe_key(key_id=registration.kms_key_arn, **call)
    except KmsError as e:
        skipped = [_skip(n, "Not checked: DescribeKey did not succeed.") for n in _DESCRIBE_ATTRIBUTE_CHECKS]
        return [_error_check("describe_key.call", e, registration), *skipped]
    return [
        _result("describe_key.call", PASS, "KMS described the key to these credentials."),
        _check_state(description, registration),
        _check_usage(description),
        _check_spec(description),
        _check_manager(description),
        _check_origin(description),
        _check_arn(description, registration),
        _check_account(description, registration),
    ]


def _check_state(description: KeyDescription, registration: _Registration) -> CheckResult:
    name = "describe_key.state"
    state = description.key_state
    arn, region = registration.kms_key_arn, registration.region
    if state == "Enabled":
        return _result(name, PASS, "The key is enabled.")
    if state == "Disabled":
        return _fail(name, Reason.DISABLED, *_STATE_TEXTS[Reason.DISABLED](arn, region))
    if state in ("PendingDeletion", "PendingReplicaDeletion"):
        return _fail(name, Reason.PENDING_DELETION, *_pending_deletion_texts(description, arn, region))
    if state == "PendingImport":
        return _fail(name, Reason.PENDING_IMPORT, *_STATE_TEXTS[Reason.PENDING_IMPORT](arn, region))
    if state == "Unavailable":
        return _fail(name, Reason.UNAVAILABLE_STATE, *_STATE_TEXTS[Reason.UNAVAILABLE_STATE](arn, region))
    if state in ("Creating", "Updating"):
        # Both are short transitions (a multi-Region replica being created, a
        # primary Region being changed): try again rather than fail.
        return _result(
            name,
            FAIL,
            f"The key is still {state.lower()} (a multi-Region key being set up or changed); "
            "KMS cannot use it yet.",
            _retry_remedy(),
            reason=f"key_{state.lower()}",
            transient=True,
        )
    return _fail(
        name,
        Reason.UNAVAILABLE_STATE,
        f"The key state is {state or 'unknown'}, not Enabled.",
        "Make the key Enabled in the KMS console, then validate again.",
    )


def _pending_deletion_texts(description: KeyDescription, arn: str, region: str) -> tuple[str, str]:
    when = _date(description.deletion_date)
    replica = "This multi-Region replica key" if description.key_state == "PendingReplicaDeletion" else "Key"
    cause = (
        f"{replica} is scheduled for deletion{' on ' + when if when else ''}: KMS refuses to decrypt with it, "
        "and once it is deleted every record encrypted under it is lost for good."
    )
    return cause, _STATE_TEXTS[Reason.PENDING_DELETION](arn, region)[1]


def _date(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d") if moment else ""


# Cause and remedy for the key states KMS refuses to decrypt with, shared by
# the state check and by Decrypt's DisabledException / KMSInvalidStateException.
_STATE_TEXTS = {
    Reason.DISABLED: lambda arn, region: (
        "The KMS key is disabled: KMS refuses to decrypt with it.",
        f"Enable the key in the KMS console (Key actions → Enable) or with "
        f"aws kms enable-key --key-id {arn} --region {region}, then validate again.",
    ),
    Reason.PENDING_DELETION: lambda arn, region: (
        "The KMS key is scheduled for deletion: KMS refuses to decrypt with it.",
        f"Cancel the deletion in the KMS console (or aws kms cancel-key-deletion --key-id {arn} "
        f"--region {region}), enable the key (a key whose deletion was cancelled stays disabled), "
        "then validate again.",
    ),
    Reason.PENDING_IMPORT: lambda arn, region: (
        "The key has no key material: it was created for imported key material (origin EXTERNAL) "
        "and the material was never imported, has expired, or was deleted.",
        f"Import the same key material again (aws kms import-key-material --key-id {arn} "
        f"--region {region}), then validate again.",
    ),
    Reason.UNAVAILABLE_STATE: lambda arn, region: (
        "The key is in a state KMS cannot use; most often its custom key store is disconnected.",
        "Check the key's state in the KMS console; for a key in a custom key store, connect the key "
        "store (Custom key stores → Connect). Then validate again.",
    ),
}

_NEW_SYMMETRIC_KEY = (
    "Create a symmetric encryption key (key type Symmetric, key usage Encrypt and decrypt), "
    "generate the encrypted data key with it, and register its ARN."
)


def _check_usage(description: KeyDescription) -> CheckResult:
    name = "describe_key.usage"
    if description.key_usage == "ENCRYPT_DECRYPT":
        return _result(name, PASS, "The key is for encryption and decryption.")
    if not description.key_usage:
        # moto omits KeyUsage for a key created without one (AWS always sends
        # it); CreateKey's default is ENCRYPT_DECRYPT, and Decrypt below proves it.
        return _result(
            name,
            PASS,
            "KMS did not report the key usage; ENCRYPT_DECRYPT is the default, and the Decrypt check "
            "below confirms it.",
        )
    return _fail(
        name,
        "wrong_key_usage",
        f"The key usage is {description.key_usage or 'unknown'}: this key cannot encrypt or decrypt data keys.",
        _NEW_SYMMETRIC_KEY,
    )


def _check_spec(description: KeyDescription) -> CheckResult:
    name = "describe_key.spec"
    if description.key_spec == "SYMMETRIC_DEFAULT":
        return _result(name, PASS, "The key is a symmetric encryption key.")
    return _fail(
        name,
        "wrong_key_spec",
        f"The key spec is {description.key_spec or 'unknown'}; data keys can only be generated and "
        "decrypted with a symmetric encryption key (SYMMETRIC_DEFAULT).",
        _NEW_SYMMETRIC_KEY,
    )


def _check_manager(description: KeyDescription) -> CheckResult:
    name = "describe_key.manager"
    if description.key_manager == "CUSTOMER":
        return _result(name, PASS, "The key is a customer managed key.")
    return _fail(
        name,
        "aws_managed_key",
        "This is an AWS managed key (alias aws/…): only AWS services can use it, and you cannot change "
        "its key policy, disable it or otherwise revoke the platform's access.",
        "Create a customer managed key in KMS, generate the encrypted data key with it, and register its ARN.",
    )


_ORIGIN_WARNINGS = {
    "EXTERNAL": (
        "The key uses imported key material. If the material expires or is deleted, the key becomes "
        "unusable (PendingImport) and this environment's records cannot be decrypted until the same "
        "material is imported again.",
        "Keep a secure copy of the key material and import it without an expiration date, "
        "or re-import it before it expires.",
    ),
    "AWS_CLOUDHSM": (
        "The key is in an AWS CloudHSM key store{store}. If the key store is disconnected or its "
        "cluster has no active HSM, KMS cannot decrypt and this environment stops serving data.",
        "Keep the key store connected and at least two HSMs active in its cluster.",
    ),
    "EXTERNAL_KEY_STORE": (
        "The key is in an external key store{store}. Every decryption depends on your external key "
        "manager and its proxy being reachable from AWS.",
        "Make the external key store proxy highly available; the platform's data-key cache only "
        "rides out short outages.",
    ),
}


def _check_origin(description: KeyDescription) -> CheckResult:
    name = "describe_key.origin"
    if description.origin == "AWS_KMS":
        return _result(name, PASS, "KMS generated and holds the key material.")
    store = f" ({description.custom_key_store_id})" if description.custom_key_store_id else ""
    cause, remedy = _ORIGIN_WARNINGS.get(
        description.origin,
        (
            f"The key material origin is {description.origin or 'unknown'}, which the portal does not know.",
            "Check that this key is meant to be used for long-lived data.",
        ),
    )
    return _result(name, WARN, cause.format(store=store), remedy)


def _check_arn(description: KeyDescription, registration: _Registration) -> CheckResult:
    name = "describe_key.arn"
    if description.arn == registration.kms_key_arn:
        return _result(name, PASS, "KMS reports the registered ARN for this key.")
    alias = ""
    if ":alias/" in registration.kms_key_arn:
        alias = " An alias ARN was registered; the portal needs the key ARN."
    return _fail(
        name,
        "arn_mismatch",
        f"KMS describes this key as {description.arn}, not as the registered {registration.kms_key_arn}.{alias}",
        f"Register the key ARN exactly as KMS shows it: {description.arn}",
    )


def _check_account(description: KeyDescription, registration: _Registration) -> CheckResult:
    name = "describe_key.account"
    if description.account_id == registration.account_id:
        return _result(name, PASS, f"The key belongs to account {registration.account_id}.")
    return _fail(
        name,
        "account_mismatch",
        f"The key belongs to AWS account {description.account_id}, not to the registered account "
        f"{registration.account_id}.",
        "Register a key of the registered account, or register the key's own ARN and account.",
    )


# ---------------------------------------------------------------------------
# Decrypt
# ---------------------------------------------------------------------------

_DECRYPT_DEPENDENT_CHECKS = ("decrypt.plaintext_size", "decrypt.key_id", "decrypt.algorithm")


@sensitive_variables("call", "result")
def _decrypt_checks(
    registration: _Registration,
    call: dict,
    encrypted_data_key: bytes,
    encryption_context: dict[str, str] | None,
) -> list[CheckResult]:
    try:
        result = kms.decrypt(
            kms_key_arn=registration.kms_key_arn,
            ciphertext_blob=encrypted_data_key,
            encryption_context=encryption_context,
            **call,
        )
    except KmsError as e:
        skipped = [_skip(n, "Not checked: Decrypt did not succeed.") for n in _DECRYPT_DEPENDENT_CHECKS]
        return [_error_check("decrypt.call", e, registration), *skipped]
    try:
        size = len(result.plaintext)
    finally:
        # The validation only needs the size; the plaintext data key must not
        # outlive this line (docs/architecture.md, "Invariants", 2).
        result.wipe()
    return [
        _result("decrypt.call", PASS, "KMS decrypted the encrypted data key with the registered key."),
        _check_size(size, registration),
        _check_returned_key(result.key_id, registration),
        _check_algorithm(result.encryption_algorithm),
    ]


def _check_size(size: int, registration: _Registration) -> CheckResult:
    name = "decrypt.plaintext_size"
    if size == DATA_KEY_BYTES:
        return _result(name, PASS, "The data key is 256 bits long.")
    return _fail(
        name,
        "wrong_data_key_size",
        f"The data key is {size} bytes ({size * 8} bits); the portal needs a 256-bit (32-byte) AES data key.",
        f"Generate the encrypted data key with --key-spec AES_256: {registration.generate_command}",
    )


def _check_returned_key(key_id: str, registration: _Registration) -> CheckResult:
    name = "decrypt.key_id"
    if key_id == registration.kms_key_arn:
        return _result(name, PASS, "KMS decrypted with the registered key.")
    return _fail(
        name,
        "key_id_mismatch",
        f"KMS decrypted with {key_id or 'an unnamed key'}, not with the registered {registration.kms_key_arn}.",
        f"Register the key ARN that KMS used ({key_id}), or generate the encrypted data key with the "
        f"registered key: {registration.generate_command}",
    )


def _check_algorithm(algorithm: str | None) -> CheckResult:
    name = "decrypt.algorithm"
    if algorithm is None:
        return _result(
            name, SKIP, "KMS did not report the algorithm (some KMS emulators do not); nothing to check."
        )
    if algorithm == "SYMMETRIC_DEFAULT":
        return _result(name, PASS, "KMS used symmetric encryption (SYMMETRIC_DEFAULT).")
    return _fail(
        name,
        "wrong_algorithm",
        f"KMS used the {algorithm} algorithm; the portal expects SYMMETRIC_DEFAULT.",
        _NEW_SYMMETRIC_KEY,
    )


# ---------------------------------------------------------------------------
# Excess privilege
# ---------------------------------------------------------------------------


def _excess_privilege_check(
    registration: _Registration, call: dict, *, requested: bool, decrypted: bool
) -> CheckResult:
    name = "policy.excess_privilege"
    if not requested:
        return _skip(
            name,
            "Not checked: this platform does not test for extra permissions. Make sure the IAM policy allows only "
            "kms:Decrypt and kms:DescribeKey.",
        )
    if not decrypted:
        return _skip(name, "Not checked: Decrypt did not succeed.")
    try:
        allowed = kms.generate_data_key_allowed(kms_key_arn=registration.kms_key_arn, **call)
    except KmsError as e:
        # Advisory only: a failed probe does not make the registration unusable.
        cause = f"Could not be checked: {_REASON_CAUSES_SHORT.get(e.reason, e.reason)}."
        return _result(name, SKIP, cause, aws_error_code=e.code)
    if not allowed:
        return _result(name, PASS, "kms:GenerateDataKey is denied to these credentials, as it should be.")
    if not kms.is_aws_endpoint(call["endpoint_url"]):
        # An emulator (AWS_KMS_ENDPOINT_URL, e.g. moto) may allow every call whatever the
        # policy says: its "allowed" tells nothing about a correctly scoped policy.
        return _skip(
            name,
            "Cannot be judged here: this KMS endpoint is an emulator that does not enforce IAM policies, so "
            "it allows every call. AWS KMS itself runs this check.",
        )
    return _result(
        name,
        WARN,
        "These credentials can also call kms:GenerateDataKey; the portal needs only kms:Decrypt and "
        "kms:DescribeKey.",
        f"Narrow the IAM policy to this one (the setup guide's): {registration.policy}",
    )


# ---------------------------------------------------------------------------
# KMS errors as checks
# ---------------------------------------------------------------------------

_REASON_CAUSES_SHORT = {
    Reason.THROTTLED: "KMS throttled the request",
    Reason.INTERNAL: "KMS had an internal error",
    Reason.TIMEOUT: "KMS did not answer in time",
    Reason.NETWORK: "KMS could not be reached",
    Reason.CLOCK_SKEW: "the platform's clock is off (clock skew)",
    Reason.KEY_UNAVAILABLE: "the key was temporarily unavailable",
    Reason.EXPIRED_TOKEN: "the temporary credentials expired",
}


def _error_check(name: str, error: KmsError, registration: _Registration) -> CheckResult:
    cause, remedy = _error_texts(error, registration)
    return _result(
        name,
        FAIL,
        cause,
        remedy,
        aws_error_code=error.code,
        reason=error.reason,
        transient=not error.permanent,
    )


def _error_texts(error: KmsError, registration: _Registration) -> tuple[str, str]:
    arn, region = registration.kms_key_arn, registration.region
    reason, operation = error.reason, error.operation
    if reason in _STATE_TEXTS:
        return _STATE_TEXTS[reason](arn, region)
    if reason == Reason.ACCESS_DENIED:
        return _access_denied_texts(operation, registration)
    if reason == Reason.INCORRECT_KEY:
        return _incorrect_key_texts(error, registration)
    if reason in _TRANSIENT_TEXTS:
        return _TRANSIENT_TEXTS[reason].format(region=region), _retry_remedy()
    if reason in _PERMANENT_TEXTS:
        cause, remedy = _PERMANENT_TEXTS[reason]
        return cause.format(arn=arn, region=region), remedy.format(arn=arn, region=region)
    return error.message, "Validate again; if it keeps failing, contact support with the error code."


def _access_denied_texts(operation: str, registration: _Registration) -> tuple[str, str]:
    action = f"kms:{operation}"
    cause = f"AWS denied {action} on this key to these credentials."
    if operation == "DescribeKey":
        remedy = (
            f'Allow "kms:DescribeKey" on the resource "{registration.kms_key_arn}" in {registration.grantee}, '
            f"then validate again. The setup guide's policy: {registration.policy}"
        )
    else:
        remedy = (
            f'Allow "{action}" on the resource "{registration.kms_key_arn}" in {registration.grantee} '
            f"(the setup guide's policy: {registration.policy}), check that the key policy lets this account's "
            "IAM policies grant it, then validate again."
        )
    return cause, remedy


def _incorrect_key_texts(error: KmsError, registration: _Registration) -> tuple[str, str]:
    # AWS says IncorrectKeyException; moto says AccessDeniedException (see kms.classify).
    also = "" if error.code == "IncorrectKeyException" else " (or under a key these credentials cannot use)"
    return (
        f"The encrypted data key was generated under another KMS key{also}, not under "
        f"{registration.kms_key_arn}.",
        f"Generate the encrypted data key with the registered key and register its CiphertextBlob: "
        f"{registration.generate_command} - or register the ARN of the key you generated it with.",
    )


_TRANSIENT_TEXTS = {
    Reason.THROTTLED: "KMS throttled the request: this account's KMS request quota was exceeded for a moment.",
    Reason.INTERNAL: (
        "KMS had an internal error (InternalFailure, KMSInternalException), was unavailable "
        "(ServiceUnavailable) or one of its dependencies timed out."
    ),
    Reason.EXPIRED_TOKEN: (
        "KMS refused the role's temporary credentials because their security token expired "
        "(ExpiredTokenException). The platform assumes the role again for the next attempt; "
        "this is not a problem with your AWS set-up."
    ),
    Reason.TIMEOUT: "KMS in {region} did not answer within the time limit.",
    Reason.NETWORK: "The platform could not reach KMS in {region} (network error: KMS unreachable).",
    Reason.CLOCK_SKEW: (
        "AWS rejected the request as expired (an expired signature or RequestExpired): the platform's "
        "clock differs from AWS time by more than 5 minutes (clock skew), or the request was delayed "
        "too long. This is not a problem with your AWS set-up."
    ),
    Reason.KEY_UNAVAILABLE: (
        "KMS reported the key as temporarily unavailable (for a key in a custom key store: the key "
        "store, its HSMs or its proxy could not be reached)."
    ),
}

_PERMANENT_TEXTS = {
    Reason.INVALID_CREDENTIALS: (
        "AWS does not recognise the access key ID: it is unknown or was deleted.",
        "Create a new access key for the IAM user and replace the credentials in the portal.",
    ),
    Reason.BAD_SIGNATURE: (
        "The secret access key is wrong: AWS knows the access key ID, but the request signature "
        "made with the secret does not match.",
        "Enter the secret access key that belongs to this access key ID again, or create a new "
        "access key and replace both.",
    ),
    Reason.INCOMPLETE_SIGNATURE: (
        "AWS refused the request because its signature is incomplete (IncompleteSignature): the "
        "platform sent a malformed request. This is a problem on the platform's side, not in your "
        "AWS account.",
        "Nothing to change on your side; if it persists, contact support with the error code.",
    ),
    Reason.OPT_IN_REQUIRED: (
        "AWS answered OptInRequired: the AWS account of these credentials has not enabled region "
        "{region}, which is an opt-in Region, so KMS there refuses its requests.",
        "Enable region {region} for the account (AWS console → Account → AWS Regions → Enable, or "
        "aws account enable-region --region-name {region}), wait until it shows Enabled, then "
        "validate again.",
    ),
    Reason.NOT_FOUND: (
        "KMS has no key {arn} in region {region} that these credentials can see.",
        "Check the key ARN and the region: the key must exist in {region}, in the IAM user's account "
        "(or its key policy must allow that account). If the key was deleted, register a new key.",
    ),
    Reason.INVALID_CIPHERTEXT: (
        "KMS could not decrypt the encrypted data key: the blob is corrupted or the encryption context "
        "differs - the context you entered must be exactly the one used with "
        "generate-data-key-without-plaintext.",
        "Paste the CiphertextBlob again exactly as the CLI printed it, and enter the same encryption "
        "context (same keys and values, case-sensitive), or none if you used none.",
    ),
    Reason.INVALID_KEY_USAGE: (
        "KMS refused: this key cannot decrypt data keys (its key usage is not ENCRYPT_DECRYPT, or it "
        "is not a symmetric key).",
        _NEW_SYMMETRIC_KEY,
    ),
    Reason.INVALID_ARN: (
        "KMS says the key ARN {arn} is not valid.",
        "Copy the key ARN from the KMS console: arn:aws:kms:REGION:ACCOUNT:key/KEY-ID "
        "(aliases are not accepted).",
    ),
    Reason.VALIDATION: (
        "KMS rejected the request as malformed (for example an empty or truncated encrypted data key).",
        "Check the key ARN and paste the encrypted data key again, then validate again.",
    ),
}


# ---------------------------------------------------------------------------
# STS AssumeRole (role mode)
# ---------------------------------------------------------------------------


@sensitive_variables("temporary")
def _assume_role_check(
    role: RoleAccess, region: str, options: kms.KmsClientOptions
) -> tuple[CheckResult, KmsCredentials | None]:
    name = "sts.assume_role"
    try:
        temporary = sts.assume_role(
            role_arn=role.role_arn,
            external_id=role.external_id,
            session_name=role.session_name,
            region=region,
            duration_seconds=role.duration_seconds,
            endpoint_url=role.sts_endpoint_url,
            options=options,  # the same ClientOptions (keys.aws_clients)
        )
    except StsError as e:
        cause, remedy = _sts_error_texts(e, role, region)
        check = _result(
            name, FAIL, cause, remedy, aws_error_code=e.code, reason=e.reason, transient=not e.permanent
        )
        return check, None
    cause = (
        f"The platform assumed {role.role_arn} with this environment's external ID "
        f"(session {role.session_name}, {role.duration_seconds // 60} minutes)."
    )
    return _result(name, PASS, cause), temporary.kms_credentials()


def _sts_error_texts(error: StsError, role: RoleAccess, region: str) -> tuple[str, str]:
    texts = _STS_TEXTS.get(error.reason)
    if texts is None:
        return error.message, "Validate again; if it keeps failing, contact support with the error code."
    values = {
        "role_arn": role.role_arn,
        "role_name": role.role_name,
        "principal": role.platform_principal_arn or "(the platform principal is not configured)",
        "external_id": role.external_id,
        "duration": role.duration_seconds,
        "region": region,
        "account": role.role_arn.split(":")[4] if role.role_arn.count(":") >= 5 else "",
        "code": error.code or "no error code",
        "message": error.message,
        "trust_policy": _compact_trust_policy(role),
        "retry": _retry_remedy(),
        "minutes": _revalidation_minutes(),
        "platform_retry": _platform_remedy(),
    }
    cause, remedy = texts
    return cause.format(**values), remedy.format(**values)


def _compact_trust_policy(role: RoleAccess) -> str:
    """The setup guide's trust policy for ``role``, on one line (inside single quotes in a command)."""
    if not role.platform_principal_arn:
        return "file://trust-policy.json"
    policy = parsers.trust_policy_json(platform_principal_arn=role.platform_principal_arn, external_id=role.external_id)
    return json.dumps(json.loads(policy), separators=(",", ":"))



_STS_TEXTS = {
    StsReason.ACCESS_DENIED: (
        "AWS refused sts:AssumeRole on {role_arn} to the platform principal {principal} (AccessDenied). "
        "AWS gives this same answer for different causes and does not say which:\n(a) the role does not "
        "exist (wrong account, name or path);\n(b) its trust policy does not name the platform principal;\n"
        "(c) its trust policy requires a different external ID, or does not require this one - the "
        "external ID is missing from its sts:ExternalId condition or differs from it.",
        "Check each in turn.\n(a) aws iam get-role --role-name {role_name} --query Role.Arn --output text "
        "must print exactly {role_arn}.\n(b) aws iam get-role --role-name {role_name} --query "
        "Role.AssumeRolePolicyDocument must show \"Principal\": {{\"AWS\": \"{principal}\"}} with "
        "\"Action\": \"sts:AssumeRole\".\n(c) the same document must have \"Condition\": "
        "{{\"StringEquals\": {{\"sts:ExternalId\": \"{external_id}\"}}}} - this environment's "
        "external ID, character for character.\nFix the trust policy with aws iam "
        "update-assume-role-policy --role-name {role_name} --policy-document '{trust_policy}' "
        "(the trust policy of the setup guide), then validate again.",
    ),
    StsReason.DURATION_TOO_LONG: (
        "AssumeRole asked for a {duration}-second session, which is above the role's maximum session "
        "duration (MaxSessionDuration): STS refused it (ValidationError).",
        "Raise the role's maximum to at least {duration} seconds: aws iam update-role --role-name "
        "{role_name} --max-session-duration {duration}, then validate again.",
    ),
    StsReason.REGION_DISABLED: (
        "STS is not activated in {region} for the account (RegionDisabledException), so it cannot "
        "issue temporary credentials for the role there.",
        "In account {account}, open IAM → Account settings → Security Token Service (STS) → Endpoints "
        "and activate {region}, then validate again.",
    ),
    StsReason.PLATFORM_CREDENTIALS: (
        "STS rejected the platform's own AWS credentials ({code}): they are expired, invalid or missing. "
        "This is a problem on the platform's side, not in your AWS account or your role.",
        "{platform_retry}",
    ),
    StsReason.THROTTLED: (
        "STS throttled the request: the AssumeRole request rate was exceeded for a moment.",
        "{retry}",
    ),
    StsReason.INTERNAL: ("STS had an internal error or was unavailable.", "{retry}"),
    StsReason.TIMEOUT: ("STS in {region} did not answer within the time limit.", "{retry}"),
    StsReason.NETWORK: ("The platform could not reach STS in {region} (network error).", "{retry}"),
    StsReason.CLOCK_SKEW: (
        "STS rejected the request as expired: the platform's clock differs from AWS time (clock skew). "
        "This is not a problem with your AWS set-up.",
        "{retry}",
    ),
    StsReason.VALIDATION: (
        "STS rejected the AssumeRole request as invalid: {message}",
        "Check the role ARN (arn:aws:iam::ACCOUNT:role/NAME), then validate again.",
    ),
}
def explain_reason(
    *, reason: str, kms_key_arn: str, region: str, account_id: str = "",
    encryption_context: dict[str, str] | None = None, operation: str = "Decrypt", role: RoleAccess | None = None,
) -> tuple[str, str]:
    """``(cause, remedy)`` for a failure known only by its reason, e.g. the one the data
    plane stored when it marked a version inaccessible: the same texts a validation's
    failing check shows for that reason. A :class:`keys.sts.Reason` value (AssumeRole
    refused) is explained with ``role`` (role mode), any other as a KMS :class:`Reason`.
    ``encryption_context`` is the version's: a remedy quoting a policy quotes the setup
    guide's for it (Decrypt conditioned on that context)."""
    if role is not None and is_sts_reason(reason):
        error = sts.StsError(reason, operation="AssumeRole", message=f"STS refused AssumeRole ({reason}).")
        return _sts_error_texts(error, role, region)
    error = KmsError(reason, operation=operation, message=f"KMS refused {operation} ({reason}).")
    return _error_texts(error, _Registration(kms_key_arn, region, account_id, encryption_context))


_STS_REASONS = frozenset(
    value for name, value in vars(StsReason).items() if name.isupper() and isinstance(value, str)
)


def is_sts_reason(reason: str) -> bool:
    """Is ``reason`` a :class:`keys.sts.Reason` value (AssumeRole failed), not a KMS one?"""
    return reason in _STS_REASONS


_STS_CAUSES_SHORT = {
    StsReason.PLATFORM_CREDENTIALS: "STS refused the platform's own AWS credentials (a problem on the platform's side)",
    StsReason.THROTTLED: "STS throttled the AssumeRole request",
    StsReason.INTERNAL: "STS had an internal error",
    StsReason.TIMEOUT: "STS did not answer in time",
    StsReason.NETWORK: "STS could not be reached",
    StsReason.CLOCK_SKEW: "the platform's clock is off (clock skew)",
}


def short_cause(reason: str) -> str:
    """A few words for why a check could not be made (a transient KMS or STS reason), for
    a status line such as "could not verify: STS throttled the AssumeRole request"."""
    return _STS_CAUSES_SHORT.get(reason) or _REASON_CAUSES_SHORT.get(reason) or "KMS could not be reached"
