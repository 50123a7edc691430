"""Registration input checks that need no AWS call (keys/parsers.py)."""

from __future__ import annotations

import base64
import json
import random
import shlex
import string
from collections.abc import Callable
from functools import partial

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from keys.parsers import (
    ENCRYPTED_DATA_KEY_MAX_BYTES,
    ENCRYPTED_DATA_KEY_MIN_BYTES,
    InputError,
    KmsKeyArn,
    available_regions,
    cli_command,
    iam_policy_json,
    parse_access_key_id,
    parse_encrypted_data_key,
    parse_encryption_context,
    parse_kms_key_arn,
    parse_region,
    parse_secret_access_key,
)

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
MRK_ID = "mrk-1234abcd12ab34cd56ef1234567890ab"
ARN = f"arn:aws:kms:us-east-1:111122223333:key/{KEY_ID}"
ARN_EU = f"arn:aws:kms:eu-west-1:111122223333:key/{KEY_ID}"
ARN_CN = f"arn:aws-cn:kms:cn-north-1:111122223333:key/{KEY_ID}"
ARN_GOV = f"arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/{KEY_ID}"
ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

# Shaped like the emulator's blob: key ID in ASCII, then 60 binary bytes.
MOTO_LIKE_BLOB = KEY_ID.encode() + random.Random(1).randbytes(60)
# Shaped like AWS KMS's: opaque, 184 bytes (its format is not documented).
AWS_LIKE_BLOB = bytes([1, 2, 2, 0, 0x78]) + random.Random(2).randbytes(179)
AWS_LIKE_B64 = base64.b64encode(AWS_LIKE_BLOB).decode()
PLAINTEXT_B64 = base64.b64encode(random.Random(3).randbytes(32)).decode()

# A secret-shaped value (40 characters of A-Z a-z 0-9 / +) that must never show up in a message.
CANARY = "Zq7vXw3Kp9Lm2Rt8Yb4Nc6Hd1Jf5Gs0Ae/Uo+Ii"

EU_KEY = parse_kms_key_arn(ARN_EU)
region_without_arn = partial(parse_region, kms_key_arn=None)
region_with_eu_arn = partial(parse_region, kms_key_arn=EU_KEY)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _name(parser: Callable[..., object]) -> str:
    return getattr(parser, "__name__", None) or parser.func.__name__


def refusal(parser: Callable[[str], object], value: str) -> InputError:
    with pytest.raises(InputError) as caught:
        parser(value)
    return caught.value


BAD_INPUTS = [
    # KMS key ARN: emptiness and length
    (parse_kms_key_arn, "", "Enter the KMS key ARN, for example arn:aws:kms:"),
    (parse_kms_key_arn, " \t\r\n ", "Enter the KMS key ARN"),
    (parse_kms_key_arn, ARN + "0" * 300, "the limit is 256"),
    # ... another service's ARN, aliases, bare IDs
    (parse_kms_key_arn, "arn:aws:iam::111122223333:user/byok", "This is an IAM user ARN; the portal needs a KMS key ARN like arn:aws:kms:us-east-1:111122223333:key/1234abcd-"),
    (parse_kms_key_arn, "arn:aws:iam::111122223333:role/byok", "This is an IAM role ARN"),
    (parse_kms_key_arn, "arn:aws:iam::111122223333:policy/byok", "This is an IAM policy ARN"),
    (parse_kms_key_arn, "arn:aws:s3:::my-bucket", "This is an S3 ARN; the portal needs a KMS key ARN"),
    (parse_kms_key_arn, "arn:aws:secretsmanager:us-east-1:111122223333:secret:x", "Secrets Manager ARN"),
    (parse_kms_key_arn, "arn:aws:cloudwatch:us-east-1:111122223333:alarm:x", "ARN of the AWS service cloudwatch"),
    (parse_kms_key_arn, "arn:aws:kms:us-east-1:111122223333:alias/byok", "An alias can be moved to another key"),
    (parse_kms_key_arn, "arn:aws:kms:us-east-1:111122223333:alias/byok", "aws kms describe-key --key-id alias/"),
    (parse_kms_key_arn, "alias/byok", "This is an alias name"),
    (parse_kms_key_arn, KEY_ID, "This is a key ID; the portal needs the full key ARN"),
    (parse_kms_key_arn, MRK_ID, f"describe-key --key-id {MRK_ID}"),
    (parse_kms_key_arn, "my-key", "This is not an ARN"),
    (parse_kms_key_arn, "arn:aws:kms:us-east-1", "This ARN is incomplete"),
    (parse_kms_key_arn, ARN.upper(), "in lower case"),
    # ... partition and region
    (parse_kms_key_arn, ARN.replace("arn:aws:", "arn:aws-iso:"), "does not support the aws-iso partition"),
    (parse_kms_key_arn, ARN.replace("arn:aws:", "arn:azure:"), "does not support this partition"),
    (parse_kms_key_arn, ARN.replace("us-east-1", "cn-north-1"), "start with arn:aws-cn:kms:, not arn:aws:kms:"),
    (parse_kms_key_arn, ARN_CN.replace("cn-north-1", "us-east-1"), "Region us-east-1 is in the aws partition"),
    (parse_kms_key_arn, ARN_GOV.replace("us-gov-west-1", "eu-west-1"), "start with arn:aws:kms:, not arn:aws-us-gov:kms:"),
    (parse_kms_key_arn, ARN.replace("us-east-1", "us-gov-west-1"), "start with arn:aws-us-gov:kms:"),
    (parse_kms_key_arn, ARN.replace("us-east-1", "us-east-9"), "us-east-9, which is not a region where AWS KMS is available"),
    (parse_kms_key_arn, ARN.replace("us-east-1", ""), "The key ARN has no region"),
    (parse_kms_key_arn, ARN.replace("us-east-1", "useast1"), "not a region code like us-east-1"),
    # ... account and key ID
    (parse_kms_key_arn, ARN.replace("111122223333", "11112222333"), "must be 12 digits, like 111122223333; it has 11"),
    (parse_kms_key_arn, ARN.replace("111122223333", "11112222333x"), "must be 12 digits"),
    (parse_kms_key_arn, ARN.replace("111122223333", ""), "must be 12 digits"),
    (parse_kms_key_arn, ARN.replace("key/", "keys/"), "A KMS key ARN ends with key/ and the key ID"),
    (parse_kms_key_arn, ARN.replace(KEY_ID, ""), "ends without a key ID after key/"),
    (parse_kms_key_arn, ARN.replace(KEY_ID, KEY_ID.upper()), f"KMS key IDs are lower case: write key/{KEY_ID}"),
    (parse_kms_key_arn, ARN.replace(KEY_ID, MRK_ID.upper()), f"write key/{MRK_ID}"),
    (parse_kms_key_arn, ARN.replace(KEY_ID, "not-a-key"), "must be a UUID like 1234abcd-"),
    (parse_kms_key_arn, ARN.replace(KEY_ID, MRK_ID[:-1]), "mrk- and 32 hexadecimal digits"),
    # ... characters: look-alikes, invisible and control characters, inner blanks
    (parse_kms_key_arn, ARN.replace("kms", "km\u0455"), "U+0455 (CYRILLIC SMALL LETTER DZE) at character 11"),
    (parse_kms_key_arn, ARN.replace("arn:aws", "arn:\u0430ws"), "U+0430 (CYRILLIC SMALL LETTER A) at character 5"),
    (parse_kms_key_arn, ARN.replace("111122223333", "11112222333\uff13"), "U+FF13 (FULLWIDTH DIGIT THREE)"),
    (parse_kms_key_arn, ARN.replace("key/", "key/\u200b"), "U+200B (ZERO WIDTH SPACE) at character 40"),
    (parse_kms_key_arn, "\ufeff" + ARN, "U+FEFF (ZERO WIDTH NO-BREAK SPACE) at character 1"),
    (parse_kms_key_arn, ARN + "\u00a0", "U+00A0 (NO-BREAK SPACE)"),
    (parse_kms_key_arn, ARN + "\x00", "the control character U+0000 (NUL)"),
    (parse_kms_key_arn, ARN.replace("key/", "key/\x1b"), "U+001B (ESC)"),
    (parse_kms_key_arn, ARN.replace(":key/", ": key/"), "contains a space (U+0020) at character 36"),
    (parse_kms_key_arn, ARN.replace(":key/", ":\nkey/"), "contains a line break (U+000A)"),
    # Region
    (region_without_arn, "", "Enter the region code: enter a region code such as us-east-1."),
    (region_with_eu_arn, "  ", "Enter the region code (the key ARN names eu-west-1): enter eu-west-1."),
    (region_without_arn, "us-east-1a", "That is an Availability Zone; the region is us-east-1."),
    (region_without_arn, "US-EAST-1", "Region codes are lower case: enter us-east-1."),
    (region_with_eu_arn, "us-east-1", "The key ARN names region eu-west-1; enter eu-west-1."),
    (region_with_eu_arn, "cn-north-1", "The key ARN names region eu-west-1; enter eu-west-1."),
    (region_without_arn, "us-west-2-lax-1a", "Local Zone or Wavelength Zone; the region is us-west-2"),
    (region_without_arn, "use1-az1", "That is an Availability Zone ID, not a region"),
    (region_without_arn, "US East (N. Virginia)", "its code is us-east-1. Enter us-east-1."),
    (region_without_arn, "us-east-9", "us-east-9 is not a region where AWS KMS is available"),
    (region_with_eu_arn, "us-east-9", "enter eu-west-1"),
    (region_without_arn, "us-iso-east-1", "aws-iso partition, which the portal does not support"),
    (region_without_arn, "Frankfurt", "This is not a region code"),
    (region_without_arn, "us-east-1" * 10, "the limit is 64"),
    (region_without_arn, "us-\u0435ast-1", "U+0435 (CYRILLIC SMALL LETTER IE) at character 4"),
    (region_without_arn, "eu west 1", "contains a space (U+0020) at character 3"),
    (region_without_arn, "us-east-1\x00", "U+0000 (NUL)"),
    # Encrypted data key
    (parse_encrypted_data_key, "", "Paste the encrypted data key: the CiphertextBlob value"),
    (parse_encrypted_data_key, "fileb://blob.bin", "This is a file path"),
    (parse_encrypted_data_key, AWS_LIKE_BLOB.hex(), "looks like hexadecimal, not base64"),
    (parse_encrypted_data_key, "0x" + AWS_LIKE_BLOB.hex(), "looks like hexadecimal"),
    (parse_encrypted_data_key, base64.urlsafe_b64encode(b"\xfb\xff" * 60).decode(), "URL-safe base64 alphabet (- and _)"),
    (parse_encrypted_data_key, b64(AWS_LIKE_BLOB[:-2]).rstrip("="), "missing its = padding"),
    (parse_encrypted_data_key, b64(AWS_LIKE_B64.encode()), "looks base64-encoded twice"),
    (parse_encrypted_data_key, b64(b64(MOTO_LIKE_BLOB).encode() + b"\n"), "the AWS CLI already prints CiphertextBlob in base64"),
    (parse_encrypted_data_key, json.dumps({"CiphertextBlob": AWS_LIKE_B64, "Plaintext": PLAINTEXT_B64, "KeyId": ARN}), "exposes the plaintext data key"),
    (parse_encrypted_data_key, json.dumps({"CiphertextBlob": AWS_LIKE_B64, "Plaintext": PLAINTEXT_B64}), "run aws kms generate-data-key-without-plaintext instead"),
    (parse_encrypted_data_key, f"{AWS_LIKE_B64}\t{ARN}\t{PLAINTEXT_B64}", "exposes the plaintext data key"),
    (parse_encrypted_data_key, PLAINTEXT_B64, "32 bytes, the size of a plaintext data key"),
    (parse_encrypted_data_key, json.dumps({"KeyId": ARN}), "This JSON has no CiphertextBlob field"),
    (parse_encrypted_data_key, json.dumps({"KeyMetadata": {"Arn": ARN}}), "This is the output of describe-key"),
    (parse_encrypted_data_key, json.dumps({"CiphertextBlob": 12}), "CiphertextBlob in this JSON is not text"),
    (parse_encrypted_data_key, '{"CiphertextBlob": "' + AWS_LIKE_B64, "looks like JSON but cannot be read (line 1, column 20: Unterminated string"),
    (parse_encrypted_data_key, '{"CiphertextBlob": "a", "CiphertextBlob": "b"}', "names the same key twice"),
    (parse_encrypted_data_key, '{"a": ' + "[" * 5000, "looks like JSON but cannot be read"),
    (parse_encrypted_data_key, f"{AWS_LIKE_B64}\t{ARN}\tabcdef0123", "a line of --output text"),
    (parse_encrypted_data_key, f"CiphertextBlob: {AWS_LIKE_B64}", "Paste only the CiphertextBlob value"),
    (parse_encrypted_data_key, b64(bytes([0x80]) * 40), "decodes to 40 bytes; a KMS ciphertext blob of a 256-bit data key is 64 to 1024 bytes"),
    (parse_encrypted_data_key, b64(bytes([0x80]) * 2001), "decodes to 2001 bytes"),
    (parse_encrypted_data_key, "A" * 9000, "the limit is 8,192"),
    (parse_encrypted_data_key, AWS_LIKE_B64[:8] + "=" + AWS_LIKE_B64[8:], "Character 9 of the encrypted data key ('=')"),
    (parse_encrypted_data_key, AWS_LIKE_B64[:4] + "." + AWS_LIKE_B64[4:], "Character 5 of the encrypted data key ('.')"),
    (parse_encrypted_data_key, "[" + AWS_LIKE_B64 + "]", "Character 1 of the encrypted data key ('[')"),
    (parse_encrypted_data_key, AWS_LIKE_B64[:10] + "\x00" + AWS_LIKE_B64[10:], "U+0000 (NUL) at character 11"),
    (parse_encrypted_data_key, AWS_LIKE_B64[:10] + "\u200b" + AWS_LIKE_B64[10:], "U+200B (ZERO WIDTH SPACE) at character 11"),
    (parse_encrypted_data_key, json.dumps({"CiphertextBlob": "AQID\u0430"}), "The CiphertextBlob contains U+0430"),
    # Access key ID
    (parse_access_key_id, "", "Enter the access key ID of the IAM user"),
    (parse_access_key_id, "ASIAIOSFODNN7EXAMPLE", "temporary STS credentials, which expire"),
    (parse_access_key_id, "ASIAIOSFODNN7EXAMPLE", "long-term access key of an IAM user (starting with AKIA)"),
    (parse_access_key_id, "AIDAIOSFODNN7EXAMPLE", "This is an IAM user ID (it starts with AIDA), not an access key ID"),
    (parse_access_key_id, "AROAIOSFODNN7EXAMPLE", "This is an IAM role ID"),
    (parse_access_key_id, "XKIAIOSFODNN7EXAMPLE", "An access key ID starts with AKIA"),
    (parse_access_key_id, ACCESS_KEY_ID.lower(), "capital letters and digits only"),
    (parse_access_key_id, ACCESS_KEY_ID[:-1], "this one has 19"),
    (parse_access_key_id, SECRET_ACCESS_KEY, "looks like a secret access key (40 characters), not an access key ID"),
    (parse_access_key_id, "AKIA IOSFODNN7EXAMPLE", "contains a space (U+0020) at character 5"),
    (parse_access_key_id, "\u0410KIAIOSFODNN7EXAMPLE", "U+0410 (CYRILLIC CAPITAL LETTER A) at character 1"),
    (parse_access_key_id, "AKIAIOSFODNN\uff17EXAMPLE", "U+FF17 (FULLWIDTH DIGIT SEVEN)"),
    (parse_access_key_id, "AKIA" + "A" * 200, "the limit is 128"),
    (parse_access_key_id, "AKIAIOSFODNN7EXAMPL/", "Character 20 of the access key ID is not allowed"),
    # Secret access key
    (parse_secret_access_key, "", "Enter the secret access key"),
    (parse_secret_access_key, ACCESS_KEY_ID, "This is an access key ID, not the secret access key"),
    (parse_secret_access_key, SECRET_ACCESS_KEY[:-1], "exactly 40 characters; this value has 39"),
    (parse_secret_access_key, SECRET_ACCESS_KEY[:-1] + "-", "Character 40 of the secret access key is not allowed"),
    (parse_secret_access_key, SECRET_ACCESS_KEY[:5] + "\u200b" + SECRET_ACCESS_KEY[5:], "U+200B (ZERO WIDTH SPACE) at character 6"),
    (parse_secret_access_key, SECRET_ACCESS_KEY + "\x00", "U+0000 (NUL) at character 41"),
    (parse_secret_access_key, SECRET_ACCESS_KEY * 10, "the limit is 128"),
    (parse_secret_access_key, SECRET_ACCESS_KEY[:20] + " " + SECRET_ACCESS_KEY[20:], "contains a space (U+0020) at character 21"),
    # Encryption context
    (parse_encryption_context, '{"app": 1}', "The value of pair 1 of the encryption context is not a string"),
    (parse_encryption_context, '{"app": "billing", "team": {"a": "b"}}', "pair 2 of the encryption context is not a string"),
    (parse_encryption_context, '{"": "billing"}', "Pair 1 of the encryption context has an empty key"),
    (parse_encryption_context, "app=billing,=x", "Pair 2 of the encryption context has an empty key"),
    (parse_encryption_context, '{"app": "a", "app": "b"}', "names the same key twice"),
    (parse_encryption_context, "app=a,app=b", "Pair 2 of the encryption context repeats an earlier key"),
    (parse_encryption_context, json.dumps({"k": "v" * 9000}), "KMS allows at most 8,192"),
    (parse_encryption_context, "app", "Pair 1 of the encryption context has no ="),
    (parse_encryption_context, "app=a, team=b", "has a space, quote, backslash or bracket"),
    (parse_encryption_context, 'app="a b"', "has a space, quote, backslash or bracket"),
    (parse_encryption_context, '{"app": "\\u0430"}', "The value of pair 1 of the encryption context contains U+0430"),
    (parse_encryption_context, '{"app": "a\\u0000"}', "U+0000 (NUL) at character 2"),
    (parse_encryption_context, '{"app": "billing"', "looks like JSON but cannot be read"),
    (parse_encryption_context, "k=" + "v" * 20000, "the limit is 16,384"),
    (parse_encryption_context, "app=b\u0456lling", "U+0456 (CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I)"),
]


@pytest.mark.parametrize(
    ("parser", "value", "fragment"),
    [pytest.param(*case, id=f"{i}-{_name(case[0])}") for i, case in enumerate(BAD_INPUTS)],
)
def test_it_refuses_bad_input_with_a_message_that_says_what_to_do(parser, value, fragment):
    error = refusal(parser, value)
    assert fragment in error.message
    assert str(error) == error.message


def test_the_table_of_bad_inputs_covers_every_parser_with_at_least_fifty_cases():
    assert len(BAD_INPUTS) >= 50
    parsers = {_name(case[0]) for case in BAD_INPUTS}
    assert parsers == {
        "parse_kms_key_arn",
        "parse_region",
        "parse_encrypted_data_key",
        "parse_access_key_id",
        "parse_secret_access_key",
        "parse_encryption_context",
    }


# --- Accepted forms ----------------------------------------------------------


def test_it_parses_a_key_arn_into_its_parts():
    assert parse_kms_key_arn(ARN) == KmsKeyArn(
        arn=ARN,
        partition="aws",
        region="us-east-1",
        account_id="111122223333",
        key_id=KEY_ID,
        multi_region=False,
    )


def test_it_marks_mrk_keys_as_multi_region():
    parsed = parse_kms_key_arn(ARN.replace(KEY_ID, MRK_ID))
    assert parsed.key_id == MRK_ID
    assert parsed.multi_region is True


def test_it_accepts_the_dashed_mrk_key_ids_that_moto_creates():
    parsed = parse_kms_key_arn(ARN.replace(KEY_ID, f"mrk-{KEY_ID}"))
    assert parsed.multi_region is True


@pytest.mark.parametrize(
    ("arn", "partition", "region"),
    [
        (ARN_CN, "aws-cn", "cn-north-1"),
        (ARN_GOV, "aws-us-gov", "us-gov-west-1"),
        (ARN_EU, "aws", "eu-west-1"),
    ],
)
def test_it_accepts_key_arns_of_every_supported_partition(arn, partition, region):
    parsed = parse_kms_key_arn(arn)
    assert (parsed.partition, parsed.region) == (partition, region)
    assert parse_region(region, kms_key_arn=parsed) == region


@pytest.mark.parametrize(
    ("parser", "value", "expected"),
    [
        (parse_kms_key_arn, f"  {ARN}\n", parse_kms_key_arn(ARN)),
        (parse_kms_key_arn, f"\t{ARN}\r\n", parse_kms_key_arn(ARN)),
        (region_without_arn, " eu-west-1\n", "eu-west-1"),
        (region_with_eu_arn, "\teu-west-1 ", "eu-west-1"),
        (parse_access_key_id, f"  {ACCESS_KEY_ID}\n", ACCESS_KEY_ID),
        (parse_secret_access_key, f"\n{SECRET_ACCESS_KEY}  ", SECRET_ACCESS_KEY),
        (parse_encrypted_data_key, f"\n  {AWS_LIKE_B64}\n\n", AWS_LIKE_BLOB),
        (parse_encryption_context, "  app=billing \n", {"app": "billing"}),
    ],
)
def test_it_strips_surrounding_whitespace(parser, value, expected):
    assert parser(value) == expected


def test_it_accepts_any_supported_region_when_the_key_arn_did_not_parse():
    assert parse_region("cn-northwest-1", kms_key_arn=None) == "cn-northwest-1"
    assert parse_region("us-gov-east-1", kms_key_arn=None) == "us-gov-east-1"


@pytest.mark.parametrize(
    "text",
    [
        AWS_LIKE_B64,
        "\n".join(AWS_LIKE_B64[i : i + 64] for i in range(0, len(AWS_LIKE_B64), 64)),
        "\r\n".join(AWS_LIKE_B64[i : i + 76] for i in range(0, len(AWS_LIKE_B64), 76)),
        "    " + "\n    ".join(AWS_LIKE_B64[i : i + 50] for i in range(0, len(AWS_LIKE_B64), 50)),
        f'"{AWS_LIKE_B64}"',
        json.dumps({"CiphertextBlob": AWS_LIKE_B64, "KeyId": ARN}, indent=4),
        json.dumps(
            {"CiphertextBlob": AWS_LIKE_B64, "KeyId": ARN, "KeyMaterialId": "ab" * 32}, indent=4
        )
        + "\n",
        json.dumps({"CiphertextBlob": AWS_LIKE_B64, "KeyId": ARN}),
    ],
    ids=[
        "plain",
        "wrapped-lf",
        "wrapped-crlf",
        "indented",
        "quoted",
        "cli-json",
        "cli-json-key-material",
        "compact-json",
    ],
)
def test_it_accepts_the_ciphertext_blob_as_the_aws_cli_prints_it(text):
    assert parse_encrypted_data_key(text) == AWS_LIKE_BLOB


def test_it_accepts_a_moto_shaped_96_byte_blob():
    assert parse_encrypted_data_key(b64(MOTO_LIKE_BLOB)) == MOTO_LIKE_BLOB


def test_it_accepts_the_blob_moto_returns_from_generate_data_key_without_plaintext():
    moto = pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    with moto.mock_aws():
        kms = boto3.client("kms", region_name="eu-west-1")
        arn = kms.create_key()["KeyMetadata"]["Arn"]
        output = kms.generate_data_key_without_plaintext(KeyId=arn, KeySpec="AES_256")
    cli_json = json.dumps(
        {"CiphertextBlob": b64(output["CiphertextBlob"]), "KeyId": output["KeyId"]}, indent=4
    )
    assert parse_encrypted_data_key(cli_json) == output["CiphertextBlob"]
    assert parse_kms_key_arn(arn).region == "eu-west-1"


@pytest.mark.parametrize(
    ("size", "accepted"),
    [
        (ENCRYPTED_DATA_KEY_MIN_BYTES - 1, False),
        (ENCRYPTED_DATA_KEY_MIN_BYTES, True),
        (ENCRYPTED_DATA_KEY_MAX_BYTES, True),
        (ENCRYPTED_DATA_KEY_MAX_BYTES + 1, False),
    ],
)
def test_it_accepts_blobs_from_64_to_1024_bytes_only(size, accepted):
    blob = bytes([0x80]) * size  # not base64 text itself, so never read as double encoding
    if accepted:
        assert parse_encrypted_data_key(b64(blob)) == blob
    else:
        assert f"decodes to {size} bytes" in refusal(parse_encrypted_data_key, b64(blob)).message


def test_it_accepts_a_long_term_access_key_id_and_its_secret():
    assert parse_access_key_id(ACCESS_KEY_ID) == ACCESS_KEY_ID
    assert parse_secret_access_key(SECRET_ACCESS_KEY) == SECRET_ACCESS_KEY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        (" \n ", {}),
        ("{}", {}),
        ('{"app": "billing", "team": "risk"}', {"app": "billing", "team": "risk"}),
        (
            '{\n  "app": "billing and more, really",\n  "path": "a=b"\n}',
            {"app": "billing and more, really", "path": "a=b"},
        ),
        ("app=billing,team=risk", {"app": "billing", "team": "risk"}),
        ("arn=arn:aws:s3:::bucket/x,k=v=w", {"arn": "arn:aws:s3:::bucket/x", "k": "v=w"}),
        ("app=", {"app": ""}),
    ],
)
def test_it_accepts_an_encryption_context_as_json_or_shorthand(text, expected):
    assert parse_encryption_context(text) == expected


# --- Secrets never leak into messages ------------------------------------------


def _assert_no_canary(message: str) -> None:
    lowered = message.lower()
    windows = {CANARY[i : i + 8].lower() for i in range(len(CANARY) - 7)}
    assert not any(window in lowered for window in windows), message


CANARY_INPUTS = [
    (parse_kms_key_arn, CANARY),
    (parse_kms_key_arn, f"arn:aws:kms:us-east-1:111122223333:key/{CANARY}"),
    (parse_kms_key_arn, f"arn:aws:kms:us-east-1:111122223333:key/{CANARY.lower()}"),
    (parse_kms_key_arn, f"arn:aws:kms:us-east-1:111122223333:alias/{CANARY}"),
    (parse_kms_key_arn, f"alias/{CANARY}"),
    (parse_kms_key_arn, f"arn:aws:iam::111122223333:user/{CANARY}"),
    (parse_kms_key_arn, f"arn:{CANARY}:kms:us-east-1:111122223333:key/{KEY_ID}"),
    (parse_kms_key_arn, f"arn:aws:{CANARY.lower()}:us-east-1:1:x"),
    (parse_kms_key_arn, f"arn:aws:kms:{CANARY.lower()}:111122223333:key/{KEY_ID}"),
    (parse_kms_key_arn, f"arn:aws:kms:us-east-1:{CANARY}:key/{KEY_ID}"),
    (parse_kms_key_arn, CANARY + "\x00"),
    (parse_region, CANARY),
    (parse_region, CANARY.lower()),
    (parse_region, CANARY + "a"),
    (parse_region, f"{CANARY} x"),
    (parse_region, CANARY + "\u0430"),
    (parse_encrypted_data_key, CANARY),
    (parse_encrypted_data_key, CANARY * 3),
    (parse_encrypted_data_key, CANARY + "\x00"),
    (parse_encrypted_data_key, json.dumps({"CiphertextBlob": CANARY})),
    (parse_encrypted_data_key, json.dumps({"CiphertextBlob": AWS_LIKE_B64, "Plaintext": CANARY})),
    (parse_encrypted_data_key, json.dumps({CANARY: AWS_LIKE_B64})),
    (parse_encrypted_data_key, json.dumps({"KeyId": CANARY})),
    (parse_encrypted_data_key, '{"CiphertextBlob": "' + CANARY),
    (parse_encrypted_data_key, f"{AWS_LIKE_B64}\t{ARN}\t{CANARY}"),
    (parse_encrypted_data_key, f"CiphertextBlob: {CANARY}"),
    (parse_encrypted_data_key, f"fileb://{CANARY}"),
    (parse_access_key_id, CANARY),
    (parse_access_key_id, CANARY.upper()),
    (parse_access_key_id, "AKIA" + CANARY),
    (parse_access_key_id, "ASIA" + CANARY[:16]),
    (parse_access_key_id, CANARY + "\u200b"),
    (parse_access_key_id, CANARY[:20] + " " + CANARY[20:]),
    (parse_secret_access_key, CANARY[:39]),
    (parse_secret_access_key, CANARY + "-"),
    (parse_secret_access_key, CANARY[:20] + "-" + CANARY[21:]),
    (parse_secret_access_key, CANARY[:20] + "\u0430" + CANARY[21:]),
    (parse_secret_access_key, CANARY + "\x00"),
    (parse_secret_access_key, CANARY * 4),
    (parse_secret_access_key, CANARY[:20] + " " + CANARY[20:]),
    (parse_encryption_context, json.dumps({CANARY: 1})),
    (parse_encryption_context, json.dumps({"k": [CANARY]})),
    (parse_encryption_context, json.dumps({"k": CANARY + "\u0430"})),
    (parse_encryption_context, json.dumps({CANARY + "\u0430": "v"})),
    (parse_encryption_context, '{"' + CANARY + '": "a", "' + CANARY + '": "b"}'),
    (parse_encryption_context, CANARY),
    (parse_encryption_context, f"k={CANARY},k={CANARY}"),
    (parse_encryption_context, f"k={CANARY} x"),
    (parse_encryption_context, '{"k": "' + CANARY),
]


@pytest.mark.parametrize(("parser", "value"), CANARY_INPUTS)
def test_it_never_puts_a_secret_into_an_error_message(parser, value):
    if parser is parse_region:
        parser = region_with_eu_arn
    error = refusal(parser, value)
    _assert_no_canary(error.message)
    _assert_no_canary(str(error))
    _assert_no_canary(repr(error))


@pytest.mark.parametrize(
    "value",
    [
        '{"CiphertextBlob": "' + CANARY,
        '{"a": ' + "[" * 5000,
        json.dumps({"CiphertextBlob": AWS_LIKE_B64, "Plaintext": CANARY}),
        CANARY + "==",
    ],
)
def test_it_raises_errors_that_chain_no_exception_holding_the_input(value):
    error = refusal(parse_encrypted_data_key, value)
    assert error.__cause__ is None
    assert error.__context__ is None


def test_it_does_not_echo_the_plaintext_field_of_generate_data_key_output():
    pasted = json.dumps(
        {"CiphertextBlob": AWS_LIKE_B64, "KeyId": ARN, "Plaintext": PLAINTEXT_B64}, indent=4
    )
    message = refusal(parse_encrypted_data_key, pasted).message
    assert PLAINTEXT_B64 not in message
    assert PLAINTEXT_B64[:8] not in message
    assert "never paste a plaintext data key" in message.lower()


# --- What the registration page shows ---------------------------------------------


def test_it_builds_the_exact_cli_command_for_a_key_arn():
    assert cli_command(kms_key_arn=ARN, region="us-east-1", encryption_context=None) == (
        "aws kms generate-data-key-without-plaintext "
        f"--key-id {ARN} --key-spec AES_256 --region us-east-1 --output json"
    )


def test_it_adds_the_encryption_context_in_cli_shorthand():
    command = cli_command(
        kms_key_arn=ARN, region="us-east-1", encryption_context={"app": "billing", "team": "risk"}
    )
    assert command == (
        "aws kms generate-data-key-without-plaintext "
        f"--key-id {ARN} --key-spec AES_256 --encryption-context app=billing,team=risk "
        "--region us-east-1 --output json"
    )


def test_it_falls_back_to_quoted_json_for_an_encryption_context_shorthand_cannot_carry():
    command = cli_command(
        kms_key_arn=ARN, region="us-east-1", encryption_context={"app": "it's billing, mostly"}
    )
    assert command == (
        "aws kms generate-data-key-without-plaintext "
        f"--key-id {ARN} --key-spec AES_256 "
        """--encryption-context '{"app":"it'"'"'s billing, mostly"}' """
        "--region us-east-1 --output json"
    )


def test_it_leaves_out_an_empty_encryption_context():
    assert cli_command(kms_key_arn=ARN, region="us-east-1", encryption_context={}) == cli_command(
        kms_key_arn=ARN, region="us-east-1", encryption_context=None
    )


def test_it_takes_the_region_from_the_key_arn_when_none_is_given():
    assert cli_command(kms_key_arn=ARN_CN, region=None, encryption_context=None) == (
        "aws kms generate-data-key-without-plaintext "
        f"--key-id {ARN_CN} --key-spec AES_256 --region cn-north-1 --output json"
    )


def test_it_leaves_out_the_region_when_a_half_typed_arn_names_none():
    assert cli_command(kms_key_arn="arn:aws:kms:", region=None, encryption_context=None) == (
        "aws kms generate-data-key-without-plaintext "
        "--key-id arn:aws:kms: --key-spec AES_256 --output json"
    )


def test_it_shell_quotes_whatever_was_typed_into_the_arn_field():
    typed = f"{ARN}; rm -rf ~ $(id) `id`"
    command = cli_command(kms_key_arn=typed, region="us-east-1", encryption_context=None)
    assert f"--key-id '{typed}' " in command
    assert shlex.split(command)[4] == typed


def test_it_writes_the_least_privilege_iam_policy_exactly():
    assert iam_policy_json(kms_key_arn=ARN) == (
        "{\n"
        '  "Version": "2012-10-17",\n'
        '  "Statement": [\n'
        "    {\n"
        '      "Effect": "Allow",\n'
        '      "Action": [\n'
        '        "kms:Decrypt",\n'
        '        "kms:DescribeKey"\n'
        "      ],\n"
        f'      "Resource": "{ARN}"\n'
        "    }\n"
        "  ]\n"
        "}"
    )


def test_it_lists_kms_regions_of_the_three_supported_partitions_from_botocore():
    assert {"us-east-1", "eu-west-1"} <= available_regions("aws")
    assert available_regions("aws-cn") == frozenset({"cn-north-1", "cn-northwest-1"})
    assert available_regions("aws-us-gov") == frozenset({"us-gov-east-1", "us-gov-west-1"})
    assert not available_regions("aws") & available_regions("aws-cn")
    assert not available_regions("aws") & available_regions("aws-us-gov")
    assert available_regions("aws-iso") == frozenset()
    assert isinstance(available_regions("aws"), frozenset)


# --- Properties ---------------------------------------------------------------

TRICKY = st.sampled_from(
    list("arnawskmsiamkeyaliasmrk-:/=+,{}[]\"' \t\n\r0123456789abcdefAKIASCiphertextBlobPlaintext")
    + ["\x00", "\u0430", "\u200b", "\uff11", "\ufeff", "\u00a0", "\x1b", "\x85", "\u2028"]
    + ["\U0001f600"]
)
ANY_TEXT = st.one_of(
    st.text(),
    st.text(TRICKY),
    st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(
            [ARN, "arn:aws:kms:", "{", '{"CiphertextBlob": "', "AKIA", AWS_LIKE_B64, "us-east-1"]
        ),
        st.text(TRICKY),
    ),
)
PARSERS = [
    parse_kms_key_arn,
    region_without_arn,
    region_with_eu_arn,
    parse_encrypted_data_key,
    parse_access_key_id,
    parse_secret_access_key,
    parse_encryption_context,
]


@pytest.mark.parametrize("parser", PARSERS, ids=_name)
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=ANY_TEXT)
def test_it_raises_nothing_but_input_error_for_any_text(parser, value):
    try:
        parser(value)
    except InputError as error:
        assert error.message
        assert isinstance(error.message, str)


@given(
    partition=st.sampled_from(["aws", "aws-cn", "aws-us-gov"]),
    data=st.data(),
    account_id=st.text("0123456789", min_size=12, max_size=12),
    key_id=st.one_of(st.uuids().map(str), st.uuids().map(lambda u: "mrk-" + u.hex)),
)
def test_it_accepts_every_well_formed_key_arn(partition, data, account_id, key_id):
    region = data.draw(st.sampled_from(sorted(available_regions(partition))))
    arn = f"arn:{partition}:kms:{region}:{account_id}:key/{key_id}"
    parsed = parse_kms_key_arn(arn)
    multi_region = key_id.startswith("mrk-")
    assert parsed == KmsKeyArn(arn, partition, region, account_id, key_id, multi_region)
    assert parse_region(region, kms_key_arn=parsed) == region


@given(
    blob=st.binary(min_size=ENCRYPTED_DATA_KEY_MIN_BYTES, max_size=ENCRYPTED_DATA_KEY_MAX_BYTES),
    width=st.integers(1, 200),
)
def test_it_round_trips_any_plausible_blob_however_it_is_wrapped(blob, width):
    alphabet = set((string.ascii_letters + string.digits + "+/=\n\r\t\x0b\x0c ").encode())
    # A blob made only of base64 text reads as double encoding (see _looks_base64_encoded);
    # real ciphertext blobs are binary, so that never happens for them.
    assume(not set(blob) <= alphabet)
    text = b64(blob)
    wrapped = "\n".join(text[i : i + width] for i in range(0, len(text), width))
    assert parse_encrypted_data_key(wrapped) == blob


@given(secret=st.text(string.ascii_letters + string.digits + "/+", min_size=40, max_size=40))
def test_it_accepts_every_well_formed_secret_access_key(secret):
    assert parse_secret_access_key(secret) == secret


@given(suffix=st.text(string.ascii_uppercase + "234567", min_size=16, max_size=16))
def test_it_accepts_every_well_formed_access_key_id(suffix):
    assert parse_access_key_id("AKIA" + suffix) == "AKIA" + suffix


PRINTABLE_ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)


@given(context=st.dictionaries(PRINTABLE_ASCII.filter(bool), PRINTABLE_ASCII, max_size=5))
def test_it_reads_back_any_ascii_encryption_context_written_as_json(context):
    assert parse_encryption_context(json.dumps(context)) == context


@given(
    context=st.dictionaries(PRINTABLE_ASCII.filter(bool), PRINTABLE_ASCII, max_size=5),
    region=st.sampled_from([None, "eu-west-1"]),
)
def test_it_builds_a_command_the_shell_and_the_aws_cli_read_back_exactly(context, region):
    shorthand = pytest.importorskip("awscli.shorthand")
    command = cli_command(kms_key_arn=ARN_EU, region=region, encryption_context=context)
    argv = shlex.split(command)
    assert argv[:7] == [
        "aws",
        "kms",
        "generate-data-key-without-plaintext",
        "--key-id",
        ARN_EU,
        "--key-spec",
        "AES_256",
    ]
    assert argv[-4:] == ["--region", "eu-west-1", "--output", "json"]
    if context:
        assert argv[7] == "--encryption-context"
        argument = argv[8]
        if argument.startswith("{"):
            assert json.loads(argument) == context
        else:
            assert shorthand.ShorthandParser().parse(argument) == context
    else:
        assert len(argv) == 11


def test_it_counts_a_bad_base64_characters_position_as_typed_with_its_line_breaks_and_spaces():
    # The 10th base64 character is the 12th typed: a line break and a space come before it.
    typed = AWS_LIKE_B64[:4] + "\n" + AWS_LIKE_B64[4:8] + " " + AWS_LIKE_B64[8] + "." + AWS_LIKE_B64[9:]
    with pytest.raises(InputError) as refused:
        parse_encrypted_data_key(typed)
    assert "Character 12 of the encrypted data key ('.')" in str(refused.value)
