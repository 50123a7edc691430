"""Registration input checks that need no AWS call: pure functions over text.

An admin registers a BYOK key by pasting five items (encrypted data key,
access key ID, secret access key, KMS key ARN, region code) and, optionally,
the encryption context they used. Everything that can be checked without
calling KMS is checked here; the registration form wraps these functions and
turns :class:`InputError` into field errors. No ORM, no Django forms, no boto3
(only botocore's bundled region data).

Rules shared by every parser:

* Surrounding spaces, tabs and line breaks are stripped.
* Control characters (NUL included) and anything outside printable ASCII are
  refused, naming the position and code point (``U+0430``), never the value:
  Cyrillic or full-width look-alikes and zero-width spaces come from copying
  out of documents and chat tools, and AWS identifiers are plain ASCII.
* Each input has a length limit, stated in the message.
* A message says what is wrong and what to do. It never repeats the input,
  except for pieces that already matched a closed, non-secret shape (a region
  code, a partition, a 12-digit account ID, a UUID key ID); the secret access
  key, the access key ID and encryption-context pairs are never echoed.

Sources of the rules (cited again where each is applied):

* ARN format: "Identify AWS resources with Amazon Resource Names (ARNs)",
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference-arns.html
* KMS key identifiers (key ID, key ARN, alias),
  https://docs.aws.amazon.com/kms/latest/developerguide/concepts.html#key-id
* IAM unique ID prefixes (``AKIA``, ``ASIA``, ``AIDA`` ...),
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-unique-ids
* GenerateDataKeyWithoutPlaintext output,
  https://docs.aws.amazon.com/kms/latest/APIReference/API_GenerateDataKeyWithoutPlaintext.html
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import shlex
import unicodedata
from dataclasses import dataclass
from typing import Any

from botocore.loaders import create_loader
from botocore.regions import EndpointResolver
from django.views.decorators.debug import sensitive_variables

__all__ = [
    "ENCRYPTED_DATA_KEY_MAX_BYTES",
    "ENCRYPTED_DATA_KEY_MIN_BYTES",
    "SUPPORTED_PARTITIONS",
    "InputError",
    "KmsKeyArn",
    "available_regions",
    "cli_command",
    "iam_policy_json",
    "parse_access_key_id",
    "parse_encrypted_data_key",
    "parse_encryption_context",
    "parse_kms_key_arn",
    "RoleArn",
    "parse_region",
    "parse_role_arn",
    "role_cli_commands",
    "role_drill_commands",
    "RoleDrillCommands",
    "ROLE_POLICY_NAME",
    "trust_policy_json",
    "environment_encryption_context",
    "parse_secret_access_key",
]

SUPPORTED_PARTITIONS = ("aws", "aws-cn", "aws-us-gov")

EXAMPLE_KMS_KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"

# Decoded size of a plausible ciphertext blob of a 256-bit data key. The local
# emulator (moto) returns 96 bytes (36-byte key ID + 12-byte IV + 32 + 16-byte
# tag); AWS KMS returns an undocumented, opaque ~170-190 bytes. 64 is just over
# the floor for AES-GCM of 32 bytes (32 + 12 + 16 = 60) with any key reference;
# 1024 leaves room for formats we have not seen without letting in whole files.
ENCRYPTED_DATA_KEY_MIN_BYTES = 64
ENCRYPTED_DATA_KEY_MAX_BYTES = 1024

KMS_KEY_ARN_MAX_LENGTH = 256  # the longest real key ARN is under 100 characters
REGION_MAX_LENGTH = 64
ENCRYPTED_DATA_KEY_MAX_LENGTH = 8192  # the whole pasted CLI JSON, indented
ACCESS_KEY_ID_MAX_LENGTH = 128  # IAM's AccessKeyId length constraint
SECRET_ACCESS_KEY_MAX_LENGTH = 128
ENCRYPTION_CONTEXT_MAX_BYTES = 8192  # 8 KB, the KMS limit for all keys + values
ENCRYPTION_CONTEXT_MAX_LENGTH = 2 * ENCRYPTION_CONTEXT_MAX_BYTES  # raw text, JSON quoting included

_BLANK = " \t\r\n"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# AWS writes multi-Region key IDs as mrk- and 32 hex digits; moto (the local
# emulator of the embedded default) as mrk- and a dashed UUID. Both are accepted.
_MRK = re.compile(rf"mrk-(?:[0-9a-f]{{32}}|{_UUID.pattern})")
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
_REGION_SHAPE = re.compile(r"[a-z]{2,5}(?:-[a-z]+)+-[0-9]{1,2}")
_SERVICE_SHAPE = re.compile(r"[a-z0-9-]{2,30}")
_AZ_ID = re.compile(r"[a-z]{3,5}[0-9]{1,2}-az[0-9]{1,2}")
_ACCESS_KEY_ID_SHAPE = re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{16}")
_SECRET_SHAPE = re.compile(r"[A-Za-z0-9/+]{40}")
_BASE64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_BASE64URL_TEXT = re.compile(r"[A-Za-z0-9_\-+/]*={0,2}")
_HEX_TEXT = re.compile(r"(?:0x)?[0-9a-fA-F]+")
# Keys and values the AWS CLI shorthand syntax (k=v,k2=v2) reads back verbatim.
_SHORTHAND_KEY = re.compile(r"[A-Za-z0-9_.-]+")
_SHORTHAND_VALUE = re.compile(r"[A-Za-z0-9_.:/@+-]+")
# Characters the AWS CLI shorthand gives a meaning (quoting, escapes, lists,
# maps): typed into our k=v form they would not mean what the CLI made of them.
_SHORTHAND_QUOTING = "\"'\\[]{}"

# IAM unique ID prefixes that are not long-term access key IDs (IAM User Guide,
# "IAM identifiers", unique ID prefixes).
_IAM_ID_PREFIXES = {
    "ABIA": "an AWS STS service bearer token ID",
    "ACCA": "a context-specific credential ID",
    "AGPA": "an IAM user group ID",
    "AIDA": "an IAM user ID",
    "AIPA": "an EC2 instance profile ID",
    "ANPA": "an IAM managed policy ID",
    "ANVA": "an IAM managed policy version ID",
    "APKA": "a public key ID",
    "AROA": "an IAM role ID",
    "ASCA": "a certificate ID",
}

_OTHER_SERVICE_ARNS = {
    "s3": "an S3 ARN",
    "sts": "an STS ARN (an assumed role)",
    "secretsmanager": "a Secrets Manager ARN",
    "ssm": "a Systems Manager ARN",
    "acm": "a Certificate Manager ARN",
    "cloudhsm": "a CloudHSM ARN",
    "lambda": "a Lambda ARN",
    "sns": "an SNS ARN",
    "sqs": "an SQS ARN",
    "dynamodb": "a DynamoDB ARN",
    "ec2": "an EC2 ARN",
    "rds": "an RDS ARN",
}

_IAM_RESOURCES = {
    "user/": "an IAM user ARN",
    "role/": "an IAM role ARN",
    "policy/": "an IAM policy ARN",
    "group/": "an IAM group ARN",
    "root": "the ARN of an AWS account's root user",
}


class InputError(ValueError):
    """An input the admin must correct. ``message`` is safe to show: it never holds a secret.
    ``code`` names the few refusals a caller words differently for its page (``USER_ARN``)."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# ``InputError.code`` of a role ARN that is an IAM user's: the registration form points to the
# "IAM user access key" mode; replacing a role-mode version's role ARN cannot switch modes.
USER_ARN = "user_arn"


@dataclass(frozen=True)
class KmsKeyArn:
    """A parsed KMS key ARN: ``arn:<partition>:kms:<region>:<account_id>:key/<key_id>``."""

    arn: str
    partition: str
    region: str
    account_id: str
    key_id: str
    multi_region: bool


@dataclass(frozen=True)
class RoleArn:
    """A parsed IAM role ARN: ``arn:<partition>:iam::<account_id>:role/<path/><name>``; ``path`` is "/" or "/a/b/"."""

    arn: str
    partition: str
    account_id: str
    path: str
    name: str


# --- Characters and lengths ------------------------------------------------


def _describe_character(char: str) -> str:
    """Name a character by code point, e.g. ``U+0430 (CYRILLIC SMALL LETTER A)``."""
    code = f"U+{ord(char):04X}"
    if char == " ":
        return f"a space ({code})"
    if char == "\t":
        return f"a tab ({code})"
    if char in "\r\n":
        return f"a line break ({code})"
    if ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F:
        label = {0x00: "NUL", 0x1B: "ESC", 0x7F: "DEL"}.get(ord(char), "control character")
        return f"the control character {code} ({label})"
    name = unicodedata.name(char, "")
    return f"{code} ({name})" if name else code


def _clean(value: str, *, field: str, max_length: int, blank_inside: bool = False) -> str:
    """Strip surrounding blanks, then refuse over-long text and characters outside printable ASCII.

    ``blank_inside`` allows spaces, tabs and line breaks inside (wrapped base64, JSON).
    Positions in messages are 1-based, counted from the first non-blank character.
    """
    value = value.strip(_BLANK)
    if len(value) > max_length:
        raise InputError(
            f"The {field} is too long: {len(value):,} characters, and the limit is {max_length:,}. "
            f"Check that you pasted only the {field}."
        )
    for position, char in enumerate(value, start=1):
        if 0x21 <= ord(char) <= 0x7E or (blank_inside and char in _BLANK):
            continue
        raise InputError(_character_message(field, char, position))
    return value


def _character_message(field: str, char: str, position: int) -> str:
    where = f"The {field} contains {_describe_character(char)} at character {position}."
    if char in _BLANK:
        return f"{where} Remove it: the {field} is one piece with no spaces or line breaks."
    if ord(char) <= 0x9F:  # C0 controls, DEL, C1 controls
        return f"{where} Copy the {field} again as plain text."
    return (
        f"{where} Only plain ASCII letters, digits and punctuation are allowed; this is usually a "
        "look-alike letter from another alphabet, a full-width digit or an invisible character "
        f"copied along with the text. Type that character again, or copy the {field} again from "
        "the AWS console or CLI."
    )


# --- Regions ---------------------------------------------------------------


@functools.cache
def _endpoint_data() -> dict[str, Any]:
    return create_loader().load_data("endpoints")


@functools.cache
def available_regions(partition: str) -> frozenset[str]:
    """Region codes where KMS is available in ``partition``, from botocore's bundled endpoint data.

    Only the supported partitions (``aws``, ``aws-cn``, ``aws-us-gov``) have
    regions here; any other partition gives an empty set. A region launched
    after the installed botocore release appears when botocore is upgraded.
    """
    if partition not in SUPPORTED_PARTITIONS:
        return frozenset()
    resolver = EndpointResolver(_endpoint_data())
    return frozenset(resolver.get_available_endpoints("kms", partition_name=partition))


def _all_supported_regions() -> frozenset[str]:
    return frozenset().union(*(available_regions(p) for p in SUPPORTED_PARTITIONS))


def _partition_of_region(region: str) -> str | None:
    """The partition a region code belongs to (any partition botocore knows), or None.

    Explicit region lists first, then each partition's ``regionRegex``, with
    ``aws`` last because its pattern also matches ``us-gov-*`` and ``us-iso-*``.
    """
    partitions = _endpoint_data()["partitions"]
    for partition in partitions:
        if region in partition["regions"]:
            return partition["partition"]
    for partition in sorted(partitions, key=lambda p: p["partition"] == "aws"):
        if re.fullmatch(partition["regionRegex"].strip("^$"), region):
            return partition["partition"]
    return None


@functools.cache
def _region_codes_by_name() -> dict[str, str]:
    """Region display names as botocore has them (``us east (n. virginia)``) to region codes."""
    supported = _all_supported_regions()
    return {
        details["description"].lower(): code
        for partition in _endpoint_data()["partitions"]
        for code, details in partition["regions"].items()
        if code in supported and "description" in details
    }


def _known_partitions() -> frozenset[str]:
    return frozenset(p["partition"] for p in _endpoint_data()["partitions"])


def _region_list(partition: str) -> str:
    """`` (cn-north-1, cn-northwest-1)`` for a partition with a few regions, else nothing."""
    regions = sorted(available_regions(partition))
    return f" ({', '.join(regions)})" if 0 < len(regions) <= 5 else ""


# --- KMS key ARN -----------------------------------------------------------


@sensitive_variables()
def parse_kms_key_arn(value: str) -> KmsKeyArn:
    """Parse a KMS key ARN, ``arn:<partition>:kms:<region>:<account>:key/<key-id>``.

    Rules and sources:

    * ARN grammar ``arn:partition:service:region:account-id:resource``
      ("Identify AWS resources with ARNs", IAM User Guide); partitions
      ``aws``, ``aws-cn``, ``aws-us-gov`` only.
    * Service ``kms`` and resource ``key/<key-id>``: an alias can be moved to
      another key, so alias ARNs and bare key IDs or alias names are refused
      (KMS Developer Guide, "Key identifiers (KeyId)").
    * Key ID: a lower-case UUID, or ``mrk-`` and 32 lower-case hex digits for
      a multi-Region key (``multi_region=True``); ``mrk-`` and a dashed UUID
      is accepted too, because that is how moto writes them.
    * Account: 12 digits. Region: a KMS region of the ARN's partition
      (botocore's bundled endpoint data); ``cn-*`` only in ``aws-cn``,
      ``us-gov-*`` only in ``aws-us-gov``.

    Raises InputError with a message telling the admin what to correct.
    """
    field = "KMS key ARN"
    value = _clean(value, field=field, max_length=KMS_KEY_ARN_MAX_LENGTH)
    if not value:
        raise InputError(f"Enter the KMS key ARN, for example {EXAMPLE_KMS_KEY_ARN}.")
    if value[:4].lower() != "arn:":
        raise InputError(_not_an_arn_message(value))
    parts = value.split(":", 5)
    if len(parts) != 6:
        raise InputError(
            "This ARN is incomplete: a KMS key ARN has six parts separated by colons, like "
            f"{EXAMPLE_KMS_KEY_ARN}. Copy the whole key ARN again."
        )
    prefix, partition, service, region, account_id, resource = parts
    if prefix != "arn" or any(part != part.lower() for part in (partition, service, region)):
        raise InputError(
            "Write the ARN in lower case up to the key ID (arn:aws:kms:us-east-1:...), exactly as "
            "KMS shows it."
        )
    _check_partition(partition)
    _check_service(service, resource)
    _check_region_in_arn(partition, region)
    _check_account_id(account_id)
    key_id = _key_id_from_resource(resource)
    return KmsKeyArn(
        arn=value,
        partition=partition,
        region=region,
        account_id=account_id,
        key_id=key_id,
        multi_region=key_id.startswith("mrk-"),
    )


def _find_key_arn_hint(key_reference: str) -> str:
    return (
        f"Find the key ARN with: aws kms describe-key --key-id {key_reference} "
        "--query KeyMetadata.Arn --output text"
    )


def _not_an_arn_message(value: str) -> str:
    if value.lower().startswith("alias/"):
        return (
            "This is an alias name. An alias can be moved to another key, so the portal needs the "
            f"key ARN instead. {_find_key_arn_hint('alias/YOUR-ALIAS')}"
        )
    if _UUID.fullmatch(value) or _MRK.fullmatch(value):
        return (
            "This is a key ID; the portal needs the full key ARN "
            f"(arn:aws:kms:<region>:<account>:key/<key ID>). {_find_key_arn_hint(value)}"
        )
    return f"This is not an ARN. Enter the KMS key ARN, which looks like {EXAMPLE_KMS_KEY_ARN}."


def _check_partition(partition: str) -> None:
    if partition in SUPPORTED_PARTITIONS:
        return
    named = f"the {partition} partition" if partition in _known_partitions() else "this partition"
    raise InputError(
        f"The portal does not support {named}: the key ARN must start with arn:aws:, arn:aws-cn: "
        "(AWS China) or arn:aws-us-gov: (AWS GovCloud)."
    )


def _check_service(service: str, resource: str) -> None:
    """Refuse another service's ARN, naming what it is (IAM user, role, S3 ...)."""
    if service == "kms":
        if resource.startswith("alias/"):
            raise InputError(
                "This is an alias ARN. An alias can be moved to another key, so the portal needs "
                f"the key ARN instead. {_find_key_arn_hint('alias/YOUR-ALIAS')}"
            )
        return
    if service == "iam":
        what = next(
            (text for start, text in _IAM_RESOURCES.items() if resource.startswith(start)),
            "an IAM ARN",
        )
    elif service in _OTHER_SERVICE_ARNS:
        what = _OTHER_SERVICE_ARNS[service]
    elif _SERVICE_SHAPE.fullmatch(service):
        what = f"an ARN of the AWS service {service}"
    else:
        what = "an ARN of another AWS service"
    raise InputError(f"This is {what}; the portal needs a KMS key ARN like {EXAMPLE_KMS_KEY_ARN}.")


def _check_region_in_arn(partition: str, region: str) -> None:
    if not region:
        raise InputError(
            "The key ARN has no region. A KMS key ARN always names one "
            "(arn:aws:kms:us-east-1:...). Copy the key ARN again from describe-key."
        )
    if not _REGION_SHAPE.fullmatch(region):
        raise InputError(
            "The region in the key ARN is not a region code like us-east-1. Copy the key ARN again."
        )
    region_partition = _partition_of_region(region)
    if region_partition is not None and region_partition != partition:
        raise InputError(_partition_mismatch_message(partition, region, region_partition))
    if region not in available_regions(partition):
        raise InputError(
            f"The key ARN names region {region}, which is not a region where AWS KMS is available "
            f"in the {partition} partition{_region_list(partition)}. Copy the key ARN again."
        )


def _partition_mismatch_message(partition: str, region: str, region_partition: str) -> str:
    if region_partition in SUPPORTED_PARTITIONS:
        return (
            f"Region {region} is in the {region_partition} partition, so its key ARNs start with "
            f"arn:{region_partition}:kms:, not arn:{partition}:kms:. Copy the key ARN again."
        )
    return (
        f"Region {region} is in the {region_partition} partition, which the portal does not "
        "support. Use a key in a region of aws, aws-cn or aws-us-gov."
    )


def _check_account_id(account_id: str) -> None:
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise InputError(
            "The account ID in the key ARN must be 12 digits, like 111122223333; "
            f"it has {len(account_id)} characters. Copy the key ARN again."
        )


def _key_id_from_resource(resource: str) -> str:
    if not resource.startswith("key/"):
        raise InputError(
            "A KMS key ARN ends with key/ and the key ID, like "
            ":key/1234abcd-12ab-34cd-56ef-1234567890ab. Copy the key ARN again."
        )
    key_id = resource.removeprefix("key/")
    if _UUID.fullmatch(key_id) or _MRK.fullmatch(key_id):
        return key_id
    if not key_id:
        raise InputError("The key ARN ends without a key ID after key/. Copy the key ARN again.")
    if _UUID.fullmatch(key_id.lower()) or _MRK.fullmatch(key_id.lower()):
        raise InputError(
            f"KMS key IDs are lower case: write key/{key_id.lower()}, exactly as KMS shows it."
        )
    raise InputError(
        "The key ID after key/ must be a UUID like 1234abcd-12ab-34cd-56ef-1234567890ab, or mrk- "
        f"and 32 hexadecimal digits for a multi-Region key; this one ({len(key_id)} characters) "
        "is neither. Copy the key ARN again."
    )


# --- Region ----------------------------------------------------------------


@sensitive_variables()
def parse_region(value: str, *, kms_key_arn: KmsKeyArn | None) -> str:
    """Parse a region code such as ``eu-west-1``.

    The region must be one where KMS is available in a supported partition
    (botocore's bundled endpoint data, see :func:`available_regions`) and,
    when the key ARN parsed, must equal the ARN's region: a KMS key lives in
    one region and Decrypt must be sent there. Availability Zones
    (``us-east-1a``), zone IDs (``use1-az1``), region names
    (``US East (N. Virginia)``) and upper case are refused with the code to
    enter instead ("Regions and Availability Zones", AWS documentation).

    Raises InputError.
    """
    field = "region code"
    value = _clean(value, field=field, max_length=REGION_MAX_LENGTH, blank_inside=True)
    arn_region = kms_key_arn.region if kms_key_arn is not None else None
    enter = f"enter {arn_region}" if arn_region else "enter a region code such as us-east-1"
    if not value:
        where = f" (the key ARN names {arn_region})" if arn_region else ""
        raise InputError(f"Enter the region code{where}: {enter}.")
    for position, char in enumerate(value, start=1):
        if char in _BLANK and _region_codes_by_name().get(value.lower()) is None:
            raise InputError(_character_message(field, char, position))
    try:
        named_code = _region_codes_by_name().get(value.lower())
        if named_code:
            raise InputError(
                f"That is the region's name; its code is {named_code}. Enter {named_code}."
            )
        region = _region_code_or_refuse(value, enter)
    except InputError as e:
        if arn_region is not None and arn_region not in e.message:
            # The value points at another region than the key's: name the key's region,
            # or the admin fixes the shape and is then refused for the region.
            raise InputError(
                f"{e.message.split('. ')[0].split('; ')[0]}, and the key ARN names region "
                f"{arn_region}: enter {arn_region}."
            ) from None
        raise
    if arn_region is not None and region != arn_region:
        raise InputError(f"The key ARN names region {arn_region}; enter {arn_region}.")
    return region


def _region_code_or_refuse(value: str, enter: str) -> str:
    supported = _all_supported_regions()
    if value in supported:
        return value
    if value.lower() in supported:
        raise InputError(f"Region codes are lower case: enter {value.lower()}.")
    _refuse_zone(value, supported)
    if _AZ_ID.fullmatch(value):
        raise InputError(f"That is an Availability Zone ID, not a region; {enter}.")
    if _REGION_SHAPE.fullmatch(value):
        region_partition = _partition_of_region(value)
        if region_partition is not None and region_partition not in SUPPORTED_PARTITIONS:
            raise InputError(
                f"{value} is in the {region_partition} partition, which the portal does not "
                f"support; {enter}."
            )
        raise InputError(f"{value} is not a region where AWS KMS is available; {enter}.")
    raise InputError(f"This is not a region code; {enter}.")


def _refuse_zone(value: str, supported: frozenset[str]) -> None:
    """Refuse a zone name: ``us-east-1a`` (Availability Zone), ``us-west-2-lax-1a`` (Local Zone)."""
    for region in sorted(supported, key=len, reverse=True):
        rest = value.removeprefix(region)
        if rest == value:
            continue
        if re.fullmatch(r"[a-z]", rest):
            raise InputError(
                f"That is an Availability Zone; the region is {region}. Enter {region}."
            )
        if re.fullmatch(r"-[a-z0-9-]+", rest):
            raise InputError(
                f"That is a Local Zone or Wavelength Zone; the region is {region}. Enter {region}."
            )


# --- Encrypted data key ----------------------------------------------------


@sensitive_variables()
def parse_encrypted_data_key(value: str) -> bytes:
    """Parse the encrypted data key (KMS ``CiphertextBlob``) and return its raw bytes.

    Accepted forms:

    * the base64 text the AWS CLI prints for ``CiphertextBlob``, with or
      without surrounding quotes, line breaks anywhere (terminals wrap it);
    * the whole JSON printed by ``aws kms generate-data-key-without-plaintext``
      (``CiphertextBlob``, ``KeyId``, optionally ``KeyMaterialId``; see the
      GenerateDataKeyWithoutPlaintext API reference).

    Refused with an explanation: output that holds a ``Plaintext`` field (from
    ``generate-data-key``: the plaintext data key must never be pasted; it is
    not echoed), JSON without ``CiphertextBlob``, ``--output text`` lines,
    ``fileb://`` paths, hex, base64url or unpadded base64, base64 encoded twice,
    and a decoded size outside ENCRYPTED_DATA_KEY_MIN_BYTES..MAX_BYTES (64..1024;
    moto's blobs are 96 bytes, AWS KMS's opaque ~170-190; AWS's format is not
    documented, so it is not parsed). Strict base64: standard alphabet, padding
    required (``base64.b64decode(validate=True)``).

    Raises InputError; the message never includes the pasted value.
    """
    field = "encrypted data key"
    text = _clean(value, field=field, max_length=ENCRYPTED_DATA_KEY_MAX_LENGTH, blank_inside=True)
    if not text:
        raise InputError(
            "Paste the encrypted data key: the CiphertextBlob value printed by "
            "aws kms generate-data-key-without-plaintext."
        )
    if "plaintext" in text.lower():
        raise InputError(_PLAINTEXT_PASTED)
    if text.lower().startswith(("fileb://", "file://")):
        raise InputError(
            "This is a file path, and the portal cannot read files on your computer. Paste the "
            "base64 text instead: the CiphertextBlob value printed by "
            "aws kms generate-data-key-without-plaintext, or the output of base64 on that file."
        )
    if text.startswith("{"):
        blob_text = _ciphertext_blob_from_json(text)
        text = _clean(blob_text, field="CiphertextBlob", max_length=len(text), blank_inside=True)
    elif "ciphertextblob" in text.lower():
        raise InputError(
            "Paste only the CiphertextBlob value, or the whole JSON output of the command "
            "(run it with --output json)."
        )
    return _decode_ciphertext_blob(_without_quotes(text))


_PLAINTEXT_PASTED = (
    "This contains a Plaintext field: it is the output of aws kms generate-data-key, which exposes "
    "the plaintext data key. Never paste a plaintext data key anywhere, and do not use this data "
    "key: delete that output, run aws kms generate-data-key-without-plaintext instead and paste "
    "its CiphertextBlob."
)


def _ciphertext_blob_from_json(text: str) -> str:
    document = _load_json_object(text, field="encrypted data key")
    blob = document.get("CiphertextBlob")
    if "KeyMetadata" in document:
        raise InputError(
            "This is the output of describe-key, not of generate-data-key-without-plaintext. "
            "Paste the output of aws kms generate-data-key-without-plaintext, or its "
            "CiphertextBlob value."
        )
    if blob is None:
        raise InputError(
            "This JSON has no CiphertextBlob field. Paste the output of "
            "aws kms generate-data-key-without-plaintext (it has CiphertextBlob and KeyId), or "
            "just its CiphertextBlob value."
        )
    if not isinstance(blob, str):
        raise InputError(
            "CiphertextBlob in this JSON is not text. Paste the output of "
            "aws kms generate-data-key-without-plaintext exactly as printed."
        )
    return blob


def _load_json_object(text: str, *, field: str) -> dict[str, Any]:
    """``json.loads`` that reports errors without the document and refuses duplicate keys.

    The InputError is raised outside the ``except`` block so it does not carry
    the JSONDecodeError (whose ``doc`` attribute holds the whole input).
    """
    error: str | None = None
    try:
        document = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except _DuplicateKey:
        error = (
            f"The {field} JSON names the same key twice. Remove the duplicate and paste it again."
        )
    except json.JSONDecodeError as e:
        error = (
            f"The {field} looks like JSON but cannot be read (line {e.lineno}, column {e.colno}: "
            f"{e.msg}). Paste the whole JSON, from the opening {{ to the closing }}."
        )
    except (ValueError, RecursionError):
        error = (
            f"The {field} looks like JSON but cannot be read. Paste the JSON exactly as printed."
        )
    if error is not None:
        raise InputError(error)
    if not isinstance(document, dict):
        raise InputError(f"The {field} JSON must be an object in {{ }}.")
    return document


class _DuplicateKey(ValueError):
    pass


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise _DuplicateKey
    return document


def _without_quotes(text: str) -> str:
    """Drop one pair of quotes around the value (``--query CiphertextBlob`` prints JSON text)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _decode_ciphertext_blob(text: str) -> bytes:
    tokens = text.split()
    if len(tokens) > 1 and any(token.startswith("arn:") for token in tokens):
        if any(len(_b64_or_empty(token)) in (16, 32) for token in tokens):
            raise InputError(_PLAINTEXT_PASTED)
        raise InputError(
            "This looks like a line of --output text (the CiphertextBlob followed by the key ARN). "
            "Paste only the CiphertextBlob value, or run the command with --output json."
        )
    compact = "".join(tokens)
    _check_base64_text(compact, typed=text)
    blob = base64.b64decode(compact, validate=True)
    if _looks_base64_encoded(blob):
        raise InputError(
            "This encrypted data key looks base64-encoded twice: the AWS CLI already prints "
            "CiphertextBlob in base64. Paste CiphertextBlob as printed, without encoding it again."
        )
    if len(blob) in (16, 32):
        raise InputError(
            f"This decodes to {len(blob)} bytes, the size of a plaintext data key, not of an "
            "encrypted one. If you copied the Plaintext of aws kms generate-data-key, never paste "
            "it anywhere and do not use that data key: run aws kms "
            "generate-data-key-without-plaintext and paste its CiphertextBlob."
        )
    if not ENCRYPTED_DATA_KEY_MIN_BYTES <= len(blob) <= ENCRYPTED_DATA_KEY_MAX_BYTES:
        raise InputError(
            f"The encrypted data key decodes to {len(blob)} bytes; a KMS ciphertext blob of a "
            f"256-bit data key is {ENCRYPTED_DATA_KEY_MIN_BYTES} to {ENCRYPTED_DATA_KEY_MAX_BYTES} "
            "bytes (about 170 to 190 from AWS KMS). Copy the whole CiphertextBlob value again."
        )
    return blob


def _check_base64_text(text: str, *, typed: str) -> None:
    """Explain the usual ways a pasted value is not strict, standard, padded base64.

    ``text`` is the value without its inner whitespace; ``typed`` the same value as pasted,
    line breaks and spaces included, so that a position names the character as typed.
    """
    if _HEX_TEXT.fullmatch(text) and len(text) >= 32:
        raise InputError(
            "This looks like hexadecimal, not base64. Paste CiphertextBlob as the AWS CLI prints "
            "it (base64), or convert your hex with: xxd -r -p FILE | base64"
        )
    if not _BASE64_TEXT.fullmatch(text):
        if _BASE64URL_TEXT.fullmatch(text):
            raise InputError(
                "This uses the URL-safe base64 alphabet (- and _), but CiphertextBlob is standard "
                "base64 (+ and /). Paste CiphertextBlob exactly as the AWS CLI prints it."
            )
        raise InputError(_bad_base64_character_message(text, typed=typed))
    if len(text) % 4:
        raise InputError(
            "The base64 text is missing its = padding or is cut short (its length must be a "
            "multiple of 4). Copy the whole CiphertextBlob again, including any = at the end."
        )


def _bad_base64_character_message(text: str, *, typed: str) -> str:
    """Name the first character that breaks base64 (a ciphertext is not secret: one is shown),
    at its position in the value as typed (whitespace counted)."""
    unpadded = text.rstrip("=")
    bad = next(
        ((i, c) for i, c in enumerate(unpadded, start=1) if c not in _BASE64_ALPHABET),
        (len(unpadded) + 3, "="),  # a third = of padding
    )
    position, char = _typed_position(typed, bad[0]), bad[1]
    shown = f"'{char}'" if 0x21 <= ord(char) <= 0x7E else _describe_character(char)
    return (
        f"Character {position} of the encrypted data key ({shown}) is not valid here: base64 uses "
        "A-Z, a-z, 0-9, + and /, with at most two = only at the end. Paste CiphertextBlob exactly "
        "as printed."
    )


def _typed_position(typed: str, compact_position: int) -> int:
    """The 1-based position in ``typed`` of its ``compact_position``-th non-whitespace character."""
    seen = 0
    for index, char in enumerate(typed, start=1):
        if not char.isspace():
            seen += 1
            if seen == compact_position:
                return index
    return compact_position


def _b64_or_empty(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _looks_base64_encoded(blob: bytes) -> bool:
    """True when the decoded bytes are themselves base64 of a plausible ciphertext blob.

    A real blob is binary: AWS's is random-looking, moto's has 60 random bytes
    after the key ID, so all-base64-alphabet bytes by chance are negligible.
    """
    inner = _b64_or_empty(b"".join(blob.split()).decode("latin-1"))
    return ENCRYPTED_DATA_KEY_MIN_BYTES <= len(inner) <= ENCRYPTED_DATA_KEY_MAX_BYTES


# --- IAM credentials -------------------------------------------------------


@sensitive_variables()
def parse_access_key_id(value: str) -> str:
    """Parse the IAM user's access key ID: ``AKIA`` and 16 upper-case letters or digits.

    ``ASIA`` IDs are temporary STS credentials that expire (IAM User Guide,
    "IAM identifiers", unique ID prefixes); the portal needs a long-term IAM
    user access key. Other IAM ID prefixes (``AIDA`` user ID, ``AROA`` role ID
    ...) are named. A secret-access-key-shaped value (40 characters) is
    recognised and refused without being echoed. Messages never repeat the value.

    Raises InputError.
    """
    field = "access key ID"
    value = _clean(value, field=field, max_length=ACCESS_KEY_ID_MAX_LENGTH)
    if not value:
        raise InputError(
            "Enter the access key ID of the IAM user: 20 characters starting with AKIA."
        )
    if _SECRET_SHAPE.fullmatch(value) and value[:4] not in ("AKIA", "ASIA"):
        raise InputError(
            "This looks like a secret access key (40 characters), not an access key ID. Put it in "
            "the secret access key field; the access key ID is 20 characters starting with AKIA."
        )
    if value != value.upper():
        raise InputError(
            "Access key IDs are in capital letters and digits only; this one has lower-case "
            "letters. Copy it again exactly as the IAM console or create-access-key shows it."
        )
    _check_access_key_prefix(value[:4])
    if len(value) != 20:
        raise InputError(
            "An access key ID is 20 characters (AKIA and 16 more letters and digits); this one "
            f"has {len(value)}. Copy it again in full."
        )
    for position, char in enumerate(value, start=1):
        if not ("A" <= char <= "Z" or "0" <= char <= "9"):
            raise InputError(
                f"Character {position} of the access key ID is not allowed: access key IDs contain "
                "only capital letters A-Z and digits. Copy it again exactly as shown."
            )
    return value


def _check_access_key_prefix(prefix: str) -> None:
    if prefix == "AKIA":
        return
    if prefix == "ASIA":
        raise InputError(
            "This access key ID starts with ASIA: it belongs to temporary STS credentials, which "
            "expire. The portal needs a long-term access key of an IAM user (starting with AKIA): "
            "create one with aws iam create-access-key --user-name YOUR-USER."
        )
    if prefix in _IAM_ID_PREFIXES:
        raise InputError(
            f"This is {_IAM_ID_PREFIXES[prefix]} (it starts with {prefix}), not an access key ID. "
            "Enter the IAM user's access key ID, which starts with AKIA."
        )
    raise InputError(
        "An access key ID starts with AKIA, followed by 16 capital letters and digits. Copy the "
        "IAM user's access key ID again from the IAM console or create-access-key."
    )


@sensitive_variables()
def parse_secret_access_key(value: str) -> str:
    """Parse the IAM user's secret access key: exactly 40 characters of ``A-Z a-z 0-9 / +``.

    An access key ID pasted here (``AKIA``/``ASIA`` + 16) is recognised. Messages
    never repeat the value or any part of it: they give lengths and positions,
    and the code point only of characters that cannot be part of a secret
    (control characters, non-ASCII look-alikes, zero-width spaces).

    Raises InputError.
    """
    field = "secret access key"
    value = _clean(value, field=field, max_length=SECRET_ACCESS_KEY_MAX_LENGTH)
    if not value:
        raise InputError(
            "Enter the secret access key: the 40-character value shown once when the access key "
            "was created."
        )
    if _ACCESS_KEY_ID_SHAPE.fullmatch(value):
        raise InputError(
            "This is an access key ID, not the secret access key. Put it in the access key ID "
            "field, and paste the 40-character secret access key here."
        )
    if len(value) != 40:
        raise InputError(
            f"A secret access key is exactly 40 characters; this value has {len(value)}. Copy it "
            "again in full."
        )
    for position, char in enumerate(value, start=1):
        if not (char.isascii() and (char.isalnum() or char in "/+")):
            raise InputError(
                f"Character {position} of the secret access key is not allowed: it contains only "
                "letters, digits, / and +. Copy it again exactly as shown when it was created."
            )
    return value


# --- Encryption context ----------------------------------------------------


@sensitive_variables()
def parse_encryption_context(value: str) -> dict[str, str]:
    """Parse the optional KMS encryption context; ``""`` gives ``{}``.

    Accepted: a JSON object of string to string (``{"app": "billing"}``), or
    the AWS CLI shorthand ``k=v,k2=v2`` (no spaces; use JSON for keys or values
    that contain spaces, commas or =). Refused: non-string values, empty keys,
    duplicate keys, non-ASCII, and more than 8,192 bytes of keys and values
    (the 8 KB KMS limit). Decrypt must pass exactly the same pairs (KMS
    Developer Guide, "Encryption context"). Messages refer to pairs by
    position and never echo keys or values.

    Raises InputError.
    """
    field = "encryption context"
    text = _clean(value, field=field, max_length=ENCRYPTION_CONTEXT_MAX_LENGTH, blank_inside=True)
    if not text:
        return {}
    pairs = _context_from_json(text) if text.startswith("{") else _context_from_shorthand(text)
    for number, (key, pair_value) in enumerate(pairs.items(), start=1):
        _check_context_pair(number, key, pair_value)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in pairs.items())
    if size > ENCRYPTION_CONTEXT_MAX_BYTES:
        raise InputError(
            f"The encryption context is {size:,} bytes of keys and values; KMS allows at most "
            f"{ENCRYPTION_CONTEXT_MAX_BYTES:,}. Use the encryption context you passed to KMS."
        )
    return pairs


def _context_from_json(text: str) -> dict[str, str]:
    document = _load_json_object(text, field="encryption context")
    for number, pair_value in enumerate(document.values(), start=1):
        if not isinstance(pair_value, str):
            raise InputError(
                f"The value of pair {number} of the encryption context is not a string. KMS "
                'encryption context values are text: write it in quotes, like {"app": "billing"}.'
            )
    return document


def _context_from_shorthand(text: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for number, item in enumerate(text.split(","), start=1):
        if any(char in _BLANK or char in _SHORTHAND_QUOTING for char in item):
            raise InputError(
                "The encryption context has a space, quote, backslash or bracket. Write it as "
                "key=value pairs separated by commas (app=billing,team=risk), or as JSON "
                '({"app": "billing"}) if a key or value contains such characters.'
            )
        key, equals, pair_value = item.partition("=")
        if not equals:
            raise InputError(
                f"Pair {number} of the encryption context has no =. Write key=value pairs "
                'separated by commas (app=billing,team=risk), or JSON ({"app": "billing"}).'
            )
        if key in pairs:
            raise InputError(
                f"Pair {number} of the encryption context repeats an earlier key. "
                "Remove the duplicate."
            )
        pairs[key] = pair_value
    return pairs


def _check_context_pair(number: int, key: str, pair_value: str) -> None:
    if not key:
        raise InputError(
            f"Pair {number} of the encryption context has an empty key. Every key needs a name."
        )
    for part, text in (("key", key), ("value", pair_value)):
        for position, char in enumerate(text, start=1):
            if not char.isascii() or (ord(char) < 0x20 and char not in _BLANK) or ord(char) == 0x7F:
                raise InputError(
                    f"The {part} of pair {number} of the encryption context contains "
                    f"{_describe_character(char)} at character {position}. The portal accepts "
                    "encryption contexts in plain ASCII only; retype that character."
                )


# --- What the registration page shows ---------------------------------------


def cli_command(
    *, kms_key_arn: str, region: str | None, encryption_context: dict[str, str] | None
) -> str:
    """The AWS CLI command that creates the encrypted data key, shell-quoted with ``shlex.quote``::

        aws kms generate-data-key-without-plaintext --key-id <ARN> --key-spec AES_256
            [--encryption-context k=v,...] --region <region> --output json

    (one line). The encryption context uses the CLI shorthand ``k=v,k2=v2``
    when every key and value reads back verbatim through it, and compact JSON
    otherwise. With ``region`` None or empty, the region is taken from the ARN when it
    parses, and ``--region`` is left out when it does not. Never raises for a
    half-typed ARN: the page shows the command as the admin types.
    """
    words = ["aws", "kms", "generate-data-key-without-plaintext"]
    words += ["--key-id", kms_key_arn, "--key-spec", "AES_256"]
    if encryption_context:
        words += ["--encryption-context", _encryption_context_argument(encryption_context)]
    region = region or _region_of_arn_or_none(kms_key_arn)
    if region:
        words += ["--region", region]
    words += ["--output", "json"]
    return " ".join(shlex.quote(word) for word in words)


def _encryption_context_argument(encryption_context: dict[str, str]) -> str:
    shorthand_safe = all(
        _SHORTHAND_KEY.fullmatch(key) and _SHORTHAND_VALUE.fullmatch(value)
        for key, value in encryption_context.items()
    )
    if shorthand_safe:
        return ",".join(f"{key}={value}" for key, value in encryption_context.items())
    return json.dumps(encryption_context, separators=(",", ":"))


def _region_of_arn_or_none(kms_key_arn: str) -> str | None:
    try:
        return parse_kms_key_arn(kms_key_arn).region
    except InputError:
        return None


def iam_policy_json(*, kms_key_arn: str, encryption_context: dict[str, str] | None = None) -> str:
    """The least-privilege IAM policy for the portal's IAM user (or the permissions
    policy of the role, in role mode), as 2-space indented JSON.

    ``kms:Decrypt`` and ``kms:DescribeKey`` on the key ARN only, policy language
    version ``2012-10-17`` (IAM JSON policy reference): the only two calls the
    platform makes. Without ``encryption_context``, one statement. With it, Decrypt
    gets its own statement with a ``StringEquals`` ``kms:EncryptionContext:<key>``
    condition per pair, so these credentials can unwrap only data keys made with that
    context (this environment's); DescribeKey has no encryption context, so it keeps
    an unconditioned statement - putting the condition on it would deny it.
    https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-encryption-context
    """
    statements: list[dict[str, Any]]
    if not encryption_context:
        statements = [{"Effect": "Allow", "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": kms_key_arn}]
    else:
        condition = {f"kms:EncryptionContext:{key}": value for key, value in encryption_context.items()}
        statements = [
            {"Sid": "DescribeTheKey", "Effect": "Allow", "Action": "kms:DescribeKey", "Resource": kms_key_arn},
            {
                "Sid": "DecryptThisEnvironmentsDataKeys",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": kms_key_arn,
                "Condition": {"StringEquals": condition},
            },
        ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, indent=2)


ENVIRONMENT_CONTEXT_KEY = "portal:environment"


def environment_encryption_context(environment_public_id: object) -> dict[str, str]:
    """The encryption context that binds a data key to one environment (issue 14):
    ``{"portal:environment": "<environment public id>"}``."""
    return {ENVIRONMENT_CONTEXT_KEY: str(environment_public_id)}


def trust_policy_json(*, platform_principal_arn: str, external_id: str) -> str:
    """The trust policy of the customer's role: only the platform principal may assume
    it, and only with this environment's external ID (IAM User Guide, "Access to AWS
    accounts owned by third parties" and "The confused deputy problem")."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": platform_principal_arn},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
            }
        ],
    }
    return json.dumps(policy, indent=2)


# The name the setup guide and ``customer_demo --role`` give the role's permissions policy.
ROLE_POLICY_NAME = "byok-portal-kms"


def role_cli_commands(*, role_arn: str, policy_name: str = ROLE_POLICY_NAME) -> list[str]:
    """The AWS CLI commands that create the role from ``trust-policy.json`` and attach
    ``permissions-policy.json`` (the two policies above, saved as files), one per line,
    shell-quoted. A half-typed role ARN gives a placeholder role name."""
    try:
        role = parse_role_arn(role_arn, kms_key_arn=None)
        name, path = role.name, role.path
    except InputError:
        name, path = "byok-portal-access", "/"
    create = ["aws", "iam", "create-role", "--role-name", name]
    if path != "/":
        create += ["--path", path]
    create += ["--assume-role-policy-document", "file://trust-policy.json"]
    attach = ["aws", "iam", "put-role-policy", "--role-name", name, "--policy-name", policy_name,
              "--policy-document", "file://permissions-policy.json"]
    return [" ".join(shlex.quote(w) for w in words) for words in (create, attach)]



@dataclass(frozen=True)
class RoleDrillCommands:
    """The AWS CLI commands of the revocation drill for a role-mode key version, each one
    line, shell-quoted, with the real values (role name, policy name, policies inline):

    * ``list_policies`` - the role's inline policies (the guide names its one ``byok-portal-kms``);
    * ``delete_policy`` / ``put_policy`` - revoke by deleting the permissions policy, restore
      by putting it back (the same policy the setup guide generates, for the key ARN and
      the encryption context the platform passes on Decrypt);
    * ``distrust`` / ``trust`` - revoke by a trust policy that denies the platform
      principal, restore the generated trust policy (platform principal, external ID).
    """

    role_name: str
    policy_name: str
    list_policies: str
    delete_policy: str
    put_policy: str
    distrust: str
    trust: str


def role_drill_commands(
    *, role_arn: str, kms_key_arn: str, encryption_context: dict[str, str] | None, platform_principal_arn: str,
    external_id: str, policy_name: str = ROLE_POLICY_NAME,
) -> RoleDrillCommands:
    """The drill's commands for the role ``role_arn`` (IAM is global: no ``--region``).

    IAM evaluates a role's permissions on every request, so deleting the permissions
    policy stops the next KMS call made with a session already issued; a trust-policy
    change only stops new AssumeRole calls (a session already issued keeps working until
    it expires, which is why the revocation bound adds the session lifetime).
    Without a ``platform_principal_arn`` (role mode switched off since) ``distrust`` and
    ``trust`` are empty: there is no principal to name.
    Raises :class:`InputError` for a role ARN that does not parse."""
    name = parse_role_arn(role_arn, kms_key_arn=None).name
    permissions = _compact(iam_policy_json(kms_key_arn=kms_key_arn, encryption_context=encryption_context or None))

    def line(*words: str) -> str:
        return " ".join(shlex.quote(w) for w in words)

    distrust = trust = ""
    if platform_principal_arn:
        deny = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Principal": {"AWS": platform_principal_arn}, "Action": "sts:AssumeRole"}]},
            separators=(",", ":"))
        allow = _compact(trust_policy_json(platform_principal_arn=platform_principal_arn, external_id=external_id))
        distrust = line("aws", "iam", "update-assume-role-policy", "--role-name", name, "--policy-document", deny)
        trust = line("aws", "iam", "update-assume-role-policy", "--role-name", name, "--policy-document", allow)

    return RoleDrillCommands(
        role_name=name,
        policy_name=policy_name,
        list_policies=line("aws", "iam", "list-role-policies", "--role-name", name),
        delete_policy=line("aws", "iam", "delete-role-policy", "--role-name", name, "--policy-name", policy_name),
        put_policy=line("aws", "iam", "put-role-policy", "--role-name", name, "--policy-name", policy_name,
                        "--policy-document", permissions),
        distrust=distrust,
        trust=trust,
    )


def _compact(policy_json: str) -> str:
    return json.dumps(json.loads(policy_json), separators=(",", ":"))


# --- IAM role ARN (role mode) ----------------------------------------------

EXAMPLE_ROLE_ARN = "arn:aws:iam::111122223333:role/byok-portal-access"
ROLE_ARN_MAX_LENGTH = 2048  # IAM's limit for a role ARN
# Role names: 1-64 of [\w+=,.@-]; paths: "/" or "/" + segments + "/", up to 512
# characters of ASCII 0x21-0x7E. IAM User Guide, "IAM identifiers" and
# CreateRole: https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateRole.html
_ROLE_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)
_ROLE_PATH = re.compile(r"/(?:[\x21-\x2e\x30-\x7e]+/)*")
_ROLE_PATH_MAX_LENGTH = 512


def parse_role_arn(value: str, *, kms_key_arn: KmsKeyArn | None) -> RoleArn:
    """Parse an IAM role ARN, ``arn:<partition>:iam::<account>:role/<path/><name>``.

    Rules and sources ("IAM identifiers", IAM User Guide; CreateRole):

    * Partitions ``aws``, ``aws-cn``, ``aws-us-gov``; service ``iam``; no region
      (IAM is global, so the fourth part is empty); account 12 digits.
    * Resource ``role/`` then an optional path (``/division/team/``) and the
      role name (1-64 of letters, digits and ``+=,.@_-``).
    * Refused with a pointer to the right thing: an IAM user ARN (that is
      the access-key way), an assumed-role ARN (``arn:aws:sts::…:assumed-role/…``,
      a session of a role, not the role), any other ARN.
    * The partition must be the KMS key's: a role in one partition cannot be
      used for a key in another.

    Raises InputError with a message telling the admin what to correct.
    """
    field = "role ARN"
    value = _clean(value, field=field, max_length=ROLE_ARN_MAX_LENGTH)
    if not value:
        raise InputError(f"Enter the role ARN, for example {EXAMPLE_ROLE_ARN}.")
    if value[:4].lower() != "arn:":
        raise InputError(_not_a_role_arn_message(value))
    parts = value.split(":", 5)
    if len(parts) != 6:
        raise InputError(
            f"This ARN is incomplete: a role ARN has six parts separated by colons, like {EXAMPLE_ROLE_ARN}. "
            "Copy the whole role ARN again."
        )
    prefix, partition, service, region, account_id, resource = parts
    if prefix != "arn" or any(part != part.lower() for part in (partition, service)):
        raise InputError(f"Write the ARN in lower case up to the account ID, exactly as IAM shows it: {EXAMPLE_ROLE_ARN}.")
    _check_role_partition(partition)
    _check_role_service(service, resource, account_id)
    if region:
        raise InputError(
            "An IAM role ARN has no region: the part between iam: and the account ID is empty "
            f"(arn:{partition}:iam::ACCOUNT:role/NAME). Copy the role ARN again from the IAM console."
        )
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise InputError(
            "The account ID in the role ARN must be 12 digits, like 111122223333; "
            f"it has {len(account_id)} characters. Copy the role ARN again."
        )
    path, name = _role_path_and_name(resource)
    if kms_key_arn is not None and kms_key_arn.partition != partition:
        raise InputError(
            f"The role is in the {partition} partition but the KMS key is in {kms_key_arn.partition}: "
            f"the role must be in the key's partition (its ARN starts with arn:{kms_key_arn.partition}:iam::)."
        )
    return RoleArn(arn=value, partition=partition, account_id=account_id, path=path, name=name)


def _not_a_role_arn_message(value: str) -> str:
    if _ROLE_NAME.fullmatch(value):
        return (
            "This looks like a role name; the portal needs the full role ARN "
            f"(arn:aws:iam::<account>:role/<name>). Find it with: aws iam get-role --role-name {value} "
            "--query Role.Arn --output text"
        )
    return f"This is not an ARN. Enter the role ARN, which looks like {EXAMPLE_ROLE_ARN}."


def _check_role_partition(partition: str) -> None:
    if partition in SUPPORTED_PARTITIONS:
        return
    named = f"the {partition} partition" if partition in _known_partitions() else "this partition"
    raise InputError(
        f"The portal does not support {named}: the role ARN must start with arn:aws:iam::, "
        "arn:aws-cn:iam:: (AWS China) or arn:aws-us-gov:iam:: (AWS GovCloud)."
    )


def _check_role_service(service: str, resource: str, account_id: str) -> None:
    if service == "iam":
        if resource.startswith("role/"):
            return
        if resource.startswith("user/"):
            raise InputError(
                "This is an IAM user ARN. In role mode the platform assumes a role in your account; "
                "enter the ARN of that role (arn:aws:iam::ACCOUNT:role/NAME), or choose "
                '"IAM user access key" to give the platform an access key of this user instead.',
                code=USER_ARN,
            )
        what = next((text for start, text in _IAM_RESOURCES.items() if resource.startswith(start)), "an IAM ARN")
        raise InputError(f"This is {what}; the portal needs a role ARN like {EXAMPLE_ROLE_ARN}.")
    if service == "sts" and resource.startswith("assumed-role/"):
        role_name = resource.split("/")[1] if resource.count("/") >= 1 else "NAME"
        hint = role_name if _ROLE_NAME.fullmatch(role_name) else "NAME"
        raise InputError(
            "This is an assumed-role ARN: it names one session of a role, not the role. Enter the role's "
            f"own ARN, arn:<partition>:iam::{account_id if _ACCOUNT_ID.fullmatch(account_id) else 'ACCOUNT'}"
            f":role/<path/>{hint} (aws iam get-role --role-name {hint} --query Role.Arn --output text)."
        )
    if service == "kms":
        raise InputError(
            "This is a KMS ARN; enter it as the KMS key ARN. The role ARN is the IAM role the platform "
            f"assumes, like {EXAMPLE_ROLE_ARN}."
        )
    raise InputError(f"This is not an IAM role ARN; the portal needs one like {EXAMPLE_ROLE_ARN}.")


def _role_path_and_name(resource: str) -> tuple[str, str]:
    rest = resource[len("role/"):]
    path, _slash, name = ("/" + rest).rpartition("/")
    path += "/"
    if not _ROLE_NAME.fullmatch(name):
        raise InputError(
            "The role name (after role/ and any path) must be 1 to 64 letters, digits or +=,.@_- "
            "characters. Copy the role ARN again from the IAM console."
        )
    if len(path) > _ROLE_PATH_MAX_LENGTH or not _ROLE_PATH.fullmatch(path):
        raise InputError(
            "The path of the role (between role/ and its name) is not a valid IAM path like "
            "/division/team/. Copy the role ARN again."
        )
    return path, name
