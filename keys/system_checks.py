"""System checks for key-related settings (``manage.py check``)."""

import re

from django.conf import settings
from django.core.checks import Error, Tags, register

from keys import sts


@register(Tags.security)
def check_sealing_keys(app_configs=None, **kwargs) -> list[Error]:
    """keys.E001: SEALING_KEYS must parse; keys.E002: key ids must be unique."""
    from keys.crypto import parse_sealing_keys

    try:
        keys = parse_sealing_keys(settings.SEALING_KEYS)
    except ValueError as e:
        return [Error(f"SEALING_KEYS is invalid: {e}", id="keys.E001")]
    if not keys:
        return [Error("SEALING_KEYS is empty: at least one sealing key is needed.", id="keys.E001")]
    ids = [k.key_id for k in keys]
    if len(set(ids)) != len(ids):
        return [Error("SEALING_KEYS names the same key id twice.", id="keys.E002")]
    return []


@register()
def check_cache_ttl(app_configs=None, **kwargs) -> list[Error]:
    """keys.E003: the data-key cache TTL must be positive."""
    if settings.DATA_KEY_CACHE_TTL_SECONDS <= 0:
        return [Error("DATA_KEY_CACHE_TTL_SECONDS must be a positive number of seconds.", id="keys.E003")]
    return []


_PRINCIPAL_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:iam::[0-9]{12}:(?:role|user)/[\w+=,.@/-]{1,512}", re.ASCII)


@register()
def check_role_mode(app_configs=None, **kwargs) -> list[Error]:
    """keys.E004: role mode is on (PLATFORM_AWS_PRINCIPAL_ARN set) but the platform has no AWS
    credentials; keys.E005: the principal ARN is not an IAM role or user ARN; keys.E006: the
    session duration is out of STS's range."""
    principal = settings.PLATFORM_AWS_PRINCIPAL_ARN
    if not principal:
        return []
    errors = []
    if not _PRINCIPAL_ARN.fullmatch(principal):
        errors.append(Error(
            "PLATFORM_AWS_PRINCIPAL_ARN must be the ARN of the platform's IAM role or user, like "
            "arn:aws:iam::111122223333:role/byok-platform (customers' trust policies name it).",
            id="keys.E005",
        ))
    if not 900 <= settings.STS_SESSION_DURATION_SECONDS <= 43200:
        errors.append(Error("STS_SESSION_DURATION_SECONDS must be between 900 and 43200.", id="keys.E006"))
    if not sts.platform_credentials_found():
        errors.append(Error(
            "Role mode is enabled (PLATFORM_AWS_PRINCIPAL_ARN is set) but no AWS credentials were found for "
            "the platform itself, so it cannot call sts:AssumeRole.",
            hint="Give the platform the credentials of that principal through the standard AWS credential "
            "chain: an ECS task role or EC2 instance profile in production, or AWS_ACCESS_KEY_ID + "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment. Never in the database. Or unset "
            "PLATFORM_AWS_PRINCIPAL_ARN to turn role mode off.",
            id="keys.E004",
        ))
    return errors
