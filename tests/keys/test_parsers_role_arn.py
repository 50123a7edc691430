"""The role ARN grammar of role mode (issue 14): keys.parsers.parse_role_arn."""

from __future__ import annotations

import pytest

from keys.parsers import InputError, parse_kms_key_arn, parse_role_arn

KEY_AWS = parse_kms_key_arn("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
KEY_CN = parse_kms_key_arn("arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
KEY_GOV = parse_kms_key_arn("arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")


@pytest.mark.parametrize(
    ("value", "key", "partition", "path", "name"),
    [
        ("arn:aws:iam::111122223333:role/byok-portal", KEY_AWS, "aws", "/", "byok-portal"),
        ("  arn:aws:iam::111122223333:role/byok-portal\n", KEY_AWS, "aws", "/", "byok-portal"),
        ("arn:aws:iam::111122223333:role/service/byok/portal+ops=1,a.b@c_d", KEY_AWS, "aws", "/service/byok/",
         "portal+ops=1,a.b@c_d"),
        ("arn:aws-cn:iam::111122223333:role/byok", KEY_CN, "aws-cn", "/", "byok"),
        ("arn:aws-us-gov:iam::111122223333:role/team/byok", KEY_GOV, "aws-us-gov", "/team/", "byok"),
        ("arn:aws:iam::111122223333:role/" + "r" * 64, None, "aws", "/", "r" * 64),
    ],
)
def test_it_accepts_role_arns_of_each_partition_with_paths(value, key, partition, path, name) -> None:
    role = parse_role_arn(value, kms_key_arn=key)

    assert (role.arn, role.partition, role.account_id, role.path, role.name) == (
        value.strip(), partition, "111122223333", path, name
    )


@pytest.mark.parametrize(
    ("value", "key", "message"),
    [
        ("", None, "Enter the role ARN"),
        ("byok-portal", None, "looks like a role name"),
        ("not an arn", None, "contains a space"),
        ("arn:aws:iam::111122223333:user/byok", None, "This is an IAM user ARN"),
        ("arn:aws:sts::111122223333:assumed-role/byok-portal/portal-env-1", None, "assumed-role ARN"),
        ("arn:aws:iam::111122223333:root", None, "root user"),
        ("arn:aws:iam::111122223333:policy/byok", None, "IAM policy ARN"),
        ("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", None, "This is a KMS ARN"),
        ("arn:aws:s3:::bucket", None, "not an IAM role ARN"),
        ("arn:aws:iam::111122223333", None, "incomplete"),
        ("arn:aws-iso:iam::111122223333:role/byok", None, "does not support the aws-iso partition"),
        ("arn:AWS:iam::111122223333:role/byok", None, "lower case"),
        ("arn:aws:iam:eu-west-1:111122223333:role/byok", None, "has no region"),
        ("arn:aws:iam::11112222333:role/byok", None, "12 digits"),
        ("arn:aws:iam::111122223333:role/", None, "role name"),
        ("arn:aws:iam::111122223333:role/" + "r" * 65, None, "role name"),
        ("arn:aws:iam::111122223333:role/a//byok", None, "path"),
        ("arn:aws:iam::111122223333:role/byok\u200b", None, "U+200B"),
        ("arn:aws-cn:iam::111122223333:role/byok", KEY_AWS, "the role must be in the key's partition"),
        ("arn:aws:iam::111122223333:role/byok", KEY_GOV, "arn:aws-us-gov:iam::"),
    ],
)
def test_it_refuses_what_is_not_a_role_arn_of_the_keys_partition(value, key, message) -> None:
    with pytest.raises(InputError) as raised:
        parse_role_arn(value, kms_key_arn=key)

    assert message in raised.value.message
